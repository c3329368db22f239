"""API key format, keyed hashing, verification, cache bound, rotation and provisioning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from lalo_common.errors import InvalidArgument, NotFound
from lalo_gateway.security.apikeys import (
    ApiKeyRecord,
    ApiKeyService,
    display_prefix,
    generate_key,
    hash_key,
)
from lalo_gateway.security.errors import AuthenticationFailed
from lalo_gateway.security.rbac import Role


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[str, ApiKeyRecord] = {}
        self.lookups = 0

    def insert(self, record: ApiKeyRecord) -> None:
        if any(r.key_hash == record.key_hash for r in self.rows.values()):
            raise RuntimeError("unique violation")
        self.rows[record.id] = record

    def by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        self.lookups += 1
        return next((r for r in self.rows.values() if r.key_hash == key_hash), None)

    def by_id(self, key_id: str) -> ApiKeyRecord | None:
        return self.rows.get(key_id)

    def list(
        self, *, owner: str | None, include_revoked: bool, limit: int, offset: int
    ) -> Sequence[ApiKeyRecord]:
        rows = [r for r in self.rows.values() if owner in (None, r.owner)]
        if not include_revoked:
            rows = [r for r in rows if r.revoked_at is None]
        return rows[offset : offset + limit]

    def revoke(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        row = self.rows.get(key_id)
        if row is None:
            return None
        self.rows[key_id] = replace(row, revoked_at=row.revoked_at or at)
        return self.rows[key_id]

    def replace_secret(
        self, key_id: str, prefix: str, key_hash: str, at: datetime
    ) -> ApiKeyRecord | None:
        row = self.rows.get(key_id)
        if row is None:
            return None
        self.rows[key_id] = replace(row, prefix=prefix, key_hash=key_hash, rotated_at=at)
        return self.rows[key_id]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(store: MemoryStore, clock: Clock) -> ApiKeyService:
    return ApiKeyService(store, "pepper-for-unit-tests", cache_ttl_s=0.5, clock=clock)


def test_generated_keys_have_the_documented_shape() -> None:
    key, prefix = generate_key()
    scheme, short, secret = key.split("-", 2)
    assert scheme == "lalo"
    assert len(short) == 8
    assert len(secret) >= 40  # 256 bits, base64url
    assert prefix == f"lalo-{short}"
    assert display_prefix(key) == prefix
    assert generate_key()[0] != key


def test_display_prefix_of_foreign_keys_shows_little() -> None:
    assert display_prefix("sk-some-static-key-12345") == "sk-som..."
    assert display_prefix("abc") == "..."


def test_hash_is_keyed() -> None:
    assert hash_key(b"a", "k") != hash_key(b"b", "k")
    assert hash_key(b"a", "k") == hash_key(b"a", "k")


def test_create_stores_only_the_hash(service: ApiKeyService, store: MemoryStore) -> None:
    new = service.create(owner="alice", role="developer", rpm=5, allowed_models=["tiny"])
    stored = store.rows[new.record.id]
    assert new.secret not in repr(stored)
    assert stored.key_hash == service.hash(new.secret)
    assert stored.prefix == display_prefix(new.secret)
    principal = service.authenticate(new.secret)
    assert principal.subject == "alice"
    assert principal.role is Role.DEVELOPER
    assert principal.rpm == 5
    assert principal.may_use_model("tiny")
    assert not principal.may_use_model("large")


@pytest.mark.parametrize("bad", ["", "lalo-xxxxxxxx-nope", "Bearer x"])
def test_unknown_keys_are_rejected(service: ApiKeyService, bad: str) -> None:
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        service.authenticate(bad)


def test_revocation_is_immediate_here_and_bounded_by_the_cache_elsewhere(
    store: MemoryStore, clock: Clock
) -> None:
    here = ApiKeyService(store, "pepper-for-unit-tests", cache_ttl_s=0.5, clock=clock)
    elsewhere = ApiKeyService(store, "pepper-for-unit-tests", cache_ttl_s=0.5, clock=clock)
    new = here.create(owner="bob")
    elsewhere.authenticate(new.secret)  # now cached on the other replica
    here.revoke(new.record.id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        here.authenticate(new.secret)
    elsewhere.authenticate(new.secret)  # still inside its cache window
    clock.now += 0.5
    with pytest.raises(AuthenticationFailed, match="revoked"):
        elsewhere.authenticate(new.secret)


def test_cache_spares_the_store(service: ApiKeyService, store: MemoryStore, clock: Clock) -> None:
    new = service.create(owner="carol")
    service.authenticate(new.secret)
    service.authenticate(new.secret)
    assert store.lookups == 1
    assert service.cached(new.secret) is not None
    clock.now += 1
    assert service.cached(new.secret) is None


def test_negative_results_are_cached_too(service: ApiKeyService, store: MemoryStore) -> None:
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            service.authenticate("lalo-aaaaaaaa-guess")
    assert store.lookups == 1


def test_expired_keys_are_rejected(service: ApiKeyService, store: MemoryStore) -> None:
    new = service.create(owner="dan", expires_at=datetime.now(UTC) + timedelta(hours=1))
    store.rows[new.record.id] = replace(
        store.rows[new.record.id], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    service.invalidate()
    with pytest.raises(AuthenticationFailed, match="expired"):
        service.authenticate(new.secret)


def test_create_validates_input(service: ApiKeyService) -> None:
    with pytest.raises(InvalidArgument, match="owner"):
        service.create(owner=" ")
    with pytest.raises(InvalidArgument, match="unknown role"):
        service.create(owner="x", role="root")
    with pytest.raises(InvalidArgument, match="quotas"):
        service.create(owner="x", rpm=-1)
    with pytest.raises(InvalidArgument, match="future"):
        service.create(owner="x", expires_at=datetime.now(UTC) - timedelta(days=1))


def test_rotation_replaces_the_secret(service: ApiKeyService) -> None:
    old = service.create(owner="erin", role="admin", tpm=100)
    new = service.rotate(old.record.id)
    assert new.record.id == old.record.id
    assert new.secret != old.secret
    with pytest.raises(AuthenticationFailed):
        service.authenticate(old.secret)
    principal = service.authenticate(new.secret)
    assert (principal.role, principal.tpm) == (Role.ADMIN, 100)


def test_revoked_keys_cannot_be_rotated(service: ApiKeyService) -> None:
    new = service.create(owner="f")
    service.revoke(new.record.id)
    with pytest.raises(InvalidArgument, match="revoked"):
        service.rotate(new.record.id)


def test_missing_ids_are_not_found(service: ApiKeyService) -> None:
    for call in (service.get, service.revoke, service.rotate):
        with pytest.raises(NotFound):
            call("nope")


def test_provisioning_is_idempotent_and_keeps_revocations(
    service: ApiKeyService, store: MemoryStore
) -> None:
    specs = ["sk-static-one", "sk-static-two:admin:ops", " "]
    assert service.provision(specs, default_role="developer") == 2
    assert service.provision(specs, default_role="developer") == 0
    assert len(store.rows) == 2
    assert service.authenticate("sk-static-one").role is Role.DEVELOPER
    admin = service.authenticate("sk-static-two")
    assert (admin.role, admin.subject) == (Role.ADMIN, "ops")
    service.revoke(admin.key_id)
    assert service.provision(specs, default_role="developer") == 0
    with pytest.raises(AuthenticationFailed, match="revoked"):
        service.authenticate("sk-static-two")


def test_a_pepper_is_required(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="pepper"):
        ApiKeyService(store, "")


def test_provisioned_keys_take_the_given_quotas(service: ApiKeyService) -> None:
    service.provision(["sk-quota-key"], default_role="viewer", rpm=7, tpm=700)
    principal = service.authenticate("sk-quota-key")
    assert (principal.role, principal.rpm, principal.tpm) == (Role.VIEWER, 7, 700)

"""API keys: the format, the keyed hash, and the service that creates, verifies and revokes.

A key reads ``lalo-<prefix>-<secret>``: the 8-character prefix is shown to humans (lists,
audit) and the secret is 256 random bits. Only ``HMAC-SHA256(pepper, key)`` is stored, so a
leaked database does not yield usable keys without the pepper, which lives in the
environment. Because the hash is keyed and deterministic, verification is one indexed lookup
followed by a constant-time comparison.

Verified keys are cached for ``cache_ttl_s`` (≤ 1 s): a key revoked on one replica stops
working on every replica within that bound without any cross-replica messaging.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from lalo_common.errors import InvalidArgument, NotFound

from lalo_gateway.security.errors import AuthenticationFailed
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Role, parse_role

log = logging.getLogger(__name__)

KEY_SCHEME = "lalo"
PREFIX_LENGTH = 8
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
INVALID_KEY_MESSAGE = "Incorrect API key provided."


def generate_key() -> tuple[str, str]:
    """A new key and its human-visible prefix (``lalo-ab12cd34``)."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = secrets.token_urlsafe(32)
    return f"{KEY_SCHEME}-{prefix}-{secret}", f"{KEY_SCHEME}-{prefix}"


def display_prefix(key: str) -> str:
    """The part of a key that is safe to show: ``lalo-<prefix>``, or a short head of a
    key that does not follow LALO's format (keys provisioned from ``LALO_API_KEYS``)."""
    parts = key.split("-", 2)
    if len(parts) == 3 and parts[0] == KEY_SCHEME and len(parts[1]) == PREFIX_LENGTH:
        return f"{parts[0]}-{parts[1]}"
    visible = min(6, len(key) // 4)
    return key[:visible] + "..."


def hash_key(pepper: bytes, key: str) -> str:
    return hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApiKeyRecord:
    """One stored key: what the database holds, never the secret itself."""

    id: str
    prefix: str
    key_hash: str
    owner: str
    role: Role
    name: str = ""
    allowed_models: frozenset[str] | None = None
    rpm: int = 0
    tpm: int = 0
    store_content: bool = False
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    rotated_at: datetime | None = None
    source: str = "api"  # api | cli | env

    def is_active(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or _aware(self.expires_at) > now

    def principal(self) -> Principal:
        return Principal(
            subject=self.owner,
            role=self.role,
            kind="api_key",
            key_id=self.id,
            key_prefix=self.prefix,
            allowed_models=self.allowed_models,
            rpm=self.rpm,
            tpm=self.tpm,
            store_content=self.store_content,
        )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything LALO writes is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class KeyStore(Protocol):
    """Persistence the service needs (``lalo_gateway.db.repositories.SqlKeyStore``)."""

    def insert(self, record: ApiKeyRecord) -> None: ...
    def by_hash(self, key_hash: str) -> ApiKeyRecord | None: ...
    def by_id(self, key_id: str) -> ApiKeyRecord | None: ...
    def list(
        self, *, owner: str | None, include_revoked: bool, limit: int, offset: int
    ) -> Sequence[ApiKeyRecord]: ...
    def revoke(self, key_id: str, at: datetime) -> ApiKeyRecord | None: ...
    def replace_secret(
        self, key_id: str, prefix: str, key_hash: str, at: datetime
    ) -> ApiKeyRecord | None: ...


@dataclass(frozen=True)
class NewKey:
    """A freshly created or rotated key: ``secret`` is shown once and never stored."""

    record: ApiKeyRecord
    secret: str


class ApiKeyService:
    def __init__(
        self,
        store: KeyStore,
        pepper: str,
        *,
        cache_ttl_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not pepper:
            raise ValueError("an API key pepper is required")
        self._store = store
        self._pepper = pepper.encode("utf-8")
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        self._lock = threading.Lock()

    # Verification -------------------------------------------------------------------

    def hash(self, key: str) -> str:
        return hash_key(self._pepper, key)

    def cached(self, key: str) -> Principal | None:
        """A principal from the cache without touching the database, or None on a miss."""
        if self._ttl <= 0:
            return None
        key_hash = self.hash(key)
        with self._lock:
            hit = self._cache.get(key_hash)
        if hit is None or self._clock() - hit[0] >= self._ttl:
            return None
        return self._check(hit[1], key_hash)

    def authenticate(self, key: str) -> Principal:
        """Verify ``key`` against the store; raises :class:`AuthenticationFailed`."""
        key_hash = self.hash(key)
        if self._ttl > 0:
            with self._lock:
                hit = self._cache.get(key_hash)
            if hit is not None and self._clock() - hit[0] < self._ttl:
                return self._check(hit[1], key_hash)
        record = self._store.by_hash(key_hash)
        if self._ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key_hash] = (self._clock(), record)
        return self._check(record, key_hash)

    def _check(self, record: ApiKeyRecord | None, key_hash: str) -> Principal:
        if record is None or not hmac.compare_digest(record.key_hash, key_hash):
            raise AuthenticationFailed(INVALID_KEY_MESSAGE)
        if record.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked.")
        if not record.is_active(utcnow()):
            raise AuthenticationFailed("This API key has expired.")
        return record.principal()

    def invalidate(self, key_hash: str | None = None) -> None:
        with self._lock:
            if key_hash is None:
                self._cache.clear()
            else:
                self._cache.pop(key_hash, None)

    # Management ---------------------------------------------------------------------

    def create(
        self,
        *,
        owner: str,
        role: Role | str = Role.DEVELOPER,
        name: str = "",
        allowed_models: Iterable[str] | None = None,
        rpm: int = 0,
        tpm: int = 0,
        store_content: bool = False,
        expires_at: datetime | None = None,
        source: str = "api",
    ) -> NewKey:
        owner = owner.strip()
        if not owner:
            raise InvalidArgument("a key needs an owner")
        if rpm < 0 or tpm < 0:
            raise InvalidArgument("quotas must be zero (unlimited) or positive")
        if expires_at is not None and _aware(expires_at) <= utcnow():
            raise InvalidArgument("expires_at must be in the future")
        secret, prefix = generate_key()
        record = ApiKeyRecord(
            id=str(uuid.uuid4()),
            prefix=prefix,
            key_hash=self.hash(secret),
            owner=owner,
            role=role if isinstance(role, Role) else _role(role),
            name=name,
            allowed_models=None if allowed_models is None else frozenset(allowed_models),
            rpm=rpm,
            tpm=tpm,
            store_content=store_content,
            expires_at=expires_at,
            source=source,
        )
        self._store.insert(record)
        log.info("created API key %s (id %s) for %s as %s", prefix, record.id, owner, record.role)
        return NewKey(record=record, secret=secret)

    def get(self, key_id: str) -> ApiKeyRecord:
        record = self._store.by_id(key_id)
        if record is None:
            raise NotFound(f"no API key with id {key_id!r}")
        return record

    def list(
        self,
        *,
        owner: str | None = None,
        include_revoked: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> Sequence[ApiKeyRecord]:
        return self._store.list(
            owner=owner, include_revoked=include_revoked, limit=limit, offset=offset
        )

    def revoke(self, key_id: str) -> ApiKeyRecord:
        record = self._store.revoke(key_id, utcnow())
        if record is None:
            raise NotFound(f"no API key with id {key_id!r}")
        self.invalidate(record.key_hash)
        log.info("revoked API key %s (id %s)", record.prefix, record.id)
        return record

    def rotate(self, key_id: str) -> NewKey:
        """A new secret for the same key (same id, owner, role and quotas); the old secret
        stops working at once here and within the cache bound elsewhere."""
        old = self.get(key_id)
        if old.revoked_at is not None:
            raise InvalidArgument(f"API key {key_id!r} is revoked and cannot be rotated")
        secret, prefix = generate_key()
        record = self._store.replace_secret(key_id, prefix, self.hash(secret), utcnow())
        if record is None:
            raise NotFound(f"no API key with id {key_id!r}")
        self.invalidate(old.key_hash)
        log.info("rotated API key %s -> %s (id %s)", old.prefix, prefix, key_id)
        return NewKey(record=record, secret=secret)

    def provision(
        self, specs: Iterable[str], *, default_role: Role | str, rpm: int = 0, tpm: int = 0
    ) -> int:
        """Ensure every key named in ``LALO_API_KEYS`` exists; idempotent.

        Each entry is ``key`` or ``key:role`` or ``key:role:owner``. A key that already
        exists is left as it is (a revoked one stays revoked). Returns how many were added.
        """
        added = 0
        for spec in specs:
            spec = spec.strip()
            if not spec:
                continue
            key, _, rest = spec.partition(":")
            role_name, _, owner = rest.partition(":")
            role = _role(role_name) if role_name else _role(str(default_role))
            key_hash = self.hash(key)
            existing = self._store.by_hash(key_hash)
            if existing is not None:
                if existing.revoked_at is not None:
                    log.warning(
                        "API key %s from LALO_API_KEYS is revoked; leaving it revoked",
                        existing.prefix,
                    )
                continue
            record = ApiKeyRecord(
                id=str(uuid.uuid4()),
                prefix=display_prefix(key),
                key_hash=key_hash,
                owner=owner or "static",
                role=role,
                name="LALO_API_KEYS",
                rpm=rpm,
                tpm=tpm,
                source="env",
            )
            try:
                self._store.insert(record)
            except Exception:
                # Another replica provisioned the same key between our lookup and insert.
                if self._store.by_hash(key_hash) is None:
                    raise
                continue
            added += 1
        if added:
            log.info("provisioned %d API key(s) from LALO_API_KEYS", added)
        return added


def _role(name: str) -> Role:
    try:
        return parse_role(name)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None

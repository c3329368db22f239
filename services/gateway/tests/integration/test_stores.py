"""The SQL stores on Postgres: keys, audit events (filters, pagination), secrets, stored
responses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from lalo_common.errors import InvalidArgument, Unavailable
from lalo_gateway.db.engine import make_sessionmaker, wait_for_database
from lalo_gateway.db.migrate import upgrade
from lalo_gateway.db.repositories import (
    AuditQuery,
    SqlAuditStore,
    SqlKeyStore,
    SqlResponseStore,
    SqlSecretStore,
)
from lalo_gateway.security.apikeys import ApiKeyService
from lalo_gateway.security.audit import AuditRecord
from lalo_gateway.security.errors import AuthenticationFailed
from lalo_gateway.security.rbac import Role
from lalo_gateway.security.secretbox import SecretBox, generate_secret_key, rotate_all
from lalo_gateway.stored_responses import StoredResponse
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def test_key_lifecycle(sessions: sessionmaker[Session]) -> None:
    keys = ApiKeyService(SqlKeyStore(sessions), "integration-pepper", cache_ttl_s=0)
    new = keys.create(
        owner="team-a",
        role="viewer",
        allowed_models=["tiny", "auto"],
        rpm=10,
        tpm=1000,
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    with sessions() as session:
        stored = session.execute(text("SELECT * FROM gateway_api_keys")).mappings().all()
    assert all(new.secret not in str(dict(row)) for row in stored)

    principal = keys.authenticate(new.secret)
    assert principal.role is Role.VIEWER
    assert principal.allowed_models == frozenset({"tiny", "auto"})
    assert keys.get(new.record.id).expires_at is not None
    assert [r.id for r in keys.list(owner="team-a")] == [new.record.id]

    rotated = keys.rotate(new.record.id)
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(new.secret)
    assert keys.authenticate(rotated.secret).key_id == new.record.id

    keys.revoke(new.record.id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        keys.authenticate(rotated.secret)
    assert keys.list(owner="team-a") == []
    assert len(keys.list(owner="team-a", include_revoked=True)) == 1


def test_concurrent_provisioning_creates_each_key_once(sessions: sessionmaker[Session]) -> None:
    specs = [f"sk-provisioned-{i}:developer:ci" for i in range(5)]
    errors: list[BaseException] = []

    def provision() -> None:
        try:
            ApiKeyService(SqlKeyStore(sessions), "integration-pepper").provision(
                specs, default_role="viewer"
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=provision) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    keys = ApiKeyService(SqlKeyStore(sessions), "integration-pepper")
    assert len(keys.list(owner="ci", limit=100)) == 5


def test_audit_filters_and_pagination(sessions: sessionmaker[Session]) -> None:
    store = SqlAuditStore(sessions)
    base = datetime.now(UTC)
    records = [
        AuditRecord(
            method="POST",
            path="/v1/chat/completions",
            route="/v1/chat/completions",
            status=200 if i % 3 else 429,
            ts=base + timedelta(milliseconds=i),
            subject="pager",
            key_id="k-pager",
            model="tiny",
            tokens_in=i,
        )
        for i in range(25)
    ]
    store.write(records[:10])
    store.write(records)  # a retried batch that overlaps one already written
    seen: list[str] = []
    cursor = None
    while True:
        page = store.query(AuditQuery(subject="pager", limit=10, cursor=cursor))
        seen += [r.id for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [r.id for r in reversed(records)]  # newest first, nothing twice
    limited = store.query(AuditQuery(key_id="k-pager", status=429, limit=100))
    assert len(limited.records) == 9
    assert store.query(AuditQuery(subject="pager", min_status=400)).records
    since = store.query(AuditQuery(subject="pager", since=base + timedelta(milliseconds=20)))
    assert len(since.records) == 5
    with pytest.raises(InvalidArgument, match="cursor"):
        store.query(AuditQuery(cursor="garbage!"))


def test_stored_responses_by_tenant_and_conversation(sessions: sessionmaker[Session]) -> None:
    """The recursive conversation query on Postgres: a fork shares its ancestors, the walk
    stops at the tenant's boundary and at max_links."""
    store = SqlResponseStore(sessions)

    def save(rid: str, previous: str | None, tenant: str = "acme") -> None:
        item = {"type": "message", "id": f"msg_{rid}", "role": "user", "content": []}
        response = {"id": rid, "created_at": 1_700_000_000, "status": "completed", "output": []}
        store.save(StoredResponse(rid, tenant, previous, [item], response), key_id="k1")

    save("resp_a", None)
    save("resp_b", "resp_a")
    save("resp_c", "resp_b")
    save("resp_fork", "resp_a")
    save("resp_other", "resp_a", tenant="initech")  # names acme's response as previous
    assert [r.id for r in store.conversation("acme", "resp_c", 100)] == [
        "resp_a",
        "resp_b",
        "resp_c",
    ]
    assert [r.id for r in store.conversation("acme", "resp_fork", 100)] == ["resp_a", "resp_fork"]
    assert [r.id for r in store.conversation("acme", "resp_c", 1)] == ["resp_b", "resp_c"]
    assert [r.id for r in store.conversation("initech", "resp_other", 100)] == ["resp_other"]
    assert store.conversation("initech", "resp_c", 100) == []
    stored = store.get("acme", "resp_b")
    assert stored is not None
    assert stored.input_items[0]["id"] == "msg_resp_b"
    assert store.get("initech", "resp_b") is None
    assert store.delete("acme", "resp_b")
    assert not store.delete("acme", "resp_b")
    assert [r.id for r in store.conversation("acme", "resp_c", 100)] == ["resp_c"]
    assert store.purge(datetime(2023, 11, 15, tzinfo=UTC)) == 4  # saved as 2023-11-14
    assert store.get("acme", "resp_a") is None


def test_secrets_rotation(sessions: sessionmaker[Session]) -> None:
    store = SqlSecretStore(sessions)
    old, new = generate_secret_key(), generate_secret_key()
    store.put("upstream/openai", SecretBox([old]).encrypt("sk-upstream"))
    store.put("tool/github", SecretBox([old]).encrypt("ghp-token"))
    mine = [(n, c) for n, c in store.items() if n in ("upstream/openai", "tool/github")]
    assert rotate_all(SecretBox([new, old]), mine, store.rewrite) == 2
    ciphertext = store.get("tool/github")
    assert ciphertext is not None
    assert SecretBox([new]).decrypt(ciphertext) == "ghp-token"


def test_unreachable_database_is_retried_with_clear_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    engine = create_engine(
        "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/nothing",
        connect_args={"connect_timeout": 1},
    )
    sleeps: list[float] = []
    with pytest.raises(Unavailable, match="unavailable after 4 attempts"):
        wait_for_database(engine, retries=3, backoff_max_s=0.5, sleep=sleeps.append)
    assert sleeps == [0.25, 0.5, 0.5]
    assert caplog.text.count("database postgresql+psycopg://postgres:***@127.0.0.1:1/nothing") == 3
    assert "hunter2" not in caplog.text


async def test_key_lookups_during_a_database_outage_answer_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from lalo_common.errors import Unavailable
    from lalo_gateway.security.authenticator import Authenticator
    from lalo_gateway.security.settings import SecuritySettings
    from lalo_gateway.security.tokens import TokenVerifier

    engine = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/nothing", connect_args={"connect_timeout": 1}
    )
    keys = ApiKeyService(SqlKeyStore(make_sessionmaker(engine)), "outage-pepper")
    authenticator = Authenticator(keys, TokenVerifier(SecuritySettings()))
    with pytest.raises(Unavailable, match="temporarily unavailable"):
        await authenticator.authenticate("sk-during-outage")
    assert "database unavailable (OperationalError)" in caplog.text
    assert keys.hash("sk-during-outage") not in caplog.text
    engine.dispose()

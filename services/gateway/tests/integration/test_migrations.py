"""Migrations upgrade an empty database, are idempotent, and tolerate replicas racing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from lalo_gateway.db.engine import normalise_url
from lalo_gateway.db.migrate import current_revision, head_revision, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

pytestmark = pytest.mark.integration

TABLES = {
    "gateway_api_keys",
    "gateway_audit_events",
    "gateway_secrets",
    "gateway_responses",
    "gateway_alembic_version",
}


def test_upgrade_an_empty_postgres_database_and_again(fresh_postgres_url: str) -> None:
    engine = create_engine(fresh_postgres_url)
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert upgrade(engine) == head_revision(engine)  # idempotent
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_audit_events_are_append_only(
    backend: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    url = fresh_postgres_url if backend == "postgres" else f"sqlite:///{tmp_path / 'a.db'}"
    engine = create_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO gateway_audit_events (id, ts, method, path, status) "
                "VALUES ('e1', CURRENT_TIMESTAMP, 'GET', '/v1/models', 200)"
            )
        )
    statements = [
        "UPDATE gateway_audit_events SET status = 500",
        "DELETE FROM gateway_audit_events",
    ]
    if backend == "postgres":
        statements.append("TRUNCATE gateway_audit_events")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM gateway_audit_events")).scalar() == 200
    engine.dispose()


def test_replicas_migrating_at_once(fresh_postgres_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        engine = create_engine(fresh_postgres_url)
        try:
            upgrade(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = create_engine(fresh_postgres_url)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()


def test_sqlite_for_embedded_mode(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    upgrade(engine)
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_url_normalisation() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"

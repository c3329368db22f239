"""Real Postgres and Redis for the gateway's integration tests.

Each test run gets its own database (``lalo_gw_test_<random>``) on the server named by
``LALO_TEST_DATABASE_URL`` (default: the local server), dropped afterwards, so runs never
see each other's rows or tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _admin_conninfo(url: str) -> str:
    parsed = make_url(url.replace("postgresql+psycopg://", "postgresql://"))
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for this test session (``postgresql+psycopg://``)."""
    base = os.environ.get("LALO_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    name = f"lalo_gw_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_conninfo(base)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres at {make_url(base).render_as_string()} unreachable: {exc}")
    url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty database of its own for one test (migration tests need a blank schema)."""
    admin = _admin_conninfo(postgres_url)
    name = f"lalo_gw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = os.environ.get("LALO_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} unreachable: {exc}")
    return url

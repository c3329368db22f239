"""Engine creation (pool sized by settings) and the start-up wait for the database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lalo_common.errors import Unavailable
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from lalo_gateway.security.settings import SecuritySettings

log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3 here (SQLAlchemy would pick
    psycopg2, which is not installed)."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def make_engine(settings: SecuritySettings) -> Engine:
    url = make_url(normalise_url(settings.database_url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def wait_for_database(
    engine: Engine,
    *,
    retries: int,
    backoff_max_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once the database answers; retry with exponential backoff, logging one clear
    line per attempt, and raise :class:`Unavailable` after ``retries`` failed attempts."""
    where = engine.url.render_as_string(hide_password=True)
    delay = 0.25
    for attempt in range(1, retries + 2):
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            if attempt > 1:
                log.info("database %s is reachable (attempt %d)", where, attempt)
            return
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            if attempt > retries:
                raise Unavailable(
                    f"database {where} unavailable after {attempt} attempts: {reason}"
                ) from None
            log.warning(
                "database %s unavailable (attempt %d/%d: %s); retrying in %.1fs",
                where,
                attempt,
                retries + 1,
                reason,
                delay,
            )
            sleep(delay)
            delay = min(backoff_max_s, delay * 2)

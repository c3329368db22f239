"""Alembic migrations of the orchestrator's tables, run by ``lalo-orchestrator migrate``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from lalo_orchestrator.db import normalise_url

HERE = Path(__file__).resolve().parent
# Our own version table, so the orchestrator's history never mixes with another
# service's migrations in a shared database.
VERSION_TABLE = "orch_alembic_version"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", normalise_url(database_url).replace("%", "%%"))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    url = normalise_url(database_url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)

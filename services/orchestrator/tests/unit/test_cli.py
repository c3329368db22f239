"""``lalo-orchestrator migrate`` creates the tables and is safe to run twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from lalo_orchestrator.__main__ import main
from lalo_orchestrator.settings import get_settings
from sqlalchemy import create_engine, inspect


def test_migrate_creates_tables_and_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{tmp_path / 'nested' / 'orch.sqlite'}"
    monkeypatch.setenv("LALO_ORCHESTRATOR_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        main(["migrate"])
        main(["migrate"])
    finally:
        get_settings.cache_clear()
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"orch_workflows", "orch_steps", "orch_events", "orch_alembic_version"} <= tables


def test_unknown_command_is_refused():
    with pytest.raises(SystemExit):
        main(["frobnicate"])

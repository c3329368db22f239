"""Embedded mode: SQLite for state and kombu's SQLAlchemy transport on SQLite as the
broker (no Postgres, no Redis), with a real worker process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from lalo_orchestrator.api import BudgetRequest, WorkflowApi
from lalo_orchestrator.celery_app import Enqueuer, create_celery
from lalo_orchestrator.migrations import upgrade
from lalo_orchestrator.runtime import build_store

pytestmark = pytest.mark.integration


def test_workflow_runs_on_sqlite_without_redis(orch_env: Any, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'orchestrator.sqlite'}"
    upgrade(database_url)
    overrides = {"database_url": database_url, "broker_url": "", "redis_url": ""}
    worker = orch_env.start_worker(**overrides)
    orch_env.wait_ready(worker)
    settings = orch_env.settings(**overrides)
    assert settings.resolved_broker_url().startswith("sqla+sqlite:///")
    store = build_store(settings)
    api = WorkflowApi(store, settings, Enqueuer(create_celery(settings), settings))
    plan = orch_env.echo_plan(["a", "b"], answer="{{step_1}}{{step_2}}")
    record = api.create(
        owner="laptop",
        messages=[{"role": "user", "content": orch_env.plan_message(plan)}],
        allowed_tools=[],
        budgets=BudgetRequest(),
    )
    deadline = time.time() + 60
    while not store.get(record.id).state.terminal:
        assert time.time() < deadline, "embedded workflow did not finish"
        time.sleep(0.1)
    workflow = store.get(record.id)
    events = store.events_after(record.id, 0)
    store.engine.dispose()
    assert workflow.state.value == "succeeded"
    assert workflow.final_answer == "ab"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

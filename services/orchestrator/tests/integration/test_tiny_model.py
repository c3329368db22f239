"""A workflow planned by the real tiny random-weight model served by inference-small.

The planner's reply is constrained by the bounded plan schema (JSON_SCHEMA → llama.cpp
grammar), so even random weights must produce a valid, finite plan; the workflow then
runs whatever that plan says (echo tool, model steps, final answer) on a real worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lalo_orchestrator.api import BudgetRequest, WorkflowApi
from lalo_orchestrator.celery_app import Enqueuer, create_celery
from lalo_orchestrator.runtime import build_store
from lalo_testing.stack import free_port, wait_for_grpc

pytestmark = pytest.mark.integration

MODEL_ID = "tiny-chat"


@pytest.fixture(scope="module")
def inference_small(tiny_model_path: Path, orch_env: Any) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "LALO_ENVIRONMENT": "embedded",
        "LALO_SERVICE_TOKEN": "",
        "LALO_INFERENCE_SMALL_LISTEN": f"127.0.0.1:{port}",
        "LALO_INFERENCE_SMALL_MODEL_PATH": str(tiny_model_path),
        "LALO_INFERENCE_SMALL_MODEL_ID": MODEL_ID,
        "LALO_INFERENCE_SMALL_PARALLEL": "2",
        "LALO_INFERENCE_SMALL_N_CTX": "4096",
        "LALO_INFERENCE_SMALL_THREADS": "1",
    }
    log = (orch_env.log_dir / "inference-small.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "lalo_inference_small"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_grpc(f"127.0.0.1:{port}", 120, process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_tiny_model_plans_a_workflow_that_runs_to_an_answer(orch_env: Any, inference_small: str):
    orch_env.inference_target = inference_small
    overrides = {
        "default_model": MODEL_ID,
        "plan_max_steps": 2,
        "plan_max_text_chars": 24,
        "plan_max_argument_chars": 12,
        "plan_max_tokens": 1500,
        "step_max_tokens": 12,
        "call_timeout_s": 60,
    }
    worker = orch_env.start_worker(**overrides)
    orch_env.wait_ready(worker)
    settings = orch_env.settings(**overrides)
    store = build_store(settings)
    api = WorkflowApi(store, settings, Enqueuer(create_celery(settings), settings))
    record = api.create(
        owner="tiny",
        messages=[{"role": "user", "content": "Echo the word blue, then explain it."}],
        allowed_tools=["echo"],
        budgets=BudgetRequest(max_replans=2, max_wall_time_s=90),
    )
    deadline = time.time() + 100
    workflow = store.get(record.id)
    while not workflow.state.terminal:
        assert time.time() < deadline, f"still {workflow.state.value}"
        time.sleep(0.3)
        workflow = store.get(record.id)
    events = store.events_after(record.id, 0)
    store.engine.dispose()
    types = [e.type for e in events]
    print(
        f"\ntiny-model workflow: {workflow.state.value}; steps: "
        f"{[(s.kind.value, s.state.value) for s in workflow.steps]}; events: {types}; "
        f"answer: {workflow.final_answer!r}; error: {workflow.error!r}; "
        f"invalid: {[e.data for e in events if e.type == 'plan.invalid']}"
    )
    # Random weights under the bounded schema still give a valid plan the first time.
    assert "plan.invalid" not in types
    assert "plan.created" in types
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Whatever the random plan asked for ran; a step may fail only on the tool's terms.
    assert workflow.state.value in ("succeeded", "failed")
    if workflow.state.value == "succeeded":
        assert workflow.final_answer is not None
    else:
        assert "asked to fail" in (workflow.error or "")
    assert workflow.tokens_used > 0

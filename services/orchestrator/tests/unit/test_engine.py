"""The engine over a real (SQLite) store with scripted model and tool clients."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import pytest
from lalo_common.errors import FailedPrecondition
from lalo_orchestrator.api import BudgetRequest, WorkflowApi
from lalo_orchestrator.db import create_db_engine
from lalo_orchestrator.engine import WorkflowEngine
from lalo_orchestrator.migrations import upgrade
from lalo_orchestrator.settings import OrchestratorSettings
from lalo_orchestrator.states import StepState, WorkflowState
from lalo_orchestrator.store import EventRecord, WorkflowStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A store, an engine and an in-memory queue standing in for Celery."""

    def __init__(self, tmp_path: Path, model: Any, tools: Any, **overrides: Any) -> None:
        url = f"sqlite:///{tmp_path / 'orch.sqlite'}"
        upgrade(url)
        self.clock = Clock()
        self.published: list[EventRecord] = []
        self.store = WorkflowStore(
            create_db_engine(url), publisher=self.published.extend, clock=self.clock
        )
        self.settings = OrchestratorSettings(
            database_url=url, retry_backoff_s=1.0, lease_ttl_s=5.0, **overrides
        )
        self.queue: deque[tuple[str, str, float]] = deque()
        self.engine = WorkflowEngine(
            self.store,
            model,
            tools,
            self.settings,
            lambda wid, dispatch, countdown: self.queue.append((wid, dispatch, countdown)),
            clock=self.clock,
        )
        self.api = WorkflowApi(self.store, self.settings, self.engine.enqueue)

    def create(self, text: str = "do it", **budgets: Any) -> str:
        record = self.api.create(
            owner="alice",
            messages=[{"role": "user", "content": text}],
            allowed_tools=[],
            budgets=BudgetRequest(**budgets),
        )
        return record.id

    def drain(self, limit: int = 100) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            workflow_id, dispatch, countdown = self.queue.popleft()
            self.clock.now += countdown
            self.engine.advance(workflow_id, dispatch)
        raise AssertionError("workflow did not settle")

    def events(self, workflow_id: str) -> list[EventRecord]:
        return self.store.events_after(workflow_id, 0)


@pytest.fixture
def harness_factory(tmp_path: Path) -> Any:
    def make(model: Any, tools: Any, **overrides: Any) -> Harness:
        return Harness(tmp_path, model, tools, **overrides)

    return make


PLAN = {
    "steps": [
        {"kind": "tool", "tool": "echo", "arguments": {"text": "hello {{input}}"}},
        {"kind": "model", "prompt": "summarise {{step_1}}"},
        {"kind": "final", "answer": "answer: {{step_2}}"},
    ]
}


def test_plan_runs_tool_and_model_steps_and_answers(
    harness_factory, scripted_model, recording_tools
):
    scripted_model.plans.append(PLAN)
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create("world")
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.SUCCEEDED
    assert workflow.final_answer == "answer: model:summarise hello world"
    assert [s.state for s in workflow.steps] == [StepState.SUCCEEDED] * 3
    assert workflow.steps_used == 2
    assert workflow.tokens_used == 20  # planner + one model step
    # The tool saw the rendered arguments and the step's idempotency key.
    (call,) = recording_tools.invocations
    assert call["arguments"] == {"text": "hello world"}
    assert call["idempotency_key"] == f"{workflow_id}:1:1"
    # Events: gap-free sequence, published exactly as stored.
    events = h.events(workflow_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert h.published == events
    assert events[-1].type == "workflow.state"
    assert events[-1].workflow_state is WorkflowState.SUCCEEDED


def test_plan_without_final_step_answers_with_last_result(
    harness_factory, scripted_model, recording_tools
):
    scripted_model.plans.append(
        {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "42"}}]}
    )
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create()
    h.drain()
    assert h.store.get(workflow_id).final_answer == "42"


def test_failed_step_replans_with_the_error_shown_to_the_planner(
    harness_factory, scripted_model, recording_tools, fakes
):
    recording_tools.errors["bad"] = [fakes.StepFailed("tool echo error EXECUTION_ERROR: boom")]
    scripted_model.plans += [
        {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "bad"}}]},
        {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "good"}}]},
    ]
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create()
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.SUCCEEDED
    assert workflow.final_answer == "good"
    assert workflow.replans == 1
    first_plan = [s for s in workflow.steps if s.plan_version == 1]
    assert [s.state for s in first_plan] == [StepState.FAILED, StepState.SKIPPED]
    second_planner_prompt = scripted_model.calls[1]["messages"][0]["content"]
    assert "boom" in second_planner_prompt


def test_replan_limit_ends_in_failed(harness_factory, scripted_model, recording_tools, fakes):
    recording_tools.errors["bad"] = [fakes.StepFailed("nope")] * 3
    bad = {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "bad"}}]}
    scripted_model.plans += [bad, bad, bad]
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create(max_replans=1)
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.FAILED
    assert "re-plan limit" in (workflow.error or "")
    assert len(recording_tools.invocations) == 2


def test_invalid_plans_are_replanned_then_fail(harness_factory, scripted_model, recording_tools):
    scripted_model.plans += [
        "not json",
        {"steps": [{"kind": "tool", "tool": "rm", "arguments": {}}]},
    ]
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create(max_replans=1)
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.FAILED
    assert "unknown or disallowed tool 'rm'" in (workflow.error or "")
    assert [e.type for e in h.events(workflow_id)].count("plan.invalid") == 2


def test_transient_failures_retry_with_backoff(
    harness_factory, scripted_model, recording_tools, fakes
):
    recording_tools.errors["flaky"] = [fakes.TransientError("down"), fakes.TransientError("down")]
    scripted_model.plans.append(
        {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "flaky"}}]}
    )
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create()
    delays = []
    while h.queue:
        delays.append(h.queue[0][2])
        workflow_id_, dispatch, countdown = h.queue.popleft()
        h.clock.now += countdown
        h.engine.advance(workflow_id_, dispatch)
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.SUCCEEDED
    assert [d for d in delays if d > 0] == [1.0, 2.0]  # exponential backoff
    step = workflow.steps[0]
    assert step.attempts == 3
    assert {c["idempotency_key"] for c in recording_tools.invocations} == {step.idempotency_key}


def test_transient_failures_give_up_after_max_attempts(
    harness_factory, scripted_model, recording_tools, fakes
):
    recording_tools.errors["down"] = [fakes.TransientError("unavailable")] * 10
    scripted_model.plans.append(
        {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "down"}}]}
    )
    h = harness_factory(scripted_model, recording_tools, step_max_attempts=3)
    workflow_id = h.create(max_replans=0)
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.FAILED
    assert "gave up after 3 attempts" in (workflow.error or "")


def test_step_budget_exhausted(harness_factory, scripted_model, recording_tools, fakes):
    # A plan never has more steps than the budget; re-plans are what run past it.
    recording_tools.errors["bad"] = [fakes.StepFailed("nope")]
    scripted_model.plans += [
        {
            "steps": [
                {"kind": "tool", "tool": "echo", "arguments": {"text": t}} for t in ("a", "bad")
            ]
        },
        {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "c"}}]},
    ]
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create(max_steps=2)
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.BUDGET_EXCEEDED
    assert workflow.error == "step budget of 2 exhausted"
    assert len(recording_tools.invocations) == 2
    assert [s.state for s in workflow.steps if s.plan_version == 2] == [StepState.SKIPPED] * 2


def test_token_budget_exhausted(harness_factory, scripted_model, recording_tools):
    scripted_model.tokens_per_call = 30
    scripted_model.plans.append(
        {"steps": [{"kind": "model", "prompt": "a"}, {"kind": "model", "prompt": "b"}]}
    )
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create(max_tokens=50)
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.BUDGET_EXCEEDED
    assert workflow.error == "token budget of 50 exhausted"
    assert workflow.tokens_used == 60


def test_wall_time_budget_exhausted(harness_factory, scripted_model, recording_tools):
    scripted_model.plans.append(
        {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "x"}}]}
    )
    h = harness_factory(scripted_model, recording_tools)
    recording_tools.hook = lambda _call: setattr(h.clock, "now", h.clock.now + 100)
    workflow_id = h.create(max_wall_time_s=30)
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.BUDGET_EXCEEDED
    assert "wall-time budget of 30s exhausted" in (workflow.error or "")


def test_cancel_stops_further_steps(harness_factory, scripted_model, recording_tools):
    scripted_model.plans.append(
        {
            "steps": [
                {"kind": "tool", "tool": "echo", "arguments": {"text": str(i)}} for i in range(3)
            ]
        }
    )
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create()
    # Cancel from inside the first tool call, as an API call would while it runs.
    recording_tools.hook = lambda _call: h.store.cancel(workflow_id, "alice", "user asked")
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.CANCELLED
    assert workflow.error == "user asked"
    assert len(recording_tools.invocations) == 1
    assert all(s.state is StepState.SKIPPED for s in workflow.steps)
    assert workflow.steps[0].result_text == "0"  # the late result is kept
    assert h.events(workflow_id)[-1].workflow_state is WorkflowState.CANCELLED
    with pytest.raises(FailedPrecondition):
        h.store.cancel(workflow_id, "alice")


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after it runs, the lease stays taken."""


def test_step_interrupted_mid_call_reruns_with_same_key_and_completed_steps_never_rerun(
    harness_factory, scripted_model, recording_tools
):
    scripted_model.plans.append(
        {
            "steps": [
                {"kind": "tool", "tool": "echo", "arguments": {"text": str(i)}} for i in range(3)
            ]
        }
    )
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create()
    crashed = []

    def crash_once(call: dict[str, Any]) -> None:
        if call["arguments"]["text"] == "1" and not crashed:
            crashed.append(call)
            raise Crash

    recording_tools.hook = crash_once
    release = h.store.release
    # A killed process runs no finally blocks: the lease is never released.
    h.store.release = lambda *a, **k: None if crashed else release(*a, **k)  # type: ignore[method-assign]
    with pytest.raises(Crash):
        h.drain()
    h.store.release = release  # type: ignore[method-assign]
    # The crashed task's message is re-delivered; the dead worker's lease still blocks
    # it, so it comes back once the lease has run out ...
    dispatch = h.store.get(workflow_id).dispatch
    assert h.engine.advance(workflow_id, dispatch).action == "busy"
    assert h.queue[-1][2] > 0
    # ... and meanwhile the sweeper may restart the chain: then the old message is stale.
    h.clock.now += max(h.settings.lease_ttl_s, h.settings.stall_after_s) + 1
    ((stalled_id, new_token),) = h.store.stalled(h.settings.stall_after_s)
    assert stalled_id == workflow_id
    h.queue.clear()
    assert h.engine.advance(workflow_id, dispatch).action == "stale"
    h.queue.append((workflow_id, new_token, 0.0))
    h.drain()
    workflow = h.store.get(workflow_id)
    assert workflow.state is WorkflowState.SUCCEEDED
    keys = [c["idempotency_key"] for c in recording_tools.invocations]
    # Step 2 was called twice under one key (interrupted mid-call), every other once.
    assert keys.count(f"{workflow_id}:1:2") == 2
    assert keys.count(f"{workflow_id}:1:1") == 1
    assert keys.count(f"{workflow_id}:1:3") == 1
    assert workflow.steps[1].attempts == 2
    redelivered = [e for e in h.events(workflow_id) if e.data.get("redelivered")]
    assert len(redelivered) == 1


def test_redelivered_task_after_commit_does_not_repeat_the_step(
    harness_factory, scripted_model, recording_tools
):
    scripted_model.plans.append(
        {
            "steps": [
                {"kind": "tool", "tool": "echo", "arguments": {"text": str(i)}} for i in range(2)
            ]
        }
    )
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create()
    h.drain()
    # A duplicate delivery of any task after the end is a no-op.
    assert h.engine.advance(workflow_id, "any").action == "finished"
    assert len(recording_tools.invocations) == 2


def test_a_redelivered_old_message_is_dropped_as_stale(
    harness_factory, scripted_model, recording_tools
):
    scripted_model.plans.append(
        {
            "steps": [
                {"kind": "tool", "tool": "echo", "arguments": {"text": str(i)}} for i in range(2)
            ]
        }
    )
    h = harness_factory(scripted_model, recording_tools)
    workflow_id = h.create()
    first = h.queue[0]
    h.queue.popleft()
    h.engine.advance(first[0], first[1])  # plans
    h.engine.advance(h.queue[0][0], h.queue[0][1])  # runs step 1
    calls = len(recording_tools.invocations)
    # The broker hands out the planning message again (e.g. after a visibility timeout).
    assert h.engine.advance(first[0], first[1]).action == "stale"
    assert len(recording_tools.invocations) == calls
    assert h.store.get(workflow_id).steps[1].state is StepState.PENDING

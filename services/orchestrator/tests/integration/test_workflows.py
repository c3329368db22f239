"""Workflows through the gRPC API, run by real Celery worker processes over Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from lalo.workflow.v1 import workflow_pb2, workflow_pb2_grpc
from lalo_orchestrator.service import build_server

pytestmark = pytest.mark.integration

WS = workflow_pb2


@pytest.fixture(scope="module")
def workers(orch_env: Any) -> Any:
    processes = [orch_env.start_worker(), orch_env.start_worker()]
    for process in processes:
        orch_env.wait_ready(process)
    return processes


@pytest.fixture(scope="module")
async def stub(orch_env: Any, workers: Any) -> AsyncIterator[Any]:
    server, api = build_server(orch_env.settings())
    port = await server.start("127.0.0.1:0")
    await server.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield workflow_pb2_grpc.WorkflowServiceStub(channel)
    await channel.close()
    await server.stop()
    api.store.engine.dispose()


async def create(stub: Any, plan: dict[str, Any], owner: str = "alice", **budgets: Any) -> Any:
    return await stub.CreateWorkflow(
        WS.CreateWorkflowRequest(
            owner=owner,
            messages=[WS.Message(role="user", content="PLAN:" + json.dumps(plan))],
            budgets=WS.Budgets(**budgets),
        )
    )


async def collect(stub: Any, workflow_id: str, after: int = 0, owner: str = "alice") -> Any:
    events, complete = [], None
    call = stub.StreamEvents(
        WS.StreamEventsRequest(id=workflow_id, owner=owner, after_event_id=after), timeout=60
    )
    async for item in call:
        if item.WhichOneof("item") == "event":
            events.append(item.event)
        elif item.WhichOneof("item") == "complete":
            complete = item.complete
    return events, complete


async def test_workflow_plans_and_runs_tool_and_model_steps(orch_env, stub):
    plan = {
        "steps": [
            {"kind": "tool", "tool": "echo", "arguments": {"text": "forty-two"}},
            {"kind": "model", "prompt": "explain {{step_1}}"},
            {"kind": "final", "answer": "{{step_1}} / {{step_2}}"},
        ]
    }
    created = await create(stub, plan)
    assert created.state == WS.WORKFLOW_STATE_PENDING
    events, complete = await collect(stub, created.id)
    assert complete.state == WS.WORKFLOW_STATE_SUCCEEDED
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert complete.last_event_id == events[-1].id

    workflow = await stub.GetWorkflow(WS.GetWorkflowRequest(id=created.id, owner="alice"))
    assert workflow.state == WS.WORKFLOW_STATE_SUCCEEDED
    assert workflow.final_answer == "forty-two / model:explain forty-two"
    assert [s.kind for s in workflow.steps] == [
        WS.STEP_KIND_TOOL,
        WS.STEP_KIND_MODEL,
        WS.STEP_KIND_FINAL,
    ]
    assert all(s.state == WS.STEP_STATE_SUCCEEDED for s in workflow.steps)
    assert workflow.usage.steps == 2
    assert workflow.usage.tokens == 20
    types = [e.type for e in events]
    assert types[0] == "workflow.created"
    assert "plan.created" in types
    assert json.loads(events[-1].data_json)["final_answer"] == workflow.final_answer


async def test_failed_step_is_replanned(orch_env, stub):
    # The planner is scripted, so the second plan is the same: the re-plan limit ends it.
    plan = {"steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": "x", "fail": True}}]}
    created = await create(stub, plan, max_replans=1)
    _events, complete = await collect(stub, created.id)
    assert complete.state == WS.WORKFLOW_STATE_FAILED
    workflow = await stub.GetWorkflow(WS.GetWorkflowRequest(id=created.id))
    assert workflow.usage.replans == 1
    assert "asked to fail" in workflow.error
    assert [s.plan_version for s in workflow.steps if s.state == WS.STEP_STATE_FAILED] == [1, 2]


async def test_event_stream_resumes_after_a_disconnect_without_gaps_or_duplicates(orch_env, stub):
    plan = orch_env.echo_plan([f"s{i}" for i in range(5)], sleep_ms=150)
    created = await create(stub, plan)
    seen = []
    call = stub.StreamEvents(WS.StreamEventsRequest(id=created.id, owner="alice"))
    async for item in call:
        seen.append(item.event)
        if len(seen) == 4:
            break
    call.cancel()  # the client goes away mid-workflow
    await asyncio.sleep(0.5)  # events keep happening while nobody listens
    rest, complete = await collect(stub, created.id, after=seen[-1].id)
    ids = [e.id for e in seen + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert complete.state == WS.WORKFLOW_STATE_SUCCEEDED
    # The same history, read again from the start, is identical.
    replay, _ = await collect(stub, created.id)
    assert [(e.id, e.type, e.data_json) for e in replay] == [
        (e.id, e.type, e.data_json) for e in seen + rest
    ]
    # Resuming after the end returns nothing but the completion.
    tail, complete = await collect(stub, created.id, after=ids[-1])
    assert tail == []
    assert complete.last_event_id == ids[-1]


async def test_cancel_stops_further_steps(orch_env, stub):
    plan = orch_env.echo_plan([f"c{i}" for i in range(6)], sleep_ms=400)
    created = await create(stub, plan)
    call = stub.StreamEvents(WS.StreamEventsRequest(id=created.id, owner="alice"))
    async for item in call:
        event = item.event
        if event.type == "step.state" and event.step_state == WS.STEP_STATE_SUCCEEDED:
            break
    call.cancel()
    cancelled = await stub.CancelWorkflow(
        WS.CancelWorkflowRequest(id=created.id, owner="alice", reason="changed my mind")
    )
    assert cancelled.state == WS.WORKFLOW_STATE_CANCELLED
    assert cancelled.error == "changed my mind"
    events, complete = await collect(stub, created.id)
    assert complete.state == WS.WORKFLOW_STATE_CANCELLED
    cancel_seq = next(e.id for e in events if e.workflow_state == WS.WORKFLOW_STATE_CANCELLED)
    assert not [
        e
        for e in events
        if e.id > cancel_seq and e.type == "step.state" and e.step_state == WS.STEP_STATE_RUNNING
    ]
    await asyncio.sleep(1.0)  # give a (wrongly) continuing worker time to show itself
    texts = [c.text for c in orch_env.tools.calls if c.text.startswith("c")]
    assert len(texts) <= 2  # the finished step and, at most, the one in flight
    workflow = await stub.GetWorkflow(WS.GetWorkflowRequest(id=created.id))
    assert workflow.state == WS.WORKFLOW_STATE_CANCELLED
    # Cancelling again is an illegal transition, refused.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CancelWorkflow(WS.CancelWorkflowRequest(id=created.id, owner="alice"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_step_budget_exhaustion_is_a_terminal_state(orch_env, stub):
    plan = {
        "steps": [
            {"kind": "tool", "tool": "echo", "arguments": {"text": "a"}},
            {"kind": "tool", "tool": "echo", "arguments": {"text": "b", "fail": True}},
        ]
    }
    created = await create(stub, plan, max_steps=2, max_replans=3)
    _events, complete = await collect(stub, created.id)
    assert complete.state == WS.WORKFLOW_STATE_BUDGET_EXCEEDED
    workflow = await stub.GetWorkflow(WS.GetWorkflowRequest(id=created.id))
    assert workflow.error == "step budget of 2 exhausted"


async def test_token_budget_exhaustion_is_a_terminal_state(orch_env, stub):
    plan = {"steps": [{"kind": "model", "prompt": p} for p in ("a", "b", "c")]}
    created = await create(stub, plan, max_tokens=25)
    _events, complete = await collect(stub, created.id)
    assert complete.state == WS.WORKFLOW_STATE_BUDGET_EXCEEDED
    workflow = await stub.GetWorkflow(WS.GetWorkflowRequest(id=created.id))
    assert workflow.error == "token budget of 25 exhausted"
    assert workflow.usage.tokens == 30


async def test_owners_see_only_their_own_workflows(orch_env, stub):
    mine = await create(stub, orch_env.echo_plan(["m"]), owner="bob")
    await collect(stub, mine.id, owner="bob")
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.GetWorkflow(WS.GetWorkflowRequest(id=mine.id, owner="mallory"))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.CancelWorkflow(WS.CancelWorkflowRequest(id=mine.id, owner="mallory"))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListWorkflows(WS.ListWorkflowsRequest(owner="bob"))
    assert [w.id for w in listed.workflows] == [mine.id]
    assert not (await stub.ListWorkflows(WS.ListWorkflowsRequest(owner="mallory"))).workflows


async def test_bad_requests_are_refused(orch_env, stub):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateWorkflow(WS.CreateWorkflowRequest(owner="alice"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create(stub, orch_env.echo_plan(["x"]), max_steps=10_000)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_steps must be at most" in refused.value.details()

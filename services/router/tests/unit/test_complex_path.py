"""The complex path: a chat request answered by a workflow, relayed as progress + answer;
and, for a workflow the policy chose, the direct answer that follows one that fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.workflow.v1 import workflow_pb2 as wpb
from lalo.workflow.v1 import workflow_pb2_grpc
from lalo_common.errors import InvalidArgument
from lalo_common.grpc_server import GrpcServer
from lalo_router.complex_path import WorkflowChat, describe
from lalo_router.forwarding import ChatForwarder
from lalo_router.policy import PolicyRouter, PolicySpec
from lalo_router.replicas import ReplicaSet
from lalo_testing.inference import FakeServer, start_fake_inference
from prometheus_client import REGISTRY

TOKEN = "router-test-token"


class FakeWorkflows(workflow_pb2_grpc.WorkflowServiceServicer):
    """An orchestrator whose workflows end in ``final_state`` (``down``: it cannot start
    one; ``hang``: it never finishes)."""

    def __init__(
        self,
        final_state: int = wpb.WORKFLOW_STATE_SUCCEEDED,
        hang: bool = False,
        down: bool = False,
    ) -> None:
        self.final_state = final_state
        self.hang = hang
        self.down = down
        self.created: list[wpb.CreateWorkflowRequest] = []
        self.cancelled: list[str] = []

    async def CreateWorkflow(self, request: Any, context: Any) -> wpb.Workflow:
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "orchestrator database is down")
        self.created.append(request)
        return wpb.Workflow(
            id="wf-1", owner=request.owner, model="tiny", state=wpb.WORKFLOW_STATE_PENDING
        )

    async def StreamEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield wpb.StreamEventsResponse(
            event=wpb.WorkflowEvent(
                id=1,
                workflow_id=request.id,
                type="plan.created",
                data_json=json.dumps({"steps": [{"kind": "tool"}, {"kind": "final"}]}),
            )
        )
        if self.hang:
            await asyncio.sleep(3600)
        yield wpb.StreamEventsResponse(
            event=wpb.WorkflowEvent(
                id=2,
                workflow_id=request.id,
                type="step.state",
                step_id="s1",
                step_state=wpb.STEP_STATE_SUCCEEDED,
                data_json=json.dumps({"tool": "calculator"}),
            )
        )
        yield wpb.StreamEventsResponse(
            complete=wpb.StreamComplete(state=self.final_state, last_event_id=2)
        )

    async def GetWorkflow(self, request: Any, context: Any) -> wpb.Workflow:
        return wpb.Workflow(
            id=request.id,
            state=self.final_state,
            final_answer="42",
            model="tiny",
            usage=wpb.Usage(tokens=17),
            error=""
            if self.final_state == wpb.WORKFLOW_STATE_SUCCEEDED
            else "step budget of 1 exhausted",
        )

    async def CancelWorkflow(self, request: Any, context: Any) -> wpb.Workflow:
        self.cancelled.append(request.id)
        return wpb.Workflow(id=request.id, state=wpb.WORKFLOW_STATE_CANCELLED)


async def _serve(fake: FakeWorkflows) -> tuple[GrpcServer, grpc.aio.Channel]:
    server = GrpcServer(service_names=[])
    workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(fake, server.server)
    port = await server.start("127.0.0.1:0")
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def _request() -> rpb.ChatRequest:
    request = rpb.ChatRequest(model="workflow", principal="alice", request_id="req-1")
    request.chat.messages.add(role="user", content="what is 6*7? use the calculator")
    return request


async def test_workflow_answer_streams_route_progress_answer_and_usage() -> None:
    fake = FakeWorkflows()
    server, channel = await _serve(fake)
    request = _request()
    # A plain-text response format is what a workflow answers anyway: not refused.
    request.sampling.response_format.type = ipb.ResponseFormat.TEXT
    try:
        chat = WorkflowChat(workflow_pb2_grpc.WorkflowServiceStub(channel))
        events = [e async for e in chat.run(request, rpb.RouteDecision(pool="workflow"))]
    finally:
        await channel.close()
        await server.stop()
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["route", "progress", "progress", "chunk", "complete"]
    assert events[0].route.workflow_id == "wf-1"
    assert events[1].progress.text == "planned 2 step(s)"
    assert "calculator" in events[2].progress.text
    assert events[3].chunk.text == "42"
    assert events[4].complete.finish_reason == ipb.FINISH_REASON_STOP
    assert events[4].complete.usage.completion_tokens == 17
    assert fake.created[0].owner == "alice"
    assert [m.content for m in fake.created[0].messages] == ["what is 6*7? use the calculator"]
    assert fake.cancelled == []


async def test_failed_workflow_is_an_in_band_error_naming_why() -> None:
    fake = FakeWorkflows(final_state=wpb.WORKFLOW_STATE_BUDGET_EXCEEDED)
    server, channel = await _serve(fake)
    try:
        chat = WorkflowChat(workflow_pb2_grpc.WorkflowServiceStub(channel))
        events = [e async for e in chat.run(_request(), rpb.RouteDecision(pool="workflow"))]
    finally:
        await channel.close()
        await server.stop()
    last = events[-1]
    assert last.WhichOneof("event") == "error"
    assert last.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "budget" in last.error.message


async def test_client_leaving_cancels_the_workflow() -> None:
    fake = FakeWorkflows(hang=True)
    server, channel = await _serve(fake)
    try:
        chat = WorkflowChat(workflow_pb2_grpc.WorkflowServiceStub(channel))
        stream = chat.run(_request(), rpb.RouteDecision(pool="workflow"))
        assert (await anext(stream)).WhichOneof("event") == "route"
        assert (await anext(stream)).WhichOneof("event") == "progress"
        await stream.aclose()  # the chat client went away mid-workflow
    finally:
        await channel.close()
        await server.stop()
    assert fake.cancelled == ["wf-1"]


async def test_prompt_requests_are_refused() -> None:
    chat = WorkflowChat(stub=None)
    with pytest.raises(InvalidArgument):
        await anext(chat.run(rpb.ChatRequest(prompt="x"), rpb.RouteDecision()))


def _with_tools() -> rpb.ChatRequest:
    request = _request()
    request.chat.tools.add(name="get_weather")
    return request


def _with_format(kind: int) -> rpb.ChatRequest:
    request = _request()
    request.sampling.response_format.type = kind  # type: ignore[assignment]
    return request


def _with_logprobs() -> rpb.ChatRequest:
    request = _request()
    request.sampling.logprobs = True
    return request


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (_with_tools(), "tools"),
        (_with_format(ipb.ResponseFormat.JSON_OBJECT), "response_format"),
        (_with_format(ipb.ResponseFormat.JSON_SCHEMA), "response_format"),
        (_with_logprobs(), "logprobs"),
    ],
)
async def test_what_a_workflow_would_ignore_is_refused_before_one_starts(
    request_: rpb.ChatRequest, param: str
) -> None:
    fake = FakeWorkflows()
    server, channel = await _serve(fake)
    try:
        chat = WorkflowChat(workflow_pb2_grpc.WorkflowServiceStub(channel))
        with pytest.raises(InvalidArgument) as caught:
            await anext(chat.run(request_, rpb.RouteDecision(pool="workflow")))
    finally:
        await channel.close()
        await server.stop()
    assert caught.value.param == param
    assert fake.created == []  # nothing was started on the orchestrator


def test_describe_unknown_event_type() -> None:
    assert describe(wpb.WorkflowEvent(type="custom.thing")) == "custom.thing"
    assert describe(wpb.WorkflowEvent(type="plan.invalid", data_json="not json")) == (
        "plan rejected: invalid plan"
    )


# ---- a workflow the policy chose (auto) that does not answer: a direct answer follows ----

AGENTIC_SPEC = PolicySpec.model_validate(
    {"default_pool": "small", "categories": {"agentic": "workflow"}}
)


class Agentic:
    """A classifier that finds every text agentic."""

    def classify(self, text: str) -> SimpleNamespace:
        return SimpleNamespace(label="agentic", confidence=0.9, p_escalate=0.1, latency_ms=1.0)


@dataclass
class Stack:
    forwarder: ChatForwarder
    small: FakeServer
    workflows: FakeWorkflows


@pytest.fixture
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """A small pool (fake inference serving "tiny") and an orchestrator (``request.param``:
    FakeWorkflows keyword arguments) behind a forwarder whose policy sends agentic requests
    to workflows."""
    small = await start_fake_inference("s", ["tiny"], service_token=TOKEN)
    replicas = ReplicaSet([("small", small.target)], service_token=TOKEN)
    await replicas.refresh()
    fake = FakeWorkflows(**request.param)
    server, channel = await _serve(fake)
    router = PolicyRouter(AGENTIC_SPEC, replicas, Agentic(), workflows_enabled=True)
    forwarder = ChatForwarder(
        replicas,
        router.route,
        timeout_s=30,
        workflows=WorkflowChat(workflow_pb2_grpc.WorkflowServiceStub(channel)),
    )
    yield Stack(forwarder, small, fake)
    await channel.close()
    await server.stop()
    await replicas.close()
    await small.stop()


async def events(stack: Stack, model: str = "auto") -> list[rpb.ChatResponse]:
    request = _request()
    request.model = model
    return [event async for event in stack.forwarder.chat(request)]


def fallbacks_to(pool: str) -> float:
    value = REGISTRY.get_sample_value("lalo_router_workflow_fallbacks_total", {"pool": pool})
    return value or 0.0


FAILED = {"final_state": wpb.WORKFLOW_STATE_FAILED}
BUDGET = {"final_state": wpb.WORKFLOW_STATE_BUDGET_EXCEEDED}
DOWN = {"down": True}
SUCCEEDED = {"final_state": wpb.WORKFLOW_STATE_SUCCEEDED}


@pytest.mark.parametrize("stack", [FAILED, BUDGET], indirect=True)
async def test_an_auto_workflow_that_fails_is_answered_directly(stack: Stack) -> None:
    counted = fallbacks_to("small")
    out = await events(stack)
    assert fallbacks_to("small") == counted + 1
    kinds = [e.WhichOneof("event") for e in out]
    assert kinds[0] == "route"
    assert out[0].route.pool == "workflow"
    assert out[0].route.workflow_id == "wf-1"
    # The failure is told beside the answer, then the direct route names the workflow tried.
    fallback = next(
        e.progress
        for e in out
        if e.WhichOneof("event") == "progress" and e.progress.type == "workflow.fallback"
    )
    assert "budget" in fallback.text
    assert "tiny" in fallback.text
    second = [e.route for e in out[1:] if e.WhichOneof("event") == "route"]
    assert [(r.pool, r.model, r.workflow_id) for r in second] == [("small", "tiny", "wf-1")]
    assert second[0].category == "agentic"
    assert "the workflow did not answer" in second[0].reason
    assert "error" not in kinds
    assert kinds[-1] == "complete"
    assert "".join(e.chunk.text for e in out if e.WhichOneof("event") == "chunk")
    assert len(stack.small.servicer.calls) == 1


@pytest.mark.parametrize("stack", [DOWN], indirect=True)
async def test_an_orchestrator_that_cannot_start_it_is_skipped(stack: Stack) -> None:
    out = await events(stack)
    # Nothing was announced yet: the direct route is the first (and only) decision.
    routes = [e.route for e in out if e.WhichOneof("event") == "route"]
    assert [(r.pool, r.workflow_id) for r in routes] == [("small", "")]
    assert out[0].WhichOneof("event") == "route"
    assert out[-1].WhichOneof("event") == "complete"


@pytest.mark.parametrize("stack", [SUCCEEDED], indirect=True)
async def test_a_workflow_that_answers_is_the_answer(stack: Stack) -> None:
    out = await events(stack)
    assert [e.route.pool for e in out if e.WhichOneof("event") == "route"] == ["workflow"]
    assert "".join(e.chunk.text for e in out if e.WhichOneof("event") == "chunk") == "42"
    assert stack.small.servicer.calls == []


@pytest.mark.parametrize("stack", [FAILED], indirect=True)
async def test_a_workflow_the_caller_named_fails_as_it_did(stack: Stack) -> None:
    out = await events(stack, model="workflow")
    assert out[-1].WhichOneof("event") == "error"
    assert "budget" in out[-1].error.message
    assert stack.small.servicer.calls == []


@pytest.mark.parametrize("stack", [FAILED], indirect=True)
async def test_a_raw_prompt_is_not_sent_to_a_workflow(stack: Stack) -> None:
    out = [e async for e in stack.forwarder.chat(rpb.ChatRequest(model="auto", prompt="book it"))]
    route = out[0].route
    assert route.pool == "small"
    assert "workflow lacks raw_prompt" in route.reason
    assert stack.workflows.created == []

"""A workflow the policy chose (``auto``) that does not answer: the request is answered
directly by the default pool, the failure stays visible; a workflow the caller named fails
as it did."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.workflow.v1 import workflow_pb2 as wpb
from lalo.workflow.v1 import workflow_pb2_grpc
from lalo_common.grpc_server import GrpcServer
from lalo_router.complex_path import WorkflowChat
from lalo_router.forwarding import ChatForwarder
from lalo_router.policy import PolicyRouter, PolicySpec
from lalo_router.replicas import ReplicaSet
from lalo_testing.inference import FakeServer, start_fake_inference
from prometheus_client import REGISTRY

TOKEN = "router-test-token"
SPEC = PolicySpec.model_validate({"default_pool": "small", "categories": {"agentic": "workflow"}})


@dataclass
class Agentic:
    label: str = "agentic"
    confidence: float = 0.9
    p_escalate: float = 0.1
    latency_ms: float = 1.0


class Classifier:
    def classify(self, text: str) -> Agentic:
        return Agentic()


class Workflows(workflow_pb2_grpc.WorkflowServiceServicer):
    """An orchestrator whose workflows end in ``final_state`` (or that is down)."""

    def __init__(self, final_state: int, down: bool = False) -> None:
        self.final_state = final_state
        self.down = down
        self.created = 0

    async def CreateWorkflow(self, request: Any, context: Any) -> wpb.Workflow:
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "orchestrator database is down")
        self.created += 1
        return wpb.Workflow(id="wf-7", model="workflow", state=wpb.WORKFLOW_STATE_PENDING)

    async def StreamEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield wpb.StreamEventsResponse(
            event=wpb.WorkflowEvent(
                id=1, workflow_id=request.id, type="plan.created", data_json=json.dumps({})
            )
        )
        yield wpb.StreamEventsResponse(complete=wpb.StreamComplete(state=self.final_state))

    async def GetWorkflow(self, request: Any, context: Any) -> wpb.Workflow:
        succeeded = self.final_state == wpb.WORKFLOW_STATE_SUCCEEDED
        return wpb.Workflow(
            id=request.id,
            state=self.final_state,
            final_answer="the workflow's answer" if succeeded else "",
            error="" if succeeded else "step 1 failed and the re-plan limit is reached",
            model="workflow",
        )


@dataclass
class Stack:
    forwarder: ChatForwarder
    small: FakeServer
    workflows: Workflows


@pytest.fixture
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    state, down = request.param
    small = await start_fake_inference("s", ["tiny"], service_token=TOKEN)
    replicas = ReplicaSet([("small", small.target)], service_token=TOKEN)
    await replicas.refresh()
    fake = Workflows(state, down=down)
    server = GrpcServer(service_names=[])
    workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(fake, server.server)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    router = PolicyRouter(SPEC, replicas, Classifier(), workflows_enabled=True)
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


def chat(model: str = "auto") -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model,
        request_id="req-1",
        chat=ipb.ChatInput(messages=[ipb.ChatMessage(role="user", content="book a flight")]),
    )


async def events(stack: Stack, model: str = "auto") -> list[rpb.ChatResponse]:
    return [event async for event in stack.forwarder.chat(chat(model))]


def fallbacks_to(pool: str) -> float:
    value = REGISTRY.get_sample_value("lalo_router_workflow_fallbacks_total", {"pool": pool})
    return value or 0.0


FAILED = (wpb.WORKFLOW_STATE_FAILED, False)
BUDGET = (wpb.WORKFLOW_STATE_BUDGET_EXCEEDED, False)
DOWN = (wpb.WORKFLOW_STATE_FAILED, True)
SUCCEEDED = (wpb.WORKFLOW_STATE_SUCCEEDED, False)


@pytest.mark.parametrize("stack", [FAILED, BUDGET], indirect=True)
async def test_an_auto_workflow_that_fails_is_answered_directly(stack: Stack) -> None:
    counted = fallbacks_to("small")
    out = await events(stack)
    assert fallbacks_to("small") == counted + 1
    kinds = [e.WhichOneof("event") for e in out]
    assert kinds[0] == "route"
    assert out[0].route.pool == "workflow"
    assert out[0].route.workflow_id == "wf-7"
    # The failure is told beside the answer, then the direct route names the workflow tried.
    fallback = next(
        e.progress
        for e in out
        if e.WhichOneof("event") == "progress" and e.progress.type == "workflow.fallback"
    )
    assert "step 1 failed" in fallback.text
    assert "tiny" in fallback.text
    second = [e.route for e in out[1:] if e.WhichOneof("event") == "route"]
    assert [(r.pool, r.model, r.workflow_id) for r in second] == [("small", "tiny", "wf-7")]
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
    assert "".join(e.chunk.text for e in out if e.WhichOneof("event") == "chunk") == (
        "the workflow's answer"
    )
    assert stack.small.servicer.calls == []


@pytest.mark.parametrize("stack", [FAILED], indirect=True)
async def test_a_workflow_the_caller_named_fails_as_it_did(stack: Stack) -> None:
    out = await events(stack, model="workflow")
    assert out[-1].WhichOneof("event") == "error"
    assert "step 1 failed" in out[-1].error.message
    assert stack.small.servicer.calls == []


@pytest.mark.parametrize("stack", [FAILED], indirect=True)
async def test_a_raw_prompt_is_not_sent_to_a_workflow(stack: Stack) -> None:
    out = [e async for e in stack.forwarder.chat(rpb.ChatRequest(model="auto", prompt="book it"))]
    route = out[0].route
    assert route.pool == "small"
    assert "workflow lacks raw_prompt" in route.reason
    assert stack.workflows.created == 0

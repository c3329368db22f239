"""The complex path: a chat request answered by a durable workflow.

When the policy routes a request to the ``workflow`` pool (or the caller names the
``workflow`` model), the router creates a workflow on the orchestrator, relays its events as
``WorkflowProgress`` and sends the final answer as ordinary chunks, so the gateway streams
it in OpenAI's chunk format like any other answer. A caller that goes away cancels the
workflow: nobody is left to read its answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.workflow.v1 import workflow_pb2 as wpb
from lalo_common.errors import InvalidArgument, error_for_code
from lalo_common.grpc_client import request_metadata

log = logging.getLogger(__name__)

WORKFLOW_POOL = "workflow"
WORKFLOW_MODEL = "workflow"
STATE_NAMES = {
    value: name.removeprefix("WORKFLOW_STATE_").lower() for name, value in wpb.WorkflowState.items()
}
STEP_STATE_NAMES = {
    value: name.removeprefix("STEP_STATE_").lower() for name, value in wpb.StepState.items()
}


def describe(event: wpb.WorkflowEvent) -> str:
    """One human-readable line per event (sent as progress, not as the answer)."""
    try:
        data: dict[str, Any] = json.loads(event.data_json) if event.data_json else {}
    except json.JSONDecodeError:
        data = {}
    if event.type == "plan.created":
        steps = data.get("steps") or []
        return f"planned {len(steps)} step(s)"
    if event.type == "plan.invalid":
        return f"plan rejected: {data.get('error', 'invalid plan')}"
    if event.type == "step.state":
        state = STEP_STATE_NAMES.get(event.step_state, "?")
        detail = data.get("tool") or data.get("kind") or ""
        return f"step {event.step_id} {state}" + (f" ({detail})" if detail else "")
    if event.type in ("workflow.state", "workflow.created"):
        return f"workflow {STATE_NAMES.get(event.workflow_state, '?')}"
    return str(event.type)


def refuse_what_workflows_ignore(request: rpb.ChatRequest) -> None:
    """A workflow's answer is plain text: refuse what it would silently ignore (``auto``
    never routes such requests here; this is for the ``workflow`` model named outright)."""
    if len(request.chat.tools):
        raise InvalidArgument(
            "the workflow model runs LALO's own tools and answers in text; it cannot return "
            "tool calls for 'tools': use model 'auto' or a model that supports tools",
            param="tools",
        )
    if request.sampling.response_format.type not in (
        ipb.ResponseFormat.TYPE_UNSPECIFIED,
        ipb.ResponseFormat.TEXT,
    ):
        raise InvalidArgument(
            "the workflow model answers in plain text; it cannot follow 'response_format'",
            param="response_format",
        )
    if request.sampling.logprobs:
        raise InvalidArgument("the workflow model cannot report logprobs", param="logprobs")


class WorkflowChat:
    def __init__(self, stub: Any, timeout_s: float = 30.0) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def run(
        self, request: rpb.ChatRequest, decision: rpb.RouteDecision
    ) -> AsyncGenerator[rpb.ChatResponse, None]:
        if request.WhichOneof("input") != "chat":
            raise InvalidArgument("workflows answer chat requests (messages), not raw prompts")
        refuse_what_workflows_ignore(request)
        metadata = request_metadata(request.request_id)
        create = wpb.CreateWorkflowRequest(
            owner=request.principal,
            request_id=request.request_id,
            messages=[wpb.Message(role=m.role, content=m.content) for m in request.chat.messages],
        )
        try:
            workflow = await self._stub.CreateWorkflow(
                create, timeout=self._timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise error_for_code(exc.code(), exc.details() or exc.code().name) from None
        decision.workflow_id = workflow.id
        decision.model = workflow.model or decision.model
        yield rpb.ChatResponse(route=decision)
        finished = False
        call = self._stub.StreamEvents(
            wpb.StreamEventsRequest(id=workflow.id, owner=request.principal), metadata=metadata
        )
        try:
            async for item in call:
                kind = item.WhichOneof("item")
                if kind == "event":
                    yield rpb.ChatResponse(
                        progress=rpb.WorkflowProgress(
                            workflow_id=workflow.id,
                            type=item.event.type,
                            text=describe(item.event),
                        )
                    )
                elif kind == "error":
                    finished = True
                    yield rpb.ChatResponse(
                        error=ipb.GenerateError(code=item.error.code, message=item.error.message)
                    )
                    return
                elif kind == "complete":
                    break
            final = await self._stub.GetWorkflow(
                wpb.GetWorkflowRequest(id=workflow.id, owner=request.principal),
                timeout=self._timeout_s,
                metadata=metadata,
            )
            finished = True
            async for response in self._answer(final):
                yield response
        except grpc.aio.AioRpcError as exc:
            finished = True
            yield rpb.ChatResponse(
                error=ipb.GenerateError(
                    code=exc.code().value[0], message=exc.details() or exc.code().name
                )
            )
        finally:
            call.cancel()
            if not finished:
                await self._cancel(workflow.id, request)

    async def _answer(self, workflow: wpb.Workflow) -> AsyncIterator[rpb.ChatResponse]:
        if workflow.state == wpb.WORKFLOW_STATE_SUCCEEDED:
            yield rpb.ChatResponse(chunk=ipb.GenerateChunk(text=workflow.final_answer))
            yield rpb.ChatResponse(
                complete=ipb.GenerateComplete(
                    finish_reason=ipb.FINISH_REASON_STOP,
                    usage=ipb.Usage(prompt_tokens=0, completion_tokens=workflow.usage.tokens),
                    model=workflow.model,
                )
            )
            return
        state = STATE_NAMES.get(workflow.state, "unknown")
        # ABORTED, not RESOURCE_EXHAUSTED, for a spent budget: retrying the same request
        # would spend it again.
        code = grpc.StatusCode.ABORTED
        yield rpb.ChatResponse(
            error=ipb.GenerateError(
                code=code.value[0],
                message=f"workflow {workflow.id} ended {state}: {workflow.error or 'no answer'}",
            )
        )

    async def _cancel(self, workflow_id: str, request: rpb.ChatRequest) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._stub.CancelWorkflow(
                wpb.CancelWorkflowRequest(
                    id=workflow_id, owner=request.principal, reason="the chat client went away"
                ),
                timeout=self._timeout_s,
                metadata=request_metadata(request.request_id),
            )
            log.info("cancelled workflow %s: its chat client went away", workflow_id)

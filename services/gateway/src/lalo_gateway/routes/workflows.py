"""/v1/workflows: durable multi-step agent workflows (create, get, list, events, cancel).

A thin edge over ``lalo.workflow.v1.WorkflowService`` on the router (which forwards to
the orchestrator). The owner of every workflow is the authenticated principal's subject;
a caller only ever sees their own. Events stream as SSE with ``id:`` set to the event's
sequence number, so a client resumes with ``Last-Event-ID`` (or ``?after=``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from lalo.workflow.v1 import workflow_pb2 as wpb
from lalo.workflow.v1 import workflow_pb2_grpc
from lalo_common.grpc_client import create_channel, request_metadata
from pydantic import BaseModel, ConfigDict, Field

from lalo_gateway.deps import RequestId, WorkflowReader, WorkflowWriter
from lalo_gateway.errors import APIError, from_grpc

router = APIRouter(tags=["workflows"])

MAX_MESSAGES = 256
KEEPALIVE_S = 15.0


class WorkflowMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str = Field(max_length=100_000)


class WorkflowBudgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(default=None, ge=1)
    max_wall_time_s: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_replans: int | None = Field(default=None, ge=0)


class CreateWorkflowBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[WorkflowMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    # Tool allowlist; omitted or empty means every tool the tools service offers.
    tools: list[str] = Field(default_factory=list, max_length=64)
    budgets: WorkflowBudgets = Field(default_factory=WorkflowBudgets)
    model: str = ""


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: str = Field(default="", max_length=1000)


STATE_NAMES = {
    value: name.removeprefix("WORKFLOW_STATE_").lower() for name, value in wpb.WorkflowState.items()
}
STEP_STATE_NAMES = {
    value: name.removeprefix("STEP_STATE_").lower() for name, value in wpb.StepState.items()
}
STEP_KIND_NAMES = {
    value: name.removeprefix("STEP_KIND_").lower() for name, value in wpb.StepKind.items()
}


def _json_or_none(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def workflow_json(workflow: wpb.Workflow) -> dict[str, Any]:
    return {
        "id": workflow.id,
        "object": "workflow",
        "state": STATE_NAMES.get(workflow.state, "unspecified"),
        "created_at": workflow.created_at_ms // 1000,
        "updated_at": workflow.updated_at_ms // 1000,
        "model": workflow.model or None,
        "messages": [{"role": m.role, "content": m.content} for m in workflow.messages],
        "tools": list(workflow.allowed_tools),
        "budgets": {
            "max_steps": workflow.budgets.max_steps,
            "max_wall_time_s": workflow.budgets.max_wall_time_s,
            "max_tokens": workflow.budgets.max_tokens,
            "max_replans": workflow.budgets.max_replans,
        },
        "usage": {
            "steps": workflow.usage.steps,
            "tokens": workflow.usage.tokens,
            "replans": workflow.usage.replans,
        },
        "steps": [
            {
                "id": s.id,
                "plan_version": s.plan_version,
                "index": s.index,
                "kind": STEP_KIND_NAMES.get(s.kind, "unspecified"),
                "state": STEP_STATE_NAMES.get(s.state, "unspecified"),
                "tool": s.tool or None,
                "arguments": _json_or_none(s.arguments_json),
                "prompt": s.prompt or None,
                "result": _json_or_none(s.result_json),
                "error": s.error or None,
                "attempts": s.attempts,
            }
            for s in workflow.steps
        ],
        "final_answer": workflow.final_answer or None,
        "error": workflow.error or None,
        "last_event_id": workflow.last_event_id,
    }


def event_json(event: wpb.WorkflowEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "workflow.event",
        "workflow_id": event.workflow_id,
        "type": event.type,
        "workflow_state": STATE_NAMES.get(event.workflow_state, "unspecified"),
        "step_id": event.step_id or None,
        "step_state": STEP_STATE_NAMES.get(event.step_state) if event.step_state else None,
        "data": _json_or_none(event.data_json) or {},
        "created_at": event.created_at_ms / 1000,
    }


def _error(exc: grpc.aio.AioRpcError) -> APIError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return APIError(404, details or "workflow not found", code="workflow_not_found")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return APIError(409, details, type_="invalid_request_error", code="workflow_finished")
    return from_grpc(code, details)


def _stub(request: Request) -> Any:
    """The WorkflowService stub on the router, made on first use and kept on app.state."""
    stub = getattr(request.app.state, "workflow_stub", None)
    if stub is None:
        settings = request.app.state.settings
        channel = create_channel(
            settings.router_target, service_token=settings.service_token.get_secret_value()
        )
        stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
        request.app.state.workflow_channel = channel
        request.app.state.workflow_stub = stub
    return stub


def _timeout(request: Request) -> float:
    return min(float(request.app.state.settings.request_timeout_s), 60.0)


@router.post("/v1/workflows", status_code=201)
async def create_workflow(
    body: CreateWorkflowBody, request: Request, principal: WorkflowWriter, request_id: RequestId
) -> dict[str, Any]:
    if body.model and not principal.may_use_model(body.model):
        raise APIError(
            404, f"The model '{body.model}' does not exist", param="model", code="model_not_found"
        )
    budgets = wpb.Budgets(**body.budgets.model_dump(exclude_none=True))
    try:
        workflow = await _stub(request).CreateWorkflow(
            wpb.CreateWorkflowRequest(
                messages=[wpb.Message(role=m.role, content=m.content) for m in body.messages],
                allowed_tools=body.tools,
                budgets=budgets,
                owner=principal.subject,
                model=body.model,
                request_id=request_id,
            ),
            timeout=_timeout(request),
            metadata=request_metadata(request_id),
        )
    except grpc.aio.AioRpcError as exc:
        raise _error(exc) from None
    return workflow_json(workflow)


@router.get("/v1/workflows")
async def list_workflows(
    request: Request,
    principal: WorkflowReader,
    request_id: RequestId,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    before: Annotated[str, Query(max_length=64)] = "",
) -> dict[str, Any]:
    try:
        reply = await _stub(request).ListWorkflows(
            wpb.ListWorkflowsRequest(owner=principal.subject, limit=limit + 1, before_id=before),
            timeout=_timeout(request),
            metadata=request_metadata(request_id),
        )
    except grpc.aio.AioRpcError as exc:
        raise _error(exc) from None
    workflows = list(reply.workflows)
    return {
        "object": "list",
        "data": [workflow_json(w) for w in workflows[:limit]],
        "has_more": len(workflows) > limit,
    }


@router.get("/v1/workflows/{workflow_id}")
async def get_workflow(
    workflow_id: str, request: Request, principal: WorkflowReader, request_id: RequestId
) -> dict[str, Any]:
    try:
        workflow = await _stub(request).GetWorkflow(
            wpb.GetWorkflowRequest(id=workflow_id, owner=principal.subject),
            timeout=_timeout(request),
            metadata=request_metadata(request_id),
        )
    except grpc.aio.AioRpcError as exc:
        raise _error(exc) from None
    return workflow_json(workflow)


@router.post("/v1/workflows/{workflow_id}/cancel")
async def cancel_workflow(
    workflow_id: str,
    request: Request,
    principal: WorkflowWriter,
    request_id: RequestId,
    body: CancelBody | None = None,
) -> dict[str, Any]:
    try:
        workflow = await _stub(request).CancelWorkflow(
            wpb.CancelWorkflowRequest(
                id=workflow_id, owner=principal.subject, reason=body.reason if body else ""
            ),
            timeout=_timeout(request),
            metadata=request_metadata(request_id),
        )
    except grpc.aio.AioRpcError as exc:
        raise _error(exc) from None
    return workflow_json(workflow)


@router.get("/v1/workflows/{workflow_id}/events")
async def workflow_events(
    workflow_id: str,
    request: Request,
    principal: WorkflowReader,
    request_id: RequestId,
    last_event_id: Annotated[str, Header(alias="Last-Event-ID")] = "",
    after: Annotated[int | None, Query(ge=0)] = None,
) -> StreamingResponse:
    """SSE: one ``event: <type>`` per workflow event, then ``event: complete`` and [DONE]."""
    if after is None:
        try:
            after = int(last_event_id) if last_event_id.strip() else 0
        except ValueError:
            raise APIError(400, "Last-Event-ID must be an event id (an integer)") from None
    call = _stub(request).StreamEvents(
        wpb.StreamEventsRequest(id=workflow_id, owner=principal.subject, after_event_id=after),
        metadata=request_metadata(request_id),
    )
    # Read the first item before answering, so an unknown id is a plain 404, not a stream.
    iterator = call.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    except grpc.aio.AioRpcError as exc:
        call.cancel()
        raise _error(exc) from None

    async def stream() -> AsyncIterator[bytes]:
        item = first
        pending: asyncio.Future[Any] | None = None
        try:
            while item is not None:
                kind = item.WhichOneof("item")
                if kind == "event":
                    payload = json.dumps(event_json(item.event))
                    head = f"id: {item.event.id}\nevent: {item.event.type}\n"
                    yield f"{head}data: {payload}\n\n".encode()
                elif kind == "complete":
                    payload = json.dumps(
                        {
                            "state": STATE_NAMES.get(item.complete.state, "unspecified"),
                            "last_event_id": item.complete.last_event_id,
                        }
                    )
                    yield f"event: complete\ndata: {payload}\n\n".encode()
                elif kind == "error":
                    payload = json.dumps(
                        {
                            "error": {
                                "message": item.error.message,
                                "type": "server_error",
                                "param": None,
                                "code": "workflow_stream_error",
                            }
                        }
                    )
                    yield f"event: error\ndata: {payload}\n\n".encode()
                # A step can run for minutes without an event: a comment line every
                # KEEPALIVE_S keeps proxies from closing an idle connection.
                pending = asyncio.ensure_future(iterator.__anext__())
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                    if done:
                        break
                    yield b": keepalive\n\n"
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    item = None
            yield b"data: [DONE]\n\n"
        except grpc.aio.AioRpcError as exc:
            error = _error(exc)
            yield f"event: error\ndata: {json.dumps(error.body())}\n\n".encode()
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
            call.cancel()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )

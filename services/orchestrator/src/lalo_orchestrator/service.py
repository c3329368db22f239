"""The gRPC ``lalo.workflow.v1.WorkflowService``: thin conversions over WorkflowApi."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
from lalo.workflow.v1 import workflow_pb2, workflow_pb2_grpc
from lalo_common.grpc_server import GrpcServer

from lalo_orchestrator.api import BudgetRequest, WorkflowApi
from lalo_orchestrator.celery_app import Enqueuer, create_celery
from lalo_orchestrator.events import follow_events
from lalo_orchestrator.runtime import build_store
from lalo_orchestrator.settings import OrchestratorSettings
from lalo_orchestrator.states import StepKind, StepState, WorkflowState
from lalo_orchestrator.store import EventRecord, StepRecord, WorkflowRecord

SERVICE_NAME = "lalo.workflow.v1.WorkflowService"

WORKFLOW_STATES = {s: getattr(workflow_pb2, f"WORKFLOW_STATE_{s.name}") for s in WorkflowState}
STEP_STATES = {s: getattr(workflow_pb2, f"STEP_STATE_{s.name}") for s in StepState}
STEP_KINDS = {k: getattr(workflow_pb2, f"STEP_KIND_{k.name}") for k in StepKind}


def _ms(seconds: float | None) -> int:
    return int((seconds or 0.0) * 1000)


def step_to_pb(step: StepRecord) -> workflow_pb2.Step:
    return workflow_pb2.Step(
        id=step.id,
        plan_version=step.plan_version,
        index=step.position,
        kind=STEP_KINDS[step.kind],
        state=STEP_STATES[step.state],
        tool=step.tool,
        arguments_json=json.dumps(step.arguments) if step.arguments is not None else "",
        prompt=step.prompt,
        result_json=json.dumps(step.result) if step.result is not None else "",
        error=step.error or "",
        attempts=step.attempts,
        idempotency_key=step.idempotency_key,
        tokens=step.tokens,
    )


def workflow_to_pb(workflow: WorkflowRecord) -> workflow_pb2.Workflow:
    budgets = workflow.budgets
    return workflow_pb2.Workflow(
        id=workflow.id,
        owner=workflow.owner,
        state=WORKFLOW_STATES[workflow.state],
        messages=[
            workflow_pb2.Message(role=m["role"], content=m["content"]) for m in workflow.messages
        ],
        allowed_tools=workflow.allowed_tools,
        budgets=workflow_pb2.Budgets(
            max_steps=budgets.max_steps,
            max_wall_time_s=budgets.max_wall_time_s,
            max_tokens=budgets.max_tokens,
            max_replans=budgets.max_replans,
        ),
        usage=workflow_pb2.Usage(
            steps=workflow.steps_used, tokens=workflow.tokens_used, replans=workflow.replans
        ),
        steps=[step_to_pb(s) for s in workflow.steps],
        final_answer=workflow.final_answer or "",
        error=workflow.error or "",
        model=workflow.model,
        created_at_ms=_ms(workflow.created_at),
        updated_at_ms=_ms(workflow.updated_at),
        last_event_id=workflow.event_seq,
    )


def event_to_pb(event: EventRecord) -> workflow_pb2.WorkflowEvent:
    return workflow_pb2.WorkflowEvent(
        id=event.seq,
        workflow_id=event.workflow_id,
        type=event.type,
        workflow_state=WORKFLOW_STATES[event.workflow_state],
        step_id=event.step_id or "",
        step_state=STEP_STATES[event.step_state] if event.step_state else 0,
        data_json=json.dumps(event.data),
        created_at_ms=_ms(event.created_at),
    )


def budgets_from_pb(budgets: workflow_pb2.Budgets) -> BudgetRequest:
    return BudgetRequest(
        max_steps=budgets.max_steps if budgets.HasField("max_steps") else None,
        max_wall_time_s=budgets.max_wall_time_s if budgets.HasField("max_wall_time_s") else None,
        max_tokens=budgets.max_tokens if budgets.HasField("max_tokens") else None,
        max_replans=budgets.max_replans if budgets.HasField("max_replans") else None,
    )


class WorkflowServicer(workflow_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, api: WorkflowApi, settings: OrchestratorSettings) -> None:
        self.api = api
        self.store = api.store
        self.settings = settings

    async def CreateWorkflow(
        self, request: workflow_pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        record = await asyncio.to_thread(
            self.api.create,
            owner=request.owner,
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            allowed_tools=list(request.allowed_tools),
            budgets=budgets_from_pb(request.budgets),
            model=request.model,
            request_id=request.request_id,
        )
        return workflow_to_pb(record)

    async def GetWorkflow(
        self, request: workflow_pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        record = await asyncio.to_thread(self.store.get, request.id, request.owner)
        return workflow_to_pb(record)

    async def ListWorkflows(
        self, request: workflow_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.ListWorkflowsResponse:
        limit = min(request.limit or 50, 200)
        records = await asyncio.to_thread(
            self.store.list_for_owner, request.owner, limit=limit, before_id=request.before_id
        )
        return workflow_pb2.ListWorkflowsResponse(workflows=[workflow_to_pb(r) for r in records])

    async def CancelWorkflow(
        self, request: workflow_pb2.CancelWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        record = await asyncio.to_thread(
            self.store.cancel, request.id, request.owner, request.reason
        )
        return workflow_to_pb(record)

    async def StreamEvents(
        self, request: workflow_pb2.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[workflow_pb2.StreamEventsResponse]:
        await asyncio.to_thread(self.store.get, request.id, request.owner)  # NotFound
        last = request.after_event_id
        async for event in follow_events(
            self.store,
            request.id,
            request.after_event_id,
            redis_url=self.settings.redis_url,
            prefix=self.settings.key_prefix,
            poll_s=1.0 if self.settings.redis_url else 0.25,
        ):
            last = event.seq
            yield workflow_pb2.StreamEventsResponse(event=event_to_pb(event))
        workflow = await asyncio.to_thread(self.store.get, request.id)
        yield workflow_pb2.StreamEventsResponse(
            complete=workflow_pb2.StreamComplete(
                state=WORKFLOW_STATES[workflow.state], last_event_id=max(last, workflow.event_seq)
            )
        )


def build_server(
    settings: OrchestratorSettings, api: WorkflowApi | None = None
) -> tuple[GrpcServer, WorkflowApi]:
    if api is None:
        app = create_celery(settings)
        api = WorkflowApi(build_store(settings), settings, Enqueuer(app, settings))
    server = GrpcServer(
        service_names=[SERVICE_NAME],
        service_token=settings.service_token.get_secret_value(),
        grace_period_s=settings.grace_period_s,
    )
    workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(
        WorkflowServicer(api, settings), server.server
    )
    return server, api

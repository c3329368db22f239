"""``lalo.workflow.v1.WorkflowService`` on the router: a pass-through to the orchestrator.

The gateway talks only to the router; workflow calls are forwarded unchanged to the
orchestrator's API (``LALO_ROUTER_ORCHESTRATOR_TARGET``) with the service credential and
the caller's request id. Statuses come back as they were (NOT_FOUND stays NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from lalo.workflow.v1 import workflow_pb2, workflow_pb2_grpc
from lalo_common.errors import Unavailable, error_for_code
from lalo_common.grpc_client import create_channel, request_metadata
from lalo_common.grpc_server import GrpcServer, request_id_of

WORKFLOW_SERVICE_NAME = workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name

Reply = TypeVar("Reply")


class WorkflowForwarder(workflow_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, target: str, *, service_token: str = "", timeout_s: float = 30.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = create_channel(target, service_token=service_token) if target else None
        self._stub = workflow_pb2_grpc.WorkflowServiceStub(self._channel) if target else None

    @property
    def stub(self) -> Any:
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _require_stub(self) -> Any:
        if self._stub is None:
            raise Unavailable(
                "workflows are not configured on this router (LALO_ROUTER_ORCHESTRATOR_TARGET)"
            )
        return self._stub

    async def _unary(
        self,
        method: Callable[..., Awaitable[Reply]],
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> Reply:
        try:
            return await method(
                request,
                timeout=self.timeout_s,
                metadata=request_metadata(request_id_of(context)),
            )
        except grpc.aio.AioRpcError as exc:
            raise error_for_code(exc.code(), exc.details() or exc.code().name) from None

    async def CreateWorkflow(
        self, request: workflow_pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        return await self._unary(self._require_stub().CreateWorkflow, request, context)

    async def GetWorkflow(
        self, request: workflow_pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        return await self._unary(self._require_stub().GetWorkflow, request, context)

    async def ListWorkflows(
        self, request: workflow_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.ListWorkflowsResponse:
        return await self._unary(self._require_stub().ListWorkflows, request, context)

    async def CancelWorkflow(
        self, request: workflow_pb2.CancelWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        return await self._unary(self._require_stub().CancelWorkflow, request, context)

    async def StreamEvents(
        self, request: workflow_pb2.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[workflow_pb2.StreamEventsResponse]:
        # No deadline: a workflow's events last as long as the workflow does.
        call = self._require_stub().StreamEvents(
            request, metadata=request_metadata(request_id_of(context))
        )
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise error_for_code(exc.code(), exc.details() or exc.code().name) from None
        finally:
            call.cancel()


def add_workflow_service(
    server: GrpcServer, target: str, *, service_token: str = ""
) -> WorkflowForwarder:
    """Registers the pass-through (always: without a target it answers UNAVAILABLE)."""
    forwarder = WorkflowForwarder(target, service_token=service_token)
    workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(forwarder, server.server)
    return forwarder

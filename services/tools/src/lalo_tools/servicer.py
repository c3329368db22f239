"""The gRPC edge: converts lalo.tools.v1 messages to registry calls and back."""

from __future__ import annotations

import json

import grpc
from lalo.tools.v1 import tools_pb2, tools_pb2_grpc
from lalo_common.errors import InvalidArgument

from lalo_tools.core import InvokeOutcome, Tool
from lalo_tools.registry import CallContext, RequestedLimits, ToolRegistry


def spec_to_pb(tool: Tool) -> tools_pb2.ToolSpec:
    return tools_pb2.ToolSpec(
        name=tool.name,
        description=tool.description,
        parameters_json=json.dumps(tool.parameters, separators=(",", ":")),
        limits=tools_pb2.ToolLimits(
            timeout_s=tool.limits.timeout_s,
            max_output_bytes=tool.limits.max_output_bytes,
            max_rows=tool.limits.max_rows,
        ),
    )


def limits_from_pb(limits: tools_pb2.ToolLimits) -> RequestedLimits:
    return RequestedLimits(
        timeout_s=limits.timeout_s if limits.HasField("timeout_s") else None,
        max_output_bytes=limits.max_output_bytes if limits.HasField("max_output_bytes") else None,
        max_rows=limits.max_rows if limits.HasField("max_rows") else None,
    )


def outcome_to_pb(outcome: InvokeOutcome) -> tools_pb2.InvokeResponse:
    if outcome.error is not None:
        error = outcome.error
        return tools_pb2.InvokeResponse(
            error=tools_pb2.ToolError(
                code=error.code.value,
                message=error.message,
                path=error.path,
                retryable=error.retryable,
            ),
            duration_ms=outcome.duration_ms,
        )
    assert outcome.result is not None
    result = outcome.result
    return tools_pb2.InvokeResponse(
        result=tools_pb2.ToolResult(
            content_json=result.content_json(), text=result.text, truncated=result.truncated
        ),
        duration_ms=outcome.duration_ms,
    )


class ToolsServicer(tools_pb2_grpc.ToolsServiceServicer):
    def __init__(self, registry: ToolRegistry) -> None:
        self._registry = registry

    async def ListTools(
        self, request: tools_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.ListToolsResponse:
        tools = self._registry.list(list(request.names))
        return tools_pb2.ListToolsResponse(tools=[spec_to_pb(t) for t in tools])

    async def Invoke(
        self, request: tools_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.InvokeResponse:
        if not request.tool:
            raise InvalidArgument("InvokeRequest.tool is required")
        outcome = await self._registry.invoke(
            request.tool,
            request.arguments_json,
            limits=limits_from_pb(request.limits),
            allowed_tools=list(request.allowed_tools),
            context=CallContext(
                request_id=request.request_id,
                workflow_id=request.workflow_id,
                step_id=request.step_id,
                idempotency_key=request.idempotency_key,
            ),
        )
        return outcome_to_pb(outcome)

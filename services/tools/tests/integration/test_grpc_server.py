"""The real gRPC server (grpc.aio on a free port) called through real channels."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lalo.tools.v1 import tools_pb2, tools_pb2_grpc
from lalo_common.grpc_client import create_channel
from lalo_common.grpc_server import GrpcServer
from lalo_tools.server import SERVICE_NAME, build_server
from lalo_tools.settings import ToolsSettings

pytestmark = pytest.mark.integration

TOKEN = "tools-integration-token-0001"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[GrpcServer]:
    settings = ToolsSettings(
        service_token=TOKEN,
        listen_address="127.0.0.1:0",
        enabled_tools=["calculator", "http_fetch"],
        http_allowed_hosts=["example.com"],
        grace_period_s=0.5,
    )
    srv = build_server(settings)
    await srv.start("127.0.0.1:0")
    await srv.set_serving(True)
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: GrpcServer) -> AsyncIterator[tools_pb2_grpc.ToolsServiceStub]:
    channel = create_channel(f"127.0.0.1:{server.port}", service_token=TOKEN)
    yield tools_pb2_grpc.ToolsServiceStub(channel)
    await channel.close()


async def test_list_tools(stub: tools_pb2_grpc.ToolsServiceStub) -> None:
    response = await stub.ListTools(tools_pb2.ListToolsRequest())
    names = [t.name for t in response.tools]
    assert names == ["calculator", "http_fetch"]
    calc = response.tools[0]
    schema = json.loads(calc.parameters_json)
    assert schema["required"] == ["expression"]
    assert calc.description
    assert calc.limits.timeout_s > 0
    assert calc.limits.max_output_bytes > 0
    only = await stub.ListTools(tools_pb2.ListToolsRequest(names=["http_fetch", "python"]))
    assert [t.name for t in only.tools] == ["http_fetch"]


async def test_invoke_returns_a_result(stub: tools_pb2_grpc.ToolsServiceStub) -> None:
    response = await stub.Invoke(
        tools_pb2.InvokeRequest(
            tool="calculator",
            arguments_json=json.dumps({"expression": "0.1 + 0.2"}),
            request_id="req-1",
            workflow_id="wf-1",
            step_id="step-1",
            idempotency_key="wf-1/step-1",
        )
    )
    assert response.WhichOneof("outcome") == "result"
    assert response.result.text == "0.3"
    assert json.loads(response.result.content_json)["exact"] is True
    assert not response.result.truncated
    assert response.duration_ms >= 0


@pytest.mark.parametrize(
    ("arguments", "path"),
    [
        ("{}", "$"),
        ('{"expression": 42}', "$.expression"),
        ('{"expression": "1", "extra": true}', "$"),
        ("{not json", "$"),
    ],
)
async def test_schema_errors_come_back_structured(
    stub: tools_pb2_grpc.ToolsServiceStub, arguments: str, path: str
) -> None:
    response = await stub.Invoke(
        tools_pb2.InvokeRequest(tool="calculator", arguments_json=arguments)
    )
    assert response.WhichOneof("outcome") == "error"
    assert response.error.code == tools_pb2.ToolError.INVALID_ARGUMENTS
    assert response.error.path == path
    assert response.error.message


async def test_tool_errors_for_the_planner(stub: tools_pb2_grpc.ToolsServiceStub) -> None:
    unknown = await stub.Invoke(tools_pb2.InvokeRequest(tool="keyboard", arguments_json="{}"))
    assert unknown.error.code == tools_pb2.ToolError.UNKNOWN_TOOL
    refused = await stub.Invoke(
        tools_pb2.InvokeRequest(
            tool="http_fetch", arguments_json=json.dumps({"url": "http://169.254.169.254/"})
        )
    )
    assert refused.error.code == tools_pb2.ToolError.NOT_ALLOWED
    off_list = await stub.Invoke(
        tools_pb2.InvokeRequest(
            tool="calculator", arguments_json='{"expression": "1"}', allowed_tools=["http_fetch"]
        )
    )
    assert off_list.error.code == tools_pb2.ToolError.NOT_ALLOWED
    division = await stub.Invoke(
        tools_pb2.InvokeRequest(tool="calculator", arguments_json='{"expression": "1/0"}')
    )
    assert division.error.code == tools_pb2.ToolError.EXECUTION_ERROR


async def test_per_call_limits(stub: tools_pb2_grpc.ToolsServiceStub) -> None:
    response = await stub.Invoke(
        tools_pb2.InvokeRequest(
            tool="calculator",
            arguments_json='{"expression": "2 ** 3000"}',
            limits=tools_pb2.ToolLimits(max_output_bytes=200),
        )
    )
    assert response.result.truncated
    assert len(response.result.text.encode()) <= 200


async def test_empty_tool_name_is_invalid_argument(stub: tools_pb2_grpc.ToolsServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Invoke(tools_pb2.InvokeRequest(tool="", arguments_json="{}"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("token", ["", "wrong-token"])
async def test_calls_without_the_service_token_are_unauthenticated(
    server: GrpcServer, token: str
) -> None:
    channel = create_channel(f"127.0.0.1:{server.port}", service_token=token)
    try:
        stub = tools_pb2_grpc.ToolsServiceStub(channel)
        for call in (
            stub.ListTools(tools_pb2.ListToolsRequest()),
            stub.Invoke(
                tools_pb2.InvokeRequest(tool="calculator", arguments_json='{"expression": "1"}')
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


async def test_health_needs_no_token(server: GrpcServer) -> None:
    channel = create_channel(f"127.0.0.1:{server.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()

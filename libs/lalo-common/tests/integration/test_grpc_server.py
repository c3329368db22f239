"""The server factory against a real grpc.aio server on a loopback port: error mapping,
the service credential check, health and reflection."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lalo_common.auth import SERVICE_TOKEN_METADATA
from lalo_common.errors import InvalidArgument, NotFound, error_param
from lalo_common.grpc_server import GrpcServer

SERVICE = "lalo.test.Echo"
TOKEN = "s3cret-token"
SECRET_DETAIL = "database password is hunter2"


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"invalid":
        raise InvalidArgument("the request is invalid")
    if request == b"missing":
        raise NotFound("no such thing")
    if request == b"bad-top-p":
        raise InvalidArgument("top_p must be in (0, 1]", param="top_p")
    if request == b"crash":
        raise RuntimeError(SECRET_DETAIL)
    return b"echo:" + request


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    if request == b"invalid":
        raise InvalidArgument("bad stream request")
    yield b"one"
    yield b"two"
    if request == b"crash-late":
        raise RuntimeError(SECRET_DETAIL)
    if request == b"invalid-late":
        raise InvalidArgument("went wrong after two")


def _handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )


async def _start(token: str) -> tuple[GrpcServer, str]:
    server = GrpcServer(service_names=[SERVICE], service_token=token, grace_period_s=0.1)
    server.server.add_generic_rpc_handlers((_handler(),))
    port = await server.start("127.0.0.1:0")
    await server.set_serving(True)
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
async def open_server() -> AsyncIterator[str]:
    server, target = await _start("")
    yield target
    await server.stop()


@pytest.fixture(scope="module")
async def token_server() -> AsyncIterator[str]:
    server, target = await _start(TOKEN)
    yield target
    await server.stop()


async def _unary_call(target: str, payload: bytes, metadata: Any = None) -> bytes:
    async with grpc.aio.insecure_channel(target) as channel:
        result: bytes = await channel.unary_unary(f"/{SERVICE}/Unary")(
            payload, metadata=metadata, timeout=10
        )
        return result


async def _stream_call(target: str, payload: bytes, metadata: Any = None) -> list[bytes]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Stream")(payload, metadata=metadata, timeout=10)
        return [item async for item in call]


async def test_plain_calls_pass_through(open_server: str) -> None:
    assert await _unary_call(open_server, b"hi") == b"echo:hi"
    assert await _stream_call(open_server, b"hi") == [b"one", b"two"]


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (b"invalid", grpc.StatusCode.INVALID_ARGUMENT, "the request is invalid"),
        (b"missing", grpc.StatusCode.NOT_FOUND, "no such thing"),
    ],
)
async def test_lalo_errors_map_to_their_status(
    open_server: str, payload: bytes, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _unary_call(open_server, payload)
    assert info.value.code() is code
    assert info.value.details() == message


async def test_the_field_at_fault_travels_in_trailing_metadata(open_server: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as named:
        await _unary_call(open_server, b"bad-top-p")
    assert (named.value.code(), error_param(named.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_p",
    )
    with pytest.raises(grpc.aio.AioRpcError) as unnamed:
        await _unary_call(open_server, b"invalid")
    assert error_param(unnamed.value) is None


async def test_unexpected_exception_is_internal_without_its_message(
    open_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="lalo_common.grpc_server"),
        pytest.raises(grpc.aio.AioRpcError) as info,
    ):
        await _unary_call(open_server, b"crash")
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert SECRET_DETAIL not in (info.value.details() or "")
    assert info.value.details() == "internal error"
    # The operator still sees what happened.
    assert any(SECRET_DETAIL in (r.exc_text or "") for r in caplog.records)


async def test_stream_errors_before_first_item_map_to_status(open_server: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stream_call(open_server, b"invalid")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "bad stream request"


@pytest.mark.parametrize(
    ("payload", "code", "details"),
    [
        (b"crash-late", grpc.StatusCode.INTERNAL, "internal error"),
        (b"invalid-late", grpc.StatusCode.INVALID_ARGUMENT, "went wrong after two"),
    ],
)
async def test_stream_errors_after_items_end_the_stream_with_status(
    open_server: str, payload: bytes, code: grpc.StatusCode, details: str
) -> None:
    received: list[bytes] = []

    async def consume(call: AsyncIterator[bytes]) -> None:
        async for item in call:
            received.append(item)

    async with grpc.aio.insecure_channel(open_server) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Stream")(payload, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await consume(call)
    assert received == [b"one", b"two"]
    assert info.value.code() is code
    assert info.value.details() == details


@pytest.mark.parametrize("metadata", [None, ((SERVICE_TOKEN_METADATA, "wrong"),)])
async def test_service_token_required(token_server: str, metadata: Any) -> None:
    for call in (_unary_call, _stream_call):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(token_server, b"hi", metadata)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "credential" in (info.value.details() or "")


async def test_service_token_accepted(token_server: str) -> None:
    metadata = ((SERVICE_TOKEN_METADATA, TOKEN),)
    assert await _unary_call(token_server, b"hi", metadata) == b"echo:hi"
    assert await _stream_call(token_server, b"hi", metadata) == [b"one", b"two"]


async def test_health_and_reflection_need_no_token(token_server: str) -> None:
    async with grpc.aio.insecure_channel(token_server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = set()
        async for response in call:
            names |= {s.name for s in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_stop_reports_not_serving() -> None:
    server, target = await _start("")
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await server.set_serving(False)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await server.stop()

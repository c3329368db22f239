"""create_channel presents the service credential on every call kind it makes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from lalo_common.auth import REQUEST_ID_METADATA, SERVICE_TOKEN_METADATA
from lalo_common.grpc_client import create_channel, request_metadata
from lalo_common.grpc_server import GrpcServer

SERVICE = "lalo.test.Meta"
TOKEN = "client-token"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for item in context.invocation_metadata() or ():
        seen.setdefault(item.key, []).append(str(item.value))
    return seen


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    seen = _metadata(context)
    return repr(sorted(seen.items())).encode()


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    seen = _metadata(context)
    yield repr(sorted(seen.items())).encode()


async def _bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    seen = repr(sorted(_metadata(context).items())).encode()
    async for request in requests:
        yield request + b" " + seen


@pytest.fixture(scope="module")
async def target() -> AsyncIterator[str]:
    server = GrpcServer(service_names=[SERVICE], service_token=TOKEN, grace_period_s=0.1)
    server.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(_stream),
                    "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
                },
            ),
        )
    )
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop()


async def test_token_sent_on_unary_unary_calls(target: str) -> None:
    async with create_channel(target, service_token=TOKEN) as channel:
        reply = await channel.unary_unary(f"/{SERVICE}/Unary")(b"", timeout=5)
    assert f"('{SERVICE_TOKEN_METADATA}', ['{TOKEN}'])".encode() in reply


async def test_token_sent_on_unary_stream_calls(target: str) -> None:
    async with create_channel(target, service_token=TOKEN) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)
        replies = [item async for item in call]
    assert len(replies) == 1
    assert f"('{SERVICE_TOKEN_METADATA}', ['{TOKEN}'])".encode() in replies[0]


@pytest.mark.parametrize("as_metadata_object", [False, True])
async def test_caller_metadata_is_kept_next_to_the_token(
    target: str, as_metadata_object: bool
) -> None:
    given = request_metadata("req-123")
    metadata = grpc.aio.Metadata(*given) if as_metadata_object else given
    async with create_channel(target, service_token=TOKEN) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Stream")(b"", metadata=metadata, timeout=5)
        (reply,) = [item async for item in call]
        unary = await channel.unary_unary(f"/{SERVICE}/Unary")(b"", metadata=metadata, timeout=5)
    for seen in (reply, unary):
        assert f"('{REQUEST_ID_METADATA}', ['req-123'])".encode() in seen
        assert f"('{SERVICE_TOKEN_METADATA}', ['{TOKEN}'])".encode() in seen


async def test_token_sent_on_stream_stream_calls(target: str) -> None:
    async def requests() -> AsyncIterator[bytes]:
        for word in (b"one", b"two"):
            yield word

    async with create_channel(target, service_token=TOKEN) as channel:
        call = channel.stream_stream(f"/{SERVICE}/Bidi")(requests(), timeout=5)
        replies = [item async for item in call]
    assert [reply.split(b" ", 1)[0] for reply in replies] == [b"one", b"two"]
    assert all(f"('{SERVICE_TOKEN_METADATA}', ['{TOKEN}'])".encode() in r for r in replies)


async def test_token_channel_reports_connectivity_and_closes(target: str) -> None:
    channel = create_channel(target, service_token=TOKEN)
    await asyncio.wait_for(channel.channel_ready(), timeout=5)
    assert channel.get_state() is grpc.ChannelConnectivity.READY
    await channel.close()
    assert channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN


async def test_channel_without_token_is_refused(target: str) -> None:
    async with create_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(f"/{SERVICE}/Unary")(b"", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        call = channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [item async for item in call]
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_request_metadata_is_empty_without_an_id() -> None:
    assert request_metadata("") == ()
    assert request_metadata("abc") == ((REQUEST_ID_METADATA, "abc"),)

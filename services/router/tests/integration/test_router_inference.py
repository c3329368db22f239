"""The router in front of two real inference-small servers serving the tiny model.

Everything runs in this process on loopback ports (one llama.cpp thread per engine: on a
busy 2-core machine ggml's spinning thread pool makes more threads much slower).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.inference.v1 import inference_pb2_grpc
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.grpc_client import create_channel
from lalo_common.grpc_server import GrpcServer
from lalo_inference_small.catalog import ModelSpec
from lalo_inference_small.engine import BatchEngine
from lalo_inference_small.server import build_server as build_inference
from lalo_inference_small.server import load_engine
from lalo_inference_small.settings import InferenceSmallSettings
from lalo_router.replicas import ReplicaSet
from lalo_router.server import build_server as build_router
from lalo_router.settings import RouterSettings
from lalo_testing.inference import GenerateResult, collect, wait_until

pytestmark = pytest.mark.integration

MODEL_ID = "tiny-chat"
TOKEN = "router-integration-token"


@dataclass
class Inference:
    engine: BatchEngine
    server: GrpcServer
    target: str
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.server.stop()


@dataclass
class Stack:
    inference: list[Inference]
    replicas: ReplicaSet
    router: router_pb2_grpc.RouterServiceStub
    channel: grpc.aio.Channel

    async def chat(self, request: rpb.ChatRequest, deadline_s: float = 60) -> GenerateResult:
        return await collect(self.router.Chat(request, timeout=deadline_s))


def chat(
    content: str = "Hello there", *, model: str = "auto", request_id: str = "", **sampling: Any
) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        request_id=request_id,
        model=model,
        chat=ipb.ChatInput(messages=[ipb.ChatMessage(role="user", content=content)]),
        sampling=ipb.SamplingParams(**sampling),
    )


async def _start_inference(model_path: Path) -> Inference:
    spec = ModelSpec(id=MODEL_ID, path=model_path, n_ctx=512, parallel=4, threads=1)
    engine = await asyncio.to_thread(load_engine, spec)
    settings = InferenceSmallSettings.model_validate(
        {"LALO_SERVICE_TOKEN": TOKEN, "grace_period_s": 0}
    )
    server = build_inference(settings, {MODEL_ID: engine})
    port = await server.start("127.0.0.1:0")
    await server.set_serving(True)
    return Inference(engine, server, f"127.0.0.1:{port}")


@pytest.fixture
async def stack(tiny_model_path: Path) -> AsyncIterator[Stack]:
    inference = [await _start_inference(tiny_model_path) for _ in range(2)]
    replicas = ReplicaSet([("small", i.target) for i in inference], service_token=TOKEN)
    await replicas.refresh()
    settings = RouterSettings.model_validate(
        {"LALO_SERVICE_TOKEN": TOKEN, "grace_period_s": 0, "classifier": "none"}
    )
    router = build_router(settings, replicas)
    port = await router.start("127.0.0.1:0")
    await router.set_serving(True)
    channel = create_channel(f"127.0.0.1:{port}", service_token=TOKEN)
    try:
        yield Stack(inference, replicas, router_pb2_grpc.RouterServiceStub(channel), channel)
    finally:
        await channel.close()
        await router.stop()
        await replicas.close()
        for item in inference:
            await item.stop()
            await asyncio.to_thread(item.engine.close)


async def test_tokens_pass_through_unchanged(stack: Stack) -> None:
    routed = await stack.chat(chat(max_tokens=24, temperature=0.0, logprobs=True))
    assert routed.route.pool == "small"
    assert routed.route.model == MODEL_ID
    assert routed.route.replica in {i.target for i in stack.inference}

    async with create_channel(routed.route.replica, service_token=TOKEN) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        direct = await collect(
            stub.Generate(
                ipb.GenerateRequest(
                    model=MODEL_ID,
                    chat=ipb.ChatInput(
                        messages=[ipb.ChatMessage(role="user", content="Hello there")]
                    ),
                    sampling=ipb.SamplingParams(max_tokens=24, temperature=0.0, logprobs=True),
                ),
                timeout=60,
            )
        )
    assert [c.text for c in routed.chunks] == [c.text for c in direct.chunks]
    assert [t.token_id for t in routed.tokens] == [t.token_id for t in direct.tokens]
    assert routed.complete == direct.complete


async def test_explicit_model_and_errors_pass_through(stack: Stack) -> None:
    result = await stack.chat(chat(model=MODEL_ID, max_tokens=4))
    assert result.route.reason == "explicit model"
    assert result.complete.usage.completion_tokens <= 4

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.chat(chat(model="gpt-17"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.chat(chat("word " * 600, max_tokens=4))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length is 512 tokens" in (info.value.details() or "")

    # Caller mistakes do not count against the replicas.
    assert all(r.consecutive_failures == 0 for r in stack.replicas.replicas)


async def test_concurrent_requests_use_both_replicas(stack: Stack) -> None:
    results = await asyncio.gather(
        *(stack.chat(chat(f"Question {i}", max_tokens=48, temperature=0.0)) for i in range(8))
    )
    assert all(r.finish_reason == ipb.FINISH_REASON_LENGTH for r in results)
    assert {r.route.replica for r in results} == {i.target for i in stack.inference}


async def test_cancelling_through_the_router_frees_the_sequence(stack: Stack) -> None:
    engine_by_target = {i.target: i.engine for i in stack.inference}
    model = stack.inference[0].engine.model
    no_eog = {t: -100.0 for t in range(model.n_vocab) if model.is_eog(t)}
    call = stack.router.Chat(chat(logit_bias=no_eog, top_logprobs=20), timeout=60)
    route = (await call.read()).route
    assert (await call.read()).WhichOneof("event") == "chunk"
    engine = engine_by_target[route.replica]
    call.cancel()
    await wait_until(lambda: engine.running == 0)
    await wait_until(lambda: all(r.outstanding == 0 for r in stack.replicas.replicas))


async def test_stopping_a_replica_under_load(stack: Stack) -> None:
    """Requests keep succeeding on the other replica once one goes away."""
    first, second = stack.inference
    stopped = asyncio.Event()
    before: list[GenerateResult] = []
    after: list[GenerateResult] = []

    async def client(n: int) -> None:
        for i in range(6):
            issued_after_stop = stopped.is_set()
            result = await stack.chat(chat(f"Client {n} request {i}", max_tokens=24))
            (after if issued_after_stop else before).append(result)
            if i == 1 and n == 0:
                await first.stop()
                stopped.set()

    await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(4))), timeout=120)
    assert after, "no request was issued after the stop"
    for result in after:
        assert result.error is None, result.error
        assert result.complete is not None
        assert result.route.replica == second.target
    # A request streaming from the replica when it stopped may end with an in-band error
    # (nothing is retried after output); it never hangs and never loses its status.
    for result in before:
        assert result.complete is not None or result.error is not None
    # The router learns the replica is gone.
    await stack.replicas.refresh(timeout_s=2.0)
    assert [r.healthy for r in stack.replicas.replicas] == [False, True]

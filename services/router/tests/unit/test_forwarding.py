"""Chat forwarding against fake inference servers on loopback ports: route choice, retry
before the first token, in-band errors after it, load-aware choice, circuit breaking,
request ids, deadlines and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from lalo_router.forwarding import ChatForwarder
from lalo_router.policy import PolicyRouter, PolicySpec
from lalo_router.replicas import FAILURES_TO_OPEN, ReplicaSet
from lalo_testing.inference import (
    FakeServer,
    GenerateResult,
    collect,
    start_fake_inference,
    wait_until,
)

TOKEN = "router-test-token"


@dataclass
class Fleet:
    a: FakeServer  # pool small, serves "tiny"
    b: FakeServer  # pool small, serves "tiny"
    c: FakeServer  # pool large, serves "big"
    replicas: ReplicaSet
    forwarder: ChatForwarder

    async def chat(self, model: str = "tiny", **kwargs: Any) -> GenerateResult:
        time_remaining = kwargs.pop("time_remaining", None)
        return await collect(self.forwarder.chat(request(model, **kwargs), time_remaining))


def request(model: str = "tiny", *, request_id: str = "", **sampling: Any) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        request_id=request_id,
        model=model,
        chat=ipb.ChatInput(messages=[ipb.ChatMessage(role="user", content="hi")]),
        sampling=ipb.SamplingParams(**sampling),
    )


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    a = await start_fake_inference("a", ["tiny"], service_token=TOKEN)
    b = await start_fake_inference("b", ["tiny"], service_token=TOKEN)
    c = await start_fake_inference("c", ["big"], service_token=TOKEN)
    replicas = ReplicaSet(
        [("small", a.target), ("small", b.target), ("large", c.target)], service_token=TOKEN
    )
    await replicas.refresh()
    forwarder = ChatForwarder(
        replicas,
        PolicyRouter(PolicySpec(default_pool="small"), replicas, None).route,
        timeout_s=30,
    )
    yield Fleet(a, b, c, replicas, forwarder)
    await replicas.close()
    for server in (a, b, c):
        await server.stop()


async def test_explicit_model_goes_to_the_replica_serving_it(fleet: Fleet) -> None:
    result = await fleet.chat("big")
    assert result.route.model == "big"
    assert result.route.pool == "large"
    assert result.route.replica == fleet.c.target
    assert result.route.reason == "explicit model"
    assert result.text == "c-0 c-1 c-2 "
    assert result.finish_reason == ipb.FINISH_REASON_LENGTH
    assert [call.request.model for call in fleet.c.servicer.calls] == ["big"]


async def test_auto_goes_to_the_default_pool(fleet: Fleet) -> None:
    for model in ("auto", ""):
        result = await fleet.chat(model)
        assert result.route.pool == "small"
        assert result.route.model == "tiny"
        assert result.route.replica in {fleet.a.target, fleet.b.target}
    assert not fleet.c.servicer.calls


async def test_request_is_forwarded_unchanged(fleet: Fleet) -> None:
    await fleet.chat("big", max_tokens=7, temperature=0.5, stop=["x"], request_id="r-1")
    (call,) = fleet.c.servicer.calls
    assert call.request.request_id == "r-1"
    assert call.request.chat.messages[0].content == "hi"
    assert call.request.sampling.max_tokens == 7
    assert call.request.sampling.temperature == pytest.approx(0.5)
    assert list(call.request.sampling.stop) == ["x"]


async def test_prompt_input_is_forwarded(fleet: Fleet) -> None:
    req = rpb.ChatRequest(model="big", prompt="complete me")
    await collect(fleet.forwarder.chat(req))
    (call,) = fleet.c.servicer.calls
    assert call.request.WhichOneof("input") == "prompt"
    assert call.request.prompt == "complete me"


async def test_unknown_model_is_not_found(fleet: Fleet) -> None:
    with pytest.raises(NotFound, match="gpt-17"):
        await fleet.chat("gpt-17")


async def test_failure_before_output_retries_another_replica(fleet: Fleet) -> None:
    fleet.a.servicer.behaviour = "fail_before"
    result = await fleet.chat()
    assert result.route.replica == fleet.b.target
    assert result.text == "b-0 b-1 b-2 "
    assert len(fleet.a.servicer.calls) == 1
    assert fleet.replicas.replicas[0].consecutive_failures == 1


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED],
    ids=["busy", "replica-stopping"],
)
async def test_other_retryable_failures_before_output(fleet: Fleet, code: grpc.StatusCode) -> None:
    # A stopping server cancels its calls: the client sees CANCELLED from the replica.
    fleet.a.servicer.behaviour = "fail_before"
    fleet.a.servicer.fail_code = code
    result = await fleet.chat()
    assert result.route.replica == fleet.b.target
    assert result.complete is not None


async def test_every_replica_failing_is_unavailable(fleet: Fleet) -> None:
    for fake in (fleet.a, fleet.b):
        fake.servicer.behaviour = "fail_before"
    with pytest.raises(Unavailable, match="every replica for 'tiny' failed"):
        await fleet.chat()
    assert len(fleet.a.servicer.calls) == len(fleet.b.servicer.calls) == 1


async def test_caller_errors_are_not_retried(fleet: Fleet) -> None:
    fleet.a.servicer.behaviour = "fail_before"
    fleet.a.servicer.fail_code = grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument, match="failed before output"):
        await fleet.chat()
    assert not fleet.b.servicer.calls
    # The caller's mistake says nothing about the replica's health.
    assert fleet.replicas.replicas[0].consecutive_failures == 0


async def test_failure_after_output_is_in_band_and_not_retried(fleet: Fleet) -> None:
    fleet.a.servicer.behaviour = "fail_after"
    result = await fleet.chat()
    assert result.route.replica == fleet.a.target
    assert result.text == "a-0 a-1 "
    assert result.complete is None
    assert result.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "died mid-stream" in result.error.message
    assert not fleet.b.servicer.calls


async def test_busier_replica_is_avoided(fleet: Fleet) -> None:
    fleet.a.servicer.behaviour = "hang"
    hanging = fleet.forwarder.chat(request())
    first = await hanging.__anext__()
    assert first.route.replica == fleet.a.target
    try:
        # a has one request outstanding, b none: the next request goes to b.
        result = await fleet.chat()
        assert result.route.replica == fleet.b.target
    finally:
        await hanging.aclose()
    await wait_until(lambda: fleet.replicas.replicas[0].outstanding == 0)


async def test_circuit_opens_after_repeated_failures(fleet: Fleet) -> None:
    fleet.a.servicer.behaviour = "fail_before"
    for _ in range(FAILURES_TO_OPEN):
        result = await fleet.chat()
        assert result.route.replica == fleet.b.target
    assert len(fleet.a.servicer.calls) == FAILURES_TO_OPEN
    for _ in range(3):
        await fleet.chat()
    # Open: a is no longer tried at all.
    assert len(fleet.a.servicer.calls) == FAILURES_TO_OPEN


async def test_no_available_replica_is_unavailable(fleet: Fleet) -> None:
    for replica in fleet.replicas.replicas[:2]:
        replica.healthy = False
    with pytest.raises((Unavailable, NotFound)):
        await fleet.chat()


async def test_replicas_at_their_cap_are_resource_exhausted(fleet: Fleet) -> None:
    c = fleet.replicas.replicas[2]
    c.max_outstanding = 1
    c.outstanding = 1
    with pytest.raises(ResourceExhausted, match="'big' is at its limit"):
        await fleet.chat("big")
    assert not fleet.c.servicer.calls
    c.outstanding = 0
    assert (await fleet.chat("big")).complete is not None


async def test_request_id_travels_as_metadata(fleet: Fleet) -> None:
    await fleet.chat("big", request_id="req-42")
    await fleet.chat("big")
    assert fleet.c.servicer.request_ids() == ["req-42", ""]


async def test_caller_deadline_is_propagated(fleet: Fleet) -> None:
    await fleet.chat("big", time_remaining=5.0)
    await fleet.chat("big")
    bounded, default = fleet.c.servicer.calls
    assert bounded.time_remaining is not None
    # (The wire rounds deadlines up a little.)
    assert 0 < bounded.time_remaining <= 5.5
    assert default.time_remaining is not None
    assert 10.0 < default.time_remaining <= 31.0


class SlowStrategy:
    """Classifies after ``delay_s``, as an LLM strategy on a busy CPU would."""

    name = "slow"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def classify(
        self, text: str, *, time_remaining: float | None = None, request_id: str = ""
    ) -> Any:
        await asyncio.sleep(self.delay_s)
        return SimpleNamespace(label="chat", confidence=1.0, p_escalate=0.0, latency_ms=1.0)

    async def close(self) -> None:
        return None


async def test_classification_time_comes_out_of_the_callers_deadline(fleet: Fleet) -> None:
    slow = PolicyRouter(PolicySpec(), fleet.replicas, None, strategy=SlowStrategy(0.3))
    forwarder = ChatForwarder(fleet.replicas, slow.route, timeout_s=30)
    await collect(forwarder.chat(request("auto"), time_remaining=5.0))
    (call,) = [*fleet.a.servicer.calls, *fleet.b.servicer.calls]
    assert call.time_remaining is not None
    assert call.time_remaining <= 5.0 - 0.3 + 0.1  # the wire rounds deadlines a little
    with pytest.raises(DeadlineExceeded, match="while it was being routed"):
        await collect(forwarder.chat(request("auto"), time_remaining=0.1))


async def test_caller_deadlines_do_not_open_the_circuit(fleet: Fleet) -> None:
    """Impatient callers must not take a healthy replica out of service."""
    fleet.c.servicer.behaviour = "hang"
    for _ in range(FAILURES_TO_OPEN + 1):
        result = await fleet.chat("big", time_remaining=0.2)
        assert result.error is not None
        assert result.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    fleet.c.servicer.behaviour = "ok"
    result = await fleet.chat("big")
    assert result.finish_reason == ipb.FINISH_REASON_LENGTH


async def test_closing_the_stream_cancels_the_backend_call(fleet: Fleet) -> None:
    fleet.c.servicer.behaviour = "hang"
    stream = fleet.forwarder.chat(request("big"))
    assert (await stream.__anext__()).WhichOneof("event") == "route"
    assert (await stream.__anext__()).WhichOneof("event") == "chunk"
    await stream.aclose()
    (call,) = fleet.c.servicer.calls
    await asyncio.wait_for(call.cancelled.wait(), timeout=10)
    assert fleet.replicas.replicas[2].outstanding == 0


# ---- through a real router server ----


@pytest.fixture
async def router(
    fleet: Fleet, start_router: Callable[..., Awaitable[router_pb2_grpc.RouterServiceStub]]
) -> router_pb2_grpc.RouterServiceStub:
    return await start_router(fleet.replicas, TOKEN)


async def test_router_server_streams_route_then_tokens(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    events = [e.WhichOneof("event") async for e in router.Chat(request("big"), timeout=10)]
    assert events == ["route", "chunk", "chunk", "chunk", "complete"]


async def test_router_server_maps_errors_to_statuses(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(router.Chat(request("gpt-17"), timeout=10))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "gpt-17" in (info.value.details() or "")
    for fake in (fleet.a, fleet.b):
        fake.servicer.behaviour = "fail_before"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(router.Chat(request("tiny"), timeout=10))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_router_server_lists_backend_models(
    router: router_pb2_grpc.RouterServiceStub,
) -> None:
    reply = await router.ListModels(ipb.ListModelsRequest(), timeout=10)
    assert {m.id for m in reply.models} == {"tiny", "big"}


async def test_cancelling_the_router_call_cancels_the_backend_call(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    fleet.c.servicer.behaviour = "hang"
    call = router.Chat(request("big"), timeout=30)
    assert (await call.read()).WhichOneof("event") == "route"
    assert (await call.read()).WhichOneof("event") == "chunk"
    call.cancel()
    (backend,) = fleet.c.servicer.calls
    await asyncio.wait_for(backend.cancelled.wait(), timeout=10)
    await wait_until(lambda: fleet.replicas.replicas[2].outstanding == 0)


async def test_router_deadline_reaches_the_backend(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    fleet.c.servicer.behaviour = "hang"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(router.Chat(request("big"), timeout=0.5))
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    (backend,) = fleet.c.servicer.calls
    assert backend.time_remaining is not None
    assert backend.time_remaining <= 0.6  # the wire rounds deadlines a little
    await asyncio.wait_for(backend.cancelled.wait(), timeout=10)

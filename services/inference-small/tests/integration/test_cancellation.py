"""Cancellation, deadlines, the waiting queue and load figures, against a real server.

Long generations (the tiny model's 2048-token context, end-of-generation banned) last
thousands of decode steps, so a sequence that disappears early was freed by the cancellation and
not by running to its end; a spy on the engine's finish path tells the two apart.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import ResourceExhausted, Unavailable
from lalo_inference_small.catalog import ModelSpec
from lalo_inference_small.engine import Failed, TextDelta
from lalo_inference_small.sampling import SamplingConfig
from lalo_inference_small.server import load_engine
from lalo_testing.inference import wait_until

pytestmark = pytest.mark.integration

LONG = 1500


@pytest.fixture(scope="module")
def engine_options() -> dict[str, Any]:
    return {"n_ctx": 4096, "parallel": 4, "threads": 1, "n_batch": 512}


@pytest.fixture
def finished_ids(served: Any, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Request ids of sequences the engine finished (stop or length), not cancelled ones."""
    engine = served.engine
    original = engine._finish
    seen: set[str] = set()
    lock = threading.Lock()

    def spy(seq: Any, reason: str) -> None:
        with lock:
            seen.add(seq.request.request_id)
        original(seq, reason)

    monkeypatch.setattr(engine, "_finish", spy)
    return seen


def _long(served: Any, prompt: str, request_id: str, **sampling: Any) -> pb.GenerateRequest:
    """A request that runs to the end of the context unless stopped: end-of-generation
    tokens are banned (a random model samples them now and then)."""
    model = served.engine.model
    no_eog = {t: -100.0 for t in range(model.n_vocab) if model.is_eog(t)}
    sampling.setdefault("top_logprobs", 20)  # more work per token: a longer stream
    return served.prompt(prompt, request_id=request_id, logit_bias=no_eog, **sampling)


async def _idle(served: Any) -> None:
    await wait_until(lambda: served.engine.running == 0 and served.engine.waiting == 0)


async def test_client_cancel_frees_the_sequence(served: Any, finished_ids: set[str]) -> None:
    call = served.stub.Generate(_long(served, "Once upon a time", "cancel-me"))
    first = await call.read()
    assert first.WhichOneof("event") == "chunk"
    assert served.engine.running == 1
    call.cancel()
    await _idle(served)
    assert "cancel-me" not in finished_ids
    # The server keeps working.
    after = await served.generate(served.prompt("Hello again", max_tokens=4, temperature=0.0))
    assert after.error is None
    assert after.complete is not None


async def test_deadline_frees_the_sequence(served: Any, finished_ids: set[str]) -> None:
    request = _long(served, "The sea and the sky", "deadline")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _event in served.stub.Generate(request, timeout=0.3):
            pass
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await _idle(served)
    assert "deadline" not in finished_ids
    after = await served.generate(served.prompt("Hello again", max_tokens=4, temperature=0.0))
    assert after.error is None
    assert after.complete is not None


async def test_load_report_and_waiting_queue(served: Any, finished_ids: set[str]) -> None:
    """Six long streams on four slots: four run, two wait; cancelling frees everything."""
    calls = [
        served.stub.Generate(_long(served, f"Story {i}", f"load-{i}", max_tokens=LONG))
        for i in range(6)
    ]
    readers = [asyncio.ensure_future(call.read()) for call in calls]
    await wait_until(lambda: served.engine.running == 4 and served.engine.waiting == 2)
    report = await served.stub.GetLoad(pb.GetLoadRequest())
    assert (report.running, report.waiting, report.max_sequences) == (4, 2, 4)
    assert 0.0 < report.kv_cache_usage <= 1.0

    # A waiting request whose caller leaves stops counting as waiting at once.
    waiting = [request.request_id for request, _handle in list(served.engine._pending)]
    assert len(waiting) == 2
    calls[int(waiting[0].removeprefix("load-"))].cancel()
    await wait_until(lambda: served.engine.waiting == 1)
    assert served.engine.running == 4

    for call in calls:
        call.cancel()
    await _idle(served)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    report = await served.stub.GetLoad(pb.GetLoadRequest())
    assert (report.running, report.waiting) == (0, 0)
    assert not finished_ids & {f"load-{i}" for i in range(6)}


async def test_many_concurrent_streams_all_complete(served: Any) -> None:
    """Twelve streams on four slots: every one completes with its own greedy output."""
    prompts = [f"Question {i}: what about the number {i * 7}?" for i in range(12)]

    def request(prompt: str) -> pb.GenerateRequest:
        return served.prompt(prompt, max_tokens=24, temperature=0.0)

    alone = [await served.generate(request(p)) for p in prompts]
    together = await asyncio.gather(*(served.generate(request(p)) for p in prompts))
    for solo, batched in zip(alone, together, strict=True):
        assert batched.error is None
        assert batched.finish_reason == pb.FINISH_REASON_LENGTH
        assert batched.complete.usage.completion_tokens == 24
        assert batched.text == solo.text
    await _idle(served)


async def test_prompts_longer_than_a_batch_are_prefilled_in_chunks(served: Any) -> None:
    """Two ~1200-token prompts (n_batch 512) prefill in chunks side by side, interleaved
    with a generating sequence, and produce their one-at-a-time greedy output."""
    long_prompts = [
        f"Document {i}: " + "The meeting is on Monday at ten o'clock in the morning. " * 100
        for i in range(2)
    ]

    def request(prompt: str) -> pb.GenerateRequest:
        return served.prompt(prompt, max_tokens=16, temperature=0.0)

    alone = [await served.generate(request(p)) for p in long_prompts]
    assert all(r.complete.usage.prompt_tokens > 1024 for r in alone)
    together = await asyncio.gather(
        served.generate(served.prompt("Short one", max_tokens=64, temperature=0.0)),
        *(served.generate(request(p)) for p in long_prompts),
    )
    assert [r.text for r in together[1:]] == [r.text for r in alone]
    assert together[0].finish_reason == pb.FINISH_REASON_LENGTH


async def test_full_queue_is_resource_exhausted(tiny_model_path: Any) -> None:
    engine = await asyncio.to_thread(
        load_engine,
        ModelSpec(id="one-slot", path=tiny_model_path, n_ctx=1024, parallel=1, threads=1),
        1,
    )
    try:
        model = engine.model
        no_eog = {t: -100.0 for t in range(model.n_vocab) if model.is_eog(t)}
        config = SamplingConfig(logit_bias=no_eog, logprobs=True, top_logprobs=20)
        prepared = await asyncio.to_thread(engine.prepare, "r", config, prompt="Hello")
        running = engine.generate(prepared)
        await running.__anext__()
        queued = engine.generate(prepared)
        waiting = asyncio.ensure_future(queued.__anext__())
        await wait_until(lambda: engine.waiting == 1)
        with pytest.raises(ResourceExhausted, match="1 requests waiting"):
            await engine.generate(prepared).__anext__()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await queued.aclose()
        await running.aclose()
        await wait_until(lambda: engine.running == 0 and engine.waiting == 0)
    finally:
        await asyncio.to_thread(engine.close)


async def test_closing_the_engine_fails_open_requests(tiny_model_path: Any) -> None:
    engine = await asyncio.to_thread(
        load_engine, ModelSpec(id="closing", path=tiny_model_path, n_ctx=4096, threads=1)
    )
    no_eog = {t: -100.0 for t in range(engine.model.n_vocab) if engine.model.is_eog(t)}
    # Thousands of tokens with logprobs: still generating when the engine closes.
    config = SamplingConfig(logit_bias=no_eog, logprobs=True, top_logprobs=20)
    prepared = await asyncio.to_thread(engine.prepare, "r", config, prompt="Hello")
    stream = engine.generate(prepared)
    assert isinstance(await stream.__anext__(), TextDelta)
    await asyncio.to_thread(engine.close)
    events = [event async for event in stream]
    assert isinstance(events[-1], Failed)
    assert "shutting down" in events[-1].message
    with pytest.raises(Unavailable, match="shutting down"):
        await engine.generate(prepared).__anext__()

"""The engine's stream hold on the real tiny model: tokens grouped, nothing lost or late."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from lalo_inference_small.catalog import ModelSpec
from lalo_inference_small.engine import BatchEngine, Event, Finished, RequestHandle, TextDelta
from lalo_inference_small.sampling import SamplingConfig
from lalo_inference_small.server import load_engine

pytestmark = pytest.mark.integration

PROMPT = "Once upon a time, in a land far away,"


@pytest.fixture
def make_engine(tiny_model_path: Path) -> Iterator[type[BatchEngine]]:
    engines: list[BatchEngine] = []

    def make(hold_ms: float) -> BatchEngine:
        spec = ModelSpec(id="tiny", path=tiny_model_path, n_ctx=512, threads=1, parallel=2)
        engine = load_engine(spec, stream_hold_ms=hold_ms)
        engines.append(engine)
        return engine

    yield make  # type: ignore[misc]
    for engine in engines:
        engine.close()


async def run(engine: BatchEngine, prompt: str = PROMPT, max_tokens: int = 48) -> list[Event]:
    config = SamplingConfig(max_tokens=max_tokens, temperature=0.0, logprobs=True)
    request = await asyncio.to_thread(engine.prepare, "r", config, prompt=prompt)
    return [event async for event in engine.generate(request)]


def deltas(events: list[Event]) -> list[TextDelta]:
    return [e for e in events if isinstance(e, TextDelta)]


@pytest.fixture
def pushed(monkeypatch: pytest.MonkeyPatch) -> dict[RequestHandle, list[Event]]:
    """What the engine thread hands over, message by message (the consumer merges whatever
    piled up while it was busy, so what it yields depends on the machine's load)."""
    events: dict[RequestHandle, list[Event]] = {}
    push = RequestHandle.push

    def recording(self: RequestHandle, event: Event) -> None:
        events.setdefault(self, []).append(event)
        push(self, event)

    monkeypatch.setattr(RequestHandle, "push", recording)
    return events


async def test_without_a_hold_every_token_is_its_own_message(make_engine, pushed) -> None:  # type: ignore[no-untyped-def]
    events = await run(make_engine(0.0))
    (sent,) = pushed.values()
    assert [len(d.tokens) for d in deltas(sent)] == [1] * 48
    assert isinstance(events[-1], Finished)
    assert sum(len(d.tokens) for d in deltas(events)) == events[-1].completion_tokens == 48


async def test_a_hold_groups_tokens_and_loses_none(make_engine, pushed) -> None:  # type: ignore[no-untyped-def]
    alone = await run(make_engine(0.0))
    pushed.clear()
    # A hold far longer than the whole answer: the first token goes at once, the rest wait
    # for the end and go out before Finished.
    grouped = await run(make_engine(60_000.0))
    (sent,) = pushed.values()
    assert [len(d.tokens) for d in deltas(sent)] == [1, 47]
    assert isinstance(sent[-1], Finished)
    assert isinstance(grouped[-1], Finished)
    assert grouped[-1] == alone[-1]
    assert "".join(d.text for d in deltas(grouped)) == "".join(d.text for d in deltas(alone))
    assert [t for d in deltas(grouped) for t in d.tokens] == [
        t for d in deltas(alone) for t in d.tokens
    ]


async def test_held_output_goes_out_before_a_prompt_chunk_is_processed(make_engine, pushed) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(60_000.0)
    config = SamplingConfig(max_tokens=400, temperature=0.0, logprobs=True)
    first = await asyncio.to_thread(engine.prepare, "a", config, prompt=PROMPT)
    stream = engine.generate(first)
    received = [await anext(stream)]  # generating now
    await asyncio.sleep(0.02)  # a few more tokens made and held
    # Another request's long prompt joins the batch: that step is slow, so what the first
    # request holds is sent before it rather than after.
    second = asyncio.create_task(run(engine, prompt="word " * 80, max_tokens=4))
    received += [event async for event in stream]
    await second
    long_answer = max(pushed.values(), key=lambda sent: len(deltas(sent)))
    assert len(deltas(long_answer)) >= 3  # first token, flushed before the prompt chunk, the rest
    assert sum(len(d.tokens) for d in deltas(received)) == 400

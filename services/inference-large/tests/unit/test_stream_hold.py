"""The stream hold (``stream_hold.py``) on scripted event sources: which chunks travel
together, that nothing is lost or reordered, and that closing it aborts the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from lalo_inference_large.domain import Chunk, Complete, Event, StreamError, TokenInfo
from lalo_inference_large.stream_hold import hold_chunks, merge


def chunk(i: int) -> Chunk:
    return Chunk(text=f"t{i} ", tokens=(TokenInfo(i, f"t{i}", -0.1 * i, f"t{i}".encode()),))


class Source:
    """Yields ``count`` chunks ``gap_s`` apart, then ``last``; records being closed."""

    def __init__(self, count: int, gap_s: float, last: Event | Exception | None = None) -> None:
        self.count, self.gap_s = count, gap_s
        self.last: Event | Exception = last or Complete("stop", 5, count, "m")
        self.closed = False

    async def events(self) -> AsyncIterator[Event]:
        try:
            for i in range(self.count):
                if i:
                    await asyncio.sleep(self.gap_s)
                yield chunk(i)
            if isinstance(self.last, Exception):
                raise self.last
            yield self.last
        finally:
            self.closed = True


async def collect(source: Source, hold_s: float) -> list[Event]:
    return [event async for event in hold_chunks(source.events(), hold_s)]


def chunks_of(events: list[Event]) -> list[Chunk]:
    return [e for e in events if isinstance(e, Chunk)]


def assert_same_output(events: list[Event], count: int) -> None:
    merged = merge(chunks_of(events))
    assert merged.text == "".join(f"t{i} " for i in range(count))
    assert [t.token_id for t in merged.tokens] == list(range(count))


async def test_no_hold_passes_every_event_through() -> None:
    events = await collect(Source(6, 0.0), 0.0)
    assert len(chunks_of(events)) == 6
    assert isinstance(events[-1], Complete)


async def test_fast_tokens_travel_together_and_the_first_alone() -> None:
    events = await collect(Source(30, 0.002), 0.05)
    chunks = chunks_of(events)
    assert len(chunks[0].tokens) == 1  # time to first token is not held
    assert len(chunks) < 10  # 29 fast tokens in a few messages
    assert_same_output(events, 30)
    assert isinstance(events[-1], Complete)


async def test_slow_tokens_go_one_by_one() -> None:
    events = await collect(Source(5, 0.03), 0.01)
    assert [len(c.tokens) for c in chunks_of(events)] == [1, 1, 1, 1, 1]


async def test_slow_tokens_are_not_delayed() -> None:
    """By the hold's clock a second passes between tokens (hold 0.5 s): each must reach the
    consumer at once, before the source makes the next one (a held token would arrive only
    when its half-second hold ran out)."""
    now = 0.0
    received = [asyncio.Event() for _ in range(4)]
    late: list[int] = []

    async def source() -> AsyncIterator[Event]:
        nonlocal now
        for i in range(4):
            now += 1.0
            yield chunk(i)
            try:
                async with asyncio.timeout(0.2):
                    await received[i].wait()
            except TimeoutError:
                late.append(i)
        yield Complete("stop", 1, 4, "m")

    async for event in hold_chunks(source(), 0.5, clock=lambda: now):
        if isinstance(event, Chunk):
            received[event.tokens[0].token_id].set()
    assert late == []


async def test_a_held_chunk_goes_when_the_hold_ends_even_without_a_successor() -> None:
    """Two fast tokens, then a long pause: the second is sent when its hold ends, before
    the third token exists."""
    gate = asyncio.Event()
    seen: list[Event] = []

    async def source() -> AsyncIterator[Event]:
        yield chunk(0)
        await asyncio.sleep(0.001)
        yield chunk(1)
        await gate.wait()
        yield chunk(2)
        yield Complete("stop", 1, 3, "m")

    async def consume() -> None:
        async for event in hold_chunks(source(), 0.02):
            seen.append(event)

    task = asyncio.create_task(consume())
    for _ in range(200):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert [c.text for c in chunks_of(seen)] == ["t0 ", "t1 "]
    gate.set()
    await task
    assert_same_output(seen, 3)


async def test_what_waits_goes_before_an_error() -> None:
    error = StreamError(grpc.StatusCode.INTERNAL, "engine failed")
    events = await collect(Source(8, 0.001, last=error), 0.05)
    assert events[-1] == error
    assert_same_output(events[:-1], 8)


async def test_a_source_exception_reaches_the_caller_after_what_waits() -> None:
    source = Source(4, 0.001, last=RuntimeError("broken"))
    seen: list[Event] = []

    async def consume() -> None:
        async for event in hold_chunks(source.events(), 0.05):
            seen.append(event)

    with pytest.raises(RuntimeError, match="broken"):
        await consume()
    assert_same_output(seen, 4)


async def test_closing_early_closes_the_source() -> None:
    """The caller went away: the backend's iterator must be closed (that aborts the request
    in the engine), whether the reader was waiting inside it or not."""
    source = Source(1000, 0.001)
    stream = hold_chunks(source.events(), 0.05)
    assert isinstance(await anext(stream), Chunk)
    await stream.aclose()  # type: ignore[attr-defined]
    assert source.closed


async def test_cancelling_the_consumer_closes_the_source() -> None:
    source = Source(1000, 0.001)

    async def consume() -> None:
        async for _ in hold_chunks(source.events(), 0.05):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed

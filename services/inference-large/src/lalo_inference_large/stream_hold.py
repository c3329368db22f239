"""A few tokens to a message when they come fast.

Every streamed message costs CPU in each hop it crosses (this server's send, the router's
relay, the gateway's SSE write: ~0.3-0.4 ms per hop on a small machine, see inference-small's
README). A GPU batch of many streams makes thousands of tokens a second, and relaying each
alone spends the gateway's and router's cores on per-message overhead. So, as inference-small
does inside its engine, tokens that follow the previous one by less than the hold wait to go
with the next ones:

* the first chunk always goes at once (time to first token is unchanged);
* a chunk that follows its predecessor by ``hold`` or more goes at once too (slow streams
  are not delayed at all);
* a held chunk waits at most ``hold`` (then what waits goes, even if no token followed);
* ``Complete`` and ``StreamError`` send what waits before them.

The contract already allows several tokens per ``GenerateChunk`` (as OpenAI's streams do).
The backend's events are read by a task of their own, so the hold's timer never cancels a
read inside the engine's stream; closing this iterator cancels that task, which closes the
backend's iterator (and so aborts the request in the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from lalo_common.aio import aclose

from lalo_inference_large.domain import Chunk, Event


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


def merge(chunks: list[Chunk]) -> Chunk:
    """One chunk with the text, tokens and tool calls of ``chunks``, in order."""
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(
        text="".join(c.text for c in chunks),
        tokens=tuple(token for c in chunks for token in c.tokens),
        tool_calls=tuple(call for c in chunks for call in c.tool_calls),
    )


async def hold_chunks(
    events: AsyncIterator[Event],
    hold_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Event]:
    """``events`` with fast chunks merged (see the module's rules); ``hold_s <= 0`` passes
    every event through as it comes."""
    if hold_s <= 0:
        async for event in events:
            yield event
        return
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def read() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # raised again in the consumer, where the caller sees it
            queue.put_nowait(_Failed(exc))
        queue.put_nowait(_END)

    reader = asyncio.create_task(read())
    held: list[Chunk] = []
    deadline = 0.0
    last_arrival: float | None = None
    try:
        while True:
            if held:
                try:
                    async with asyncio.timeout(max(deadline - clock(), 0.0)):
                        item = await queue.get()
                except TimeoutError:
                    yield merge(held)
                    held = []
                    continue
            else:
                item = await queue.get()
            if isinstance(item, Chunk):
                now = clock()
                fast = last_arrival is not None and now - last_arrival < hold_s
                last_arrival = now
                if fast:
                    if not held:
                        deadline = now + hold_s
                    held.append(item)
                    continue
                if held:
                    yield merge(held)
                    held = []
                yield item
                continue
            if held:
                yield merge(held)
                held = []
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]  # Complete or StreamError
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await aclose(events)

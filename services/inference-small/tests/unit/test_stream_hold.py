"""How generated tokens are grouped into messages: the hold rule and the consumer hand-off."""

from __future__ import annotations

import asyncio
import threading

import pytest
from lalo_inference_small.engine import (
    Finished,
    RequestHandle,
    TextDelta,
    TokenOut,
    send_now,
)


def grouping(gaps_s: list[float], hold_s: float) -> list[int]:
    """Tokens per message for tokens made after the given gaps (the first at t=0)."""
    groups: list[int] = []
    now, last, oldest, waiting, sent = 0.0, float("-inf"), 0.0, 0, False
    for gap in [0.0, *gaps_s]:
        now += gap
        if not waiting:
            oldest = now
        waiting += 1
        if send_now(now, now - last, oldest, hold_s, first=not sent):
            groups.append(waiting)
            waiting, sent = 0, True
        last = now
    return groups + ([waiting] if waiting else [])  # the end flushes the rest


def test_no_hold_sends_every_token_alone() -> None:
    assert grouping([0.017] * 9, hold_s=0.0) == [1] * 10


def test_fast_tokens_go_a_few_to_a_message_and_wait_at_most_the_hold() -> None:
    # ~58 tok/s (this machine's TinyLlama-shaped model) with a 40 ms hold.
    groups = grouping([0.017] * 12, hold_s=0.040)
    assert groups[0] == 1  # the first token is never held
    assert groups[1:] == [3, 3, 3, 3]
    # The oldest token of a group of three waited two gaps: 34 ms <= 40 ms.


def test_tokens_slower_than_the_hold_go_one_by_one() -> None:
    # A large model at ~20 tok/s: holding would only add latency.
    assert grouping([0.050] * 6, hold_s=0.040) == [1] * 7


def test_a_step_slower_than_predicted_delays_held_tokens_by_the_difference_only() -> None:
    # Predicted 10 ms, one step took 100 ms: the two tokens held over it go out with the
    # token after it (the engine also sends held output before a step it knows is slow,
    # one that processes a prompt chunk; see test_engine_stream_hold).
    assert grouping([0.010, 0.010, 0.100, 0.010], hold_s=0.040) == [1, 3, 1]


def _token(i: int) -> TokenOut:
    return TokenOut(i, f"t{i}", -0.5, f"t{i}".encode())


async def test_handle_merges_deltas_that_arrived_while_the_consumer_was_busy() -> None:
    loop = asyncio.get_running_loop()
    handle = RequestHandle(loop)
    wakeups = 0
    schedule = loop.call_soon_threadsafe

    def counting(*args):  # type: ignore[no-untyped-def]
        nonlocal wakeups
        wakeups += 1
        return schedule(*args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:

        def engine_thread() -> None:
            for i in range(3):
                handle.push(TextDelta(f"t{i}", (_token(i),)))
            handle.push(Finished("stop", 5, 3))

        # The loop is blocked while the engine pushes, as when the consumer is busy sending.
        thread = threading.Thread(target=engine_thread)
        thread.start()
        thread.join()
        events = await asyncio.wait_for(handle.take(), 5)
    finally:
        del loop.call_soon_threadsafe
    assert events == [
        TextDelta("t0t1t2", (_token(0), _token(1), _token(2))),
        Finished("stop", 5, 3),
    ]
    assert wakeups == 1  # one wake-up for four events


async def test_handle_never_loses_a_wakeup() -> None:
    handle = RequestHandle(asyncio.get_running_loop())
    for i in range(50):
        pushed = threading.Thread(target=handle.push, args=(TextDelta(f"t{i}", (_token(i),)),))
        pushed.start()
        events = await asyncio.wait_for(handle.take(), 5)
        pushed.join()
        assert events == [TextDelta(f"t{i}", (_token(i),))]


@pytest.mark.parametrize("hold_ms", [0.0, 1000.0])
def test_settings_accept_the_hold(hold_ms: float, monkeypatch: pytest.MonkeyPatch) -> None:
    from lalo_inference_small.settings import InferenceSmallSettings

    monkeypatch.setenv("LALO_INFERENCE_SMALL_STREAM_HOLD_MS", str(hold_ms))
    assert InferenceSmallSettings().stream_hold_ms == hold_ms


def test_settings_refuse_a_negative_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    from lalo_inference_small.settings import InferenceSmallSettings
    from pydantic import ValidationError

    monkeypatch.setenv("LALO_INFERENCE_SMALL_STREAM_HOLD_MS", "-1")
    with pytest.raises(ValidationError, match="stream_hold_ms"):
        InferenceSmallSettings()

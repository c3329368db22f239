"""In-process rate limiting: the embedded-mode twin of the Redis limiter."""

from __future__ import annotations

import asyncio

import pytest
from lalo_gateway.security.errors import RateLimited
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.ratelimit import InProcessRateLimiter
from lalo_gateway.security.rbac import Role


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(rpm: int = 0, tpm: int = 0, key_id: str = "k1") -> Principal:
    return Principal(
        subject="s", role=Role.DEVELOPER, kind="api_key", key_id=key_id, rpm=rpm, tpm=tpm
    )


async def test_requests_per_minute_is_exact_under_concurrency() -> None:
    limiter = InProcessRateLimiter()
    p = principal(rpm=7)
    results = await asyncio.gather(*(limiter.admit(p) for _ in range(30)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 7
    assert all(isinstance(r, RateLimited) for r in results if isinstance(r, Exception))


async def test_window_reopens_after_a_minute_and_retry_after_says_when() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    p = principal(rpm=2)
    first = await limiter.admit(p)
    assert first.remaining_requests == 1
    await limiter.admit(p)
    clock.now += 20
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(p)
    assert refused.value.retry_after_s == 40
    assert "2 requests per minute" in refused.value.message
    assert refused.value.openai_type == "requests"
    clock.now += 40
    assert (await limiter.admit(p)).remaining_requests == 1


async def test_tokens_per_minute_counts_real_usage() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    p = principal(tpm=100)
    await limiter.admit(p)
    await limiter.charge_tokens(p, 60)
    admission = await limiter.admit(p)
    assert admission.remaining_tokens == 40
    await limiter.charge_tokens(p, 70)  # overshoot by one response is allowed...
    with pytest.raises(RateLimited, match="100 tokens per minute") as refused:
        await limiter.admit(p)  # ...and the next request waits for the window
    assert refused.value.openai_type == "tokens"
    clock.now += 60
    await limiter.admit(p)


async def test_unlimited_principals_are_not_counted() -> None:
    limiter = InProcessRateLimiter()
    p = principal()
    for _ in range(100):
        admission = await limiter.admit(p)
    assert admission.remaining_requests is None


async def test_keys_are_independent() -> None:
    limiter = InProcessRateLimiter()
    await limiter.admit(principal(rpm=1, key_id="a"))
    await limiter.admit(principal(rpm=1, key_id="b"))
    with pytest.raises(RateLimited):
        await limiter.admit(principal(rpm=1, key_id="a"))


async def test_rejected_requests_do_not_count() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    p = principal(rpm=1)
    await limiter.admit(p)
    for _ in range(5):
        with pytest.raises(RateLimited):
            await limiter.admit(p)
    clock.now += 61
    await limiter.admit(p)

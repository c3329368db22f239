"""The Redis limiter admits exactly ``rpm`` requests however many clients race for them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from lalo_gateway.security.errors import RateLimited
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.ratelimit import RedisRateLimiter
from lalo_gateway.security.rbac import Role

pytestmark = pytest.mark.integration


def principal(rpm: int = 0, tpm: int = 0) -> Principal:
    return Principal(
        subject="s", role=Role.DEVELOPER, kind="api_key", key_id=uuid.uuid4().hex, rpm=rpm, tpm=tpm
    )


async def test_exact_under_concurrency_across_clients(redis_url: str) -> None:
    limiters = [RedisRateLimiter.from_url(redis_url) for _ in range(4)]  # four "replicas"
    p = principal(rpm=13)
    results = await asyncio.gather(
        *(limiters[i % 4].admit(p) for i in range(60)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert (len(admitted), len(refused)) == (13, 47)
    assert all(1 <= r.retry_after_s <= 60 for r in refused)
    for limiter in limiters:
        await limiter.close()


async def test_tokens_per_minute(redis_url: str) -> None:
    limiter = RedisRateLimiter.from_url(redis_url)
    p = principal(tpm=50)
    assert (await limiter.admit(p)).remaining_tokens == 50
    await limiter.charge_tokens(p, 30)
    assert (await limiter.admit(p)).remaining_tokens == 20
    await limiter.charge_tokens(p, 30)
    with pytest.raises(RateLimited, match="50 tokens per minute"):
        await limiter.admit(p)
    await limiter.close()


async def test_window_expiry(redis_url: str) -> None:
    limiter = RedisRateLimiter(aioredis.Redis.from_url(redis_url), window_s=0.3)
    p = principal(rpm=1)
    await limiter.admit(p)
    with pytest.raises(RateLimited):
        await limiter.admit(p)
    await asyncio.sleep(0.4)
    await limiter.admit(p)
    await limiter.close()


async def test_redis_down_lets_requests_through(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisRateLimiter.from_url("redis://127.0.0.1:1/0")
    admission = await limiter.admit(principal(rpm=1))
    assert admission.remaining_requests is None
    assert "Redis unavailable" in caplog.text
    await limiter.close()

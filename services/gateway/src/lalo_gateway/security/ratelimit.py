"""Requests-per-minute and tokens-per-minute per principal.

Semantics (the same in Redis and in process): each principal has a request window and a
token window of 60 s that opens with the first request (or the first charged token) and
closes 60 s later. A request is admitted when fewer than ``rpm`` requests were admitted in
the open window and fewer than ``tpm`` tokens were charged in it; rejected requests are not
counted. Tokens are charged after the response from the real usage (streamed responses
included), so one request may overshoot ``tpm``; the next is then refused until the window
closes. ``Retry-After`` is the time left in the window that is full.

In Redis the check-and-count is one Lua script, so admission is exact across any number of
gateway processes; windows anchored at the first request (rather than at the wall-clock
minute) keep a burst inside one window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lalo_gateway.security.errors import RateLimited
from lalo_gateway.security.principal import Principal

log = logging.getLogger(__name__)

WINDOW_S = 60.0
_KEY_PREFIX = "lalo:gw:rl:"


@dataclass(frozen=True)
class Admission:
    """An admitted request, with what is left in the window (``None``: unlimited)."""

    remaining_requests: int | None
    remaining_tokens: int | None


class RateLimiter(Protocol):
    async def admit(self, principal: Principal) -> Admission: ...
    async def charge_tokens(self, principal: Principal, tokens: int) -> None: ...
    async def close(self) -> None: ...


def _refusal(kind: str, limit: int, retry_after_s: float) -> RateLimited:
    retry = max(1, math.ceil(retry_after_s))
    what = "requests" if kind == "requests" else "tokens"
    return RateLimited(
        f"Rate limit reached: {limit} {what} per minute for this key. Try again in {retry} s.",
        retry_after_s=retry,
        kind=what,
    )


class InProcessRateLimiter:
    """The embedded-mode limiter: one process, same semantics as :class:`RedisRateLimiter`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, tuple[float, int]] = {}  # key -> (window end, count)
        self._tokens: dict[str, tuple[float, int]] = {}
        self._lock = asyncio.Lock()

    def _current(
        self, table: dict[str, tuple[float, int]], key: str, now: float
    ) -> tuple[float, int]:
        entry = table.get(key)
        if entry is None or entry[0] <= now:
            return (0.0, 0)
        return entry

    async def admit(self, principal: Principal) -> Admission:
        if principal.rpm <= 0 and principal.tpm <= 0:
            return Admission(None, None)
        key = principal.rate_key
        async with self._lock:
            now = self._clock()
            if len(self._requests) > 50_000:
                self._expire(now)
            t_end, used = self._current(self._tokens, key, now)
            if principal.tpm > 0 and used >= principal.tpm:
                raise _refusal("tokens", principal.tpm, t_end - now)
            r_end, count = self._current(self._requests, key, now)
            if principal.rpm > 0:
                if count >= principal.rpm:
                    raise _refusal("requests", principal.rpm, r_end - now)
                self._requests[key] = (r_end or now + WINDOW_S, count + 1)
        return Admission(
            principal.rpm - count - 1 if principal.rpm > 0 else None,
            principal.tpm - used if principal.tpm > 0 else None,
        )

    async def charge_tokens(self, principal: Principal, tokens: int) -> None:
        if principal.tpm <= 0 or tokens <= 0:
            return
        key = principal.rate_key
        async with self._lock:
            now = self._clock()
            end, used = self._current(self._tokens, key, now)
            self._tokens[key] = (end or now + WINDOW_S, used + tokens)

    def _expire(self, now: float) -> None:
        for table in (self._requests, self._tokens):
            for key in [k for k, (end, _) in table.items() if end <= now]:
                del table[key]

    async def close(self) -> None:
        return None


# KEYS[1] request counter, KEYS[2] token counter; ARGV[1] rpm, ARGV[2] tpm, ARGV[3] window ms.
# Returns {admitted, retry_after_ms_or_remaining_requests, remaining_tokens_or_kind}.
_ADMIT = """
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local used = 0
if tpm > 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= tpm then
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl < 0 then ttl = window end
    return {0, ttl, 'tokens'}
  end
end
local count = 0
if rpm > 0 then
  count = tonumber(redis.call('GET', KEYS[1]) or '0')
  if count >= rpm then
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl < 0 then ttl = window end
    return {0, ttl, 'requests'}
  end
  count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('PEXPIRE', KEYS[1], window) end
end
return {1, rpm - count, tpm - used}
"""

_CHARGE = """
local total = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return total
"""


class RedisRateLimiter:
    """Limits shared by every gateway replica. If Redis is unreachable the request is let
    through and a warning is logged (availability over strictness; counters resume when
    Redis returns)."""

    def __init__(self, client: Any, *, window_s: float = WINDOW_S) -> None:
        self._redis = client
        self._window_ms = int(window_s * 1000)
        self._admit = client.register_script(_ADMIT)
        self._charge = client.register_script(_CHARGE)
        self._last_warning = 0.0

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        import redis.asyncio as redis

        return cls(redis.Redis.from_url(url), **kwargs)

    @staticmethod
    def _keys(principal: Principal) -> list[str]:
        base = _KEY_PREFIX + principal.rate_key
        return [base + ":req", base + ":tok"]

    async def admit(self, principal: Principal) -> Admission:
        if principal.rpm <= 0 and principal.tpm <= 0:
            return Admission(None, None)
        try:
            admitted, a, b = await self._admit(
                keys=self._keys(principal),
                args=[principal.rpm, principal.tpm, self._window_ms],
            )
        except Exception as exc:
            self._warn(exc)
            return Admission(None, None)
        if not int(admitted):
            kind = b.decode() if isinstance(b, bytes) else str(b)
            limit = principal.rpm if kind == "requests" else principal.tpm
            raise _refusal(kind, limit, int(a) / 1000)
        return Admission(
            int(a) if principal.rpm > 0 else None, int(b) if principal.tpm > 0 else None
        )

    async def charge_tokens(self, principal: Principal, tokens: int) -> None:
        if principal.tpm <= 0 or tokens <= 0:
            return
        try:
            await self._charge(keys=self._keys(principal)[1:], args=[tokens, self._window_ms])
        except Exception as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("rate limits not enforced: Redis unavailable (%s)", type(exc).__name__)

    async def close(self) -> None:
        await self._redis.aclose()

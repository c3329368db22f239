"""Running a service's event loop, and closing the streams it runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed, the standard loop elsewhere.

    Every gRPC hop is a few event-loop round trips per message; on uvloop a router hop measured
    ~0.1 ms faster at p50 (0.75 -> 0.66 ms, one-token requests on the 2-core dev VM). The
    gateway gets the same loop from uvicorn.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)
    return uvloop.run(main)


async def aclose(stream: AsyncIterator[Any]) -> None:
    """Close ``stream`` now if it can be closed (an async generator): a wrapper that stops
    reading it must not leave the work behind it (an engine request, an upstream
    connection) to the garbage collector."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()

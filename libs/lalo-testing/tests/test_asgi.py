"""serve_app: serves, and fails fast (not a hang) when the app cannot start."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from lalo_testing.asgi import serve_app


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_serves_and_stops() -> None:
    async with serve_app(hello) as port, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/")
        assert response.text == "hello"
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/")


async def test_an_app_that_cannot_start_fails_at_once() -> None:
    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("port 50050 is taken")
        yield

    with pytest.raises(RuntimeError, match="start-up"):
        async with serve_app(Starlette(lifespan=lifespan), startup_timeout_s=10):
            pytest.fail("a server that failed to start must not be yielded")

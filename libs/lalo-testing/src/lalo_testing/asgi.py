"""An ASGI app served by uvicorn on the test's own event loop, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, startup_timeout_s: float = 60.0) -> AsyncIterator[int]:
    """Serves ``app`` until the block ends; yields its port.

    An app whose start-up fails (a port it binds is taken, a database it needs is down)
    raises here with uvicorn's reason instead of leaving the test waiting for a server that
    will never start; whatever happens, the server is stopped before this returns.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn logs why and exits when the app's start-up fails; a SystemExit inside
            # a task would escape to the test runner's loop instead of failing this fixture.
            raise RuntimeError(
                f"the app failed during start-up (uvicorn exit {exc.code}; its log says why)"
            ) from None

    serving = asyncio.create_task(run())
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if serving.done():
                serving.result()  # start-up failed: raises why
                raise RuntimeError("the app stopped during start-up (its log says why)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the app did not start within {startup_timeout_s:.0f} s")
            await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        # Its start-up error, if any, was raised above; a test's cancellation still propagates.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, timeout=30)
        sock.close()

"""The container health probe (deploy/docker/healthcheck.py) against real servers: a LALO gRPC
server with a service token (health stays open) and a local HTTP endpoint."""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lalo_common.grpc_server import GrpcServer

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


async def probe(*args: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *args, stderr=subprocess.DEVNULL
    )
    return await process.wait()


async def test_grpc_probe_follows_serving_status() -> None:
    server = GrpcServer(service_names=["lalo.test.v1.Nothing"], service_token="s3cret-token-abc")
    port = await server.start("127.0.0.1:0")
    try:
        await server.set_serving(False)
        assert await probe("grpc", f"127.0.0.1:{port}") == 1
        await server.set_serving(True)
        assert await probe("grpc", f"127.0.0.1:{port}") == 0
    finally:
        await server.stop()
    assert await probe("grpc", f"127.0.0.1:{port}") == 1


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_http_probe(http_port: int) -> None:
    assert await probe("http", f"http://127.0.0.1:{http_port}/readyz") == 0
    assert await probe("http", f"http://127.0.0.1:{http_port}/other") == 1
    assert await probe("http", "http://example.com/readyz") == 1
    assert await probe("bogus") == 2

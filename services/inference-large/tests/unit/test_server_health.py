"""Health follows the backend: NOT_SERVING while loading, SERVING, NOT_SERVING once it dies."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lalo_inference_large.domain import Load
from lalo_inference_large.server import SERVICE_NAME, build_server
from lalo_inference_large.settings import InferenceLargeSettings


class DyingBackend:
    def __init__(self) -> None:
        self.healthy = True

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine core died")

    async def load(self) -> Load:
        return Load(0, 0, 0.0, 1)

    async def close(self) -> None:
        return None


async def test_health_tracks_the_engine() -> None:
    settings = InferenceLargeSettings(
        model="m", listen_address="127.0.0.1:0", health_check_interval_s=0.05
    )
    server = build_server(settings)
    port = await server.start()
    backend = DyingBackend()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            status = (await health.Check(request)).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            await server.attach(backend)  # type: ignore[arg-type]
            assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
            backend.healthy = False
            for _ in range(100):
                status = (await health.Check(request)).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.05)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop()


async def test_serve_stops_the_watchdog_before_closing_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``serve`` ends (signal) -> health checks stop, then the engine closes: no check may
    run against a closed engine."""
    from lalo_inference_large import __main__ as entry
    from lalo_inference_large import server as server_module

    class RecordingBackend(DyingBackend):
        closed = False
        checked_after_close = 0

        async def check_health(self) -> None:
            if self.closed:
                self.checked_after_close += 1
            await asyncio.sleep(0)

        async def close(self) -> None:
            self.closed = True
            await asyncio.sleep(0.1)  # health-check ticks would land here

    backend = RecordingBackend()

    async def create_backend(settings: InferenceLargeSettings) -> RecordingBackend:
        return backend

    async def until_signalled() -> None:
        await asyncio.sleep(0.1)

    monkeypatch.setattr(server_module, "create_backend", create_backend)
    real_build = server_module.build_server

    def build(settings: InferenceLargeSettings) -> server_module.InferenceLargeServer:
        built = real_build(settings)
        monkeypatch.setattr(built.grpc, "serve_until_signalled", until_signalled)
        return built

    monkeypatch.setattr(entry, "build_server", build)
    settings = InferenceLargeSettings(
        model="m", listen_address="127.0.0.1:0", health_check_interval_s=0.01
    )
    await entry.serve(settings)
    assert backend.closed
    assert backend.checked_after_close == 0

"""Health follows the backend: NOT_SERVING while loading, SERVING, NOT_SERVING once it dies."""

from __future__ import annotations

import asyncio

import grpc
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

"""Fixtures shared by the router's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from lalo.router.v1 import router_pb2_grpc
from lalo_common.grpc_client import create_channel
from lalo_common.grpc_server import GrpcServer
from lalo_router.replicas import ReplicaSet
from lalo_router.server import build_server
from lalo_router.settings import RouterSettings


@pytest.fixture
async def start_router() -> AsyncIterator[
    Callable[[ReplicaSet, str], Awaitable[router_pb2_grpc.RouterServiceStub]]
]:
    """Starts a real router gRPC server over the given replicas (no classifier) on a loopback
    port and returns a stub with the service token; everything is stopped after the test."""
    running: list[tuple[GrpcServer, grpc.aio.Channel]] = []

    async def start(replicas: ReplicaSet, token: str) -> router_pb2_grpc.RouterServiceStub:
        settings = RouterSettings.model_validate(
            {"LALO_SERVICE_TOKEN": token, "grace_period_s": 0, "classifier": "none"}
        )
        server = build_server(settings, replicas)
        port = await server.start("127.0.0.1:0")
        channel = create_channel(f"127.0.0.1:{port}", service_token=token)
        running.append((server, channel))
        return router_pb2_grpc.RouterServiceStub(channel)

    yield start
    for server, channel in running:
        await channel.close()
        await server.stop()

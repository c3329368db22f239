"""lalo.router.v1.RouterService: converts and delegates to the forwarder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc

from lalo_router.forwarding import ChatForwarder
from lalo_router.replicas import ReplicaSet


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, forwarder: ChatForwarder, replicas: ReplicaSet) -> None:
        self._forwarder = forwarder
        self._replicas = replicas

    async def Chat(
        self, request: rpb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.ChatResponse]:
        async for response in self._forwarder.chat(request, context.time_remaining()):
            yield response

    async def ListModels(
        self, request: ipb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListModelsResponse:
        models = list(self._replicas.models().values())
        return ipb.ListModelsResponse(models=models)

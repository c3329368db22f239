"""lalo.router.v1.RouterService: converts and delegates to the forwarder and embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc

from lalo_router.complex_path import WORKFLOW_MODEL
from lalo_router.embeddings import Embedder
from lalo_router.forwarding import ChatForwarder
from lalo_router.replicas import ReplicaSet


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(
        self,
        forwarder: ChatForwarder,
        embedder: Embedder,
        replicas: ReplicaSet,
        workflows_enabled: bool = False,
    ) -> None:
        self._forwarder = forwarder
        self._embedder = embedder
        self._replicas = replicas
        self._workflows_enabled = workflows_enabled

    async def Chat(
        self, request: rpb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.ChatResponse]:
        async for response in self._forwarder.chat(request, context.time_remaining()):
            yield response

    async def Embed(
        self, request: rpb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> rpb.EmbedResponse:
        return await self._embedder.embed(request, context.time_remaining())

    async def ListModels(
        self, request: ipb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListModelsResponse:
        # Whole ModelInfos, so embedding models keep embeddings and embedding_dimensions.
        models = list(self._replicas.models().values())
        if self._workflows_enabled:
            models.append(
                ipb.ModelInfo(
                    id=WORKFLOW_MODEL,
                    backend="workflow",
                    owned_by="lalo",
                    supports_tools=True,
                )
            )
        return ipb.ListModelsResponse(models=models)

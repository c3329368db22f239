"""Thin ``lalo.inference.v1.InferenceService`` servicer over a backend."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import Unavailable
from lalo_common.grpc_server import request_id_of

from lalo_inference_large import convert
from lalo_inference_large.domain import Backend
from lalo_inference_large.stream_hold import hold_chunks
from lalo_inference_large.tool_use import plan_tools, read_tool_calls

log = logging.getLogger(__name__)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Refuses calls with UNAVAILABLE until a backend is attached (the engine is loading)."""

    def __init__(self, backend: Backend | None = None, stream_hold_s: float = 0.0) -> None:
        self.backend = backend
        self.stream_hold_s = stream_hold_s  # see stream_hold.py

    def _ready(self) -> Backend:
        if self.backend is None:
            raise Unavailable("the model is still loading; retry shortly")
        return self.backend

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        backend = self._ready()
        domain_request, tool_use = plan_tools(
            convert.generation_request(request, request_id_of(context)),
            backend.call_format,
        )
        # Errors raised here (unknown model, prompt over the context, bad sampling values)
        # become the call's status; after the first event they travel in-band.
        events = await backend.start(domain_request)
        if tool_use is not None:
            events = read_tool_calls(events, tool_use)
        async for event in hold_chunks(events, self.stream_hold_s):
            yield convert.event_message(event)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return convert.models_message(await self._ready().list_models())

    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        backend = self._ready()
        # Counted as Generate would render it ("none" hides the tools).
        shown, _ = plan_tools(convert.tokenize_request(request))
        return convert.tokenize_message(await backend.tokenize(shown))

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        backend = self._ready()
        result = await backend.embed(convert.embedding_request(request, request_id_of(context)))
        return convert.embed_message(result)

    async def GetLoad(
        self, request: pb.GetLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadReport:
        return convert.load_message(await self._ready().load())

"""lalo.inference.v1.InferenceService over the batch engines: converts and delegates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import NotFound

from lalo_inference_small.convert import chat_from_pb, event_to_pb, sampling_from_pb
from lalo_inference_small.engine import BatchEngine


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engines: dict[str, BatchEngine]) -> None:
        self._engines = engines

    def _engine(self, model: str) -> tuple[str, BatchEngine]:
        if not model and len(self._engines) == 1:
            return next(iter(self._engines.items()))
        engine = self._engines.get(model)
        if engine is None:
            known = ", ".join(sorted(self._engines))
            raise NotFound(f"model {model!r} is not served here (available: {known})")
        return model, engine

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        model_id, engine = self._engine(request.model)
        config = sampling_from_pb(request.sampling)
        if request.WhichOneof("input") == "chat":
            turns, tools = chat_from_pb(request.chat)
            prepared = await asyncio.to_thread(
                engine.prepare, request.request_id, config, chat=turns, tools=tools or None
            )
        else:
            prepared = await asyncio.to_thread(
                engine.prepare, request.request_id, config, prompt=request.prompt
            )
        async for event in engine.generate(prepared):
            yield event_to_pb(event, model_id)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    id=model_id,
                    backend="llama_cpp",
                    context_length=engine.n_ctx,
                    owned_by="lalo",
                    supports_json_schema=True,
                    supports_grammar=True,
                    supports_logprobs=True,
                    supports_tools=False,
                )
                for model_id, engine in self._engines.items()
            ]
        )

    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        _, engine = self._engine(request.model)
        if request.WhichOneof("input") == "chat":
            turns, tools = chat_from_pb(request.chat)
            ids = await asyncio.to_thread(engine.tokenize, chat=turns, tools=tools or None)
        else:
            ids = await asyncio.to_thread(engine.tokenize, prompt=request.prompt)
        return pb.TokenizeResponse(token_ids=ids, count=len(ids), context_length=engine.n_ctx)

    async def GetLoad(
        self, request: pb.GetLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadReport:
        engines = list(self._engines.values())
        return pb.LoadReport(
            running=sum(e.running for e in engines),
            waiting=sum(e.waiting for e in engines),
            kv_cache_usage=max((e.kv_usage() for e in engines), default=0.0),
            max_sequences=sum(e.config.parallel for e in engines),
        )

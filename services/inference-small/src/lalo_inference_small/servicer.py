"""lalo.inference.v1.InferenceService over the batch engines: converts and delegates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.embedding_inputs import fixed_length_refusal
from lalo_common.errors import InvalidArgument, NotFound

from lalo_inference_small.convert import event_to_pb, sampling_from_pb, turns_from_pb
from lalo_inference_small.embedding import EmbeddingEngine
from lalo_inference_small.engine import BatchEngine
from lalo_inference_small.tool_use import plan_tools, read_tool_calls, shown_tools

Engine = BatchEngine | EmbeddingEngine


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engines: dict[str, Engine]) -> None:
        self._engines = engines

    def _lookup(self, model: str, kind: type[Engine]) -> tuple[str, Engine]:
        """The engine serving ``model``; an empty name means the only one of ``kind``."""
        if not model:
            of_kind = [(k, e) for k, e in self._engines.items() if isinstance(e, kind)]
            if len(of_kind) == 1:
                return of_kind[0]
        engine = self._engines.get(model)
        if engine is None:
            known = ", ".join(sorted(self._engines))
            raise NotFound(f"model {model!r} is not served here (available: {known})")
        return model, engine

    def _engine(self, model: str) -> tuple[str, BatchEngine]:
        model_id, engine = self._lookup(model, BatchEngine)
        if not isinstance(engine, BatchEngine):
            raise InvalidArgument(
                f"{model_id!r} is an embedding model: it makes embeddings (/v1/embeddings), "
                "not text",
                param="model",
            )
        return model_id, engine

    def _embedder(self, model: str) -> tuple[str, EmbeddingEngine]:
        model_id, engine = self._lookup(model, EmbeddingEngine)
        if not isinstance(engine, EmbeddingEngine):
            embedders = sorted(
                k for k, e in self._engines.items() if isinstance(e, EmbeddingEngine)
            )
            raise InvalidArgument(
                f"{model_id!r} generates text, it does not make embeddings "
                f"(embedding models here: {', '.join(embedders) or 'none'})",
                param="model",
            )
        return model_id, engine

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        model_id, engine = self._engine(request.model)
        config = sampling_from_pb(request.sampling)
        which = request.WhichOneof("input")
        tool_use = None
        if which == "chat":
            tools, tool_use, config = plan_tools(request.chat, config, engine.model.call_format)
            prepared = await asyncio.to_thread(
                engine.prepare,
                request.request_id,
                config,
                chat=turns_from_pb(request.chat),
                tools=tools,
            )
        elif which == "prompt_token_ids":
            prepared = await asyncio.to_thread(
                engine.prepare,
                request.request_id,
                config,
                prompt_ids=list(request.prompt_token_ids.ids),
            )
        else:
            prepared = await asyncio.to_thread(
                engine.prepare, request.request_id, config, prompt=request.prompt
            )
        events = engine.generate(prepared)
        async for event in events if tool_use is None else read_tool_calls(events, tool_use):
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
                    embeddings=True,
                    embedding_dimensions=engine.dimensions,
                )
                if isinstance(engine, EmbeddingEngine)
                else pb.ModelInfo(
                    id=model_id,
                    backend="llama_cpp",
                    context_length=engine.n_ctx,
                    owned_by="lalo",
                    supports_json_schema=True,
                    supports_grammar=True,
                    supports_logprobs=True,
                    supports_tools=engine.model.renders_tools,
                )
                for model_id, engine in self._engines.items()
            ]
        )

    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        _, any_engine = self._lookup(request.model, BatchEngine)
        if isinstance(any_engine, EmbeddingEngine):
            # An embedding model reads plain text: count the tokens Embed would read.
            if request.WhichOneof("input") == "chat":
                raise InvalidArgument(
                    f"{request.model!r} is an embedding model: it reads text, not chat messages",
                    param="model",
                )
            ids = await asyncio.to_thread(any_engine.tokenize, request.prompt)
            return pb.TokenizeResponse(
                token_ids=ids, count=len(ids), context_length=any_engine.n_ctx
            )
        engine = any_engine
        if request.WhichOneof("input") == "chat":
            ids = await asyncio.to_thread(
                engine.tokenize,
                chat=turns_from_pb(request.chat),
                tools=shown_tools(request.chat),
            )
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
            kv_cache_usage=max(
                (e.kv_usage() for e in engines if isinstance(e, BatchEngine)), default=0.0
            ),
            max_sequences=sum(
                e.config.parallel if isinstance(e, BatchEngine) else e.max_sequences
                for e in engines
            ),
        )

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        model_id, engine = self._embedder(request.model)
        if request.HasField("dimensions") and request.dimensions != engine.dimensions:
            # llama.cpp gives the model's whole vector; truncating one that was not trained
            # for it (Matryoshka) would return a worse embedding without saying so.
            raise fixed_length_refusal(model_id, engine.dimensions)
        result = await engine.embed_async(list(request.inputs))
        return pb.EmbedResponse(
            model=model_id,
            embeddings=[pb.Embedding(values=vector.tolist()) for vector in result.vectors],
            prompt_tokens=result.prompt_tokens,
        )

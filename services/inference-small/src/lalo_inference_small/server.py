"""Builds and runs the inference-small gRPC server."""

from __future__ import annotations

import asyncio
import logging

from lalo.inference.v1 import inference_pb2, inference_pb2_grpc
from lalo_common.grpc_server import GrpcServer

from lalo_inference_small.catalog import ModelSpec, load_specs
from lalo_inference_small.embedding import EmbeddingEngine
from lalo_inference_small.engine import BatchEngine, EngineConfig
from lalo_inference_small.llama_model import LlamaModel
from lalo_inference_small.servicer import Engine, InferenceServicer
from lalo_inference_small.settings import InferenceSmallSettings

log = logging.getLogger(__name__)
SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


def load_engine(
    spec: ModelSpec,
    max_waiting: int = 256,
    stream_hold_ms: float = 0.0,
    model: LlamaModel | None = None,
) -> BatchEngine:
    model = model or LlamaModel(spec.path, use_mmap=spec.use_mmap)
    config = EngineConfig(
        n_ctx=spec.n_ctx,
        parallel=spec.parallel,
        n_batch=spec.n_batch,
        threads=spec.threads,
        max_waiting=max_waiting,
        stream_hold_s=stream_hold_ms / 1000.0,
    )
    return BatchEngine(model, config, spec.id)


def load_any_engine(spec: ModelSpec, max_waiting: int = 256, stream_hold_ms: float = 0.0) -> Engine:
    """A text generator, or an embedding engine when the GGUF is a sentence-embedding model
    (its metadata names a pooling type), so one catalog serves both kinds."""
    model = LlamaModel(spec.path, use_mmap=spec.use_mmap)
    if model.pools_embeddings:
        return EmbeddingEngine(
            model, spec.id, n_ctx=spec.n_ctx, max_sequences=spec.parallel, threads=spec.threads
        )
    return load_engine(spec, max_waiting, stream_hold_ms, model=model)


def load_engines(settings: InferenceSmallSettings) -> dict[str, Engine]:
    engines: dict[str, Engine] = {}
    for spec in load_specs(settings):
        log.info(
            "loading %s from %s (n_ctx=%d, parallel=%d, threads=%d)",
            spec.id,
            spec.path,
            spec.n_ctx,
            spec.parallel,
            spec.threads,
        )
        engines[spec.id] = load_any_engine(spec, settings.max_waiting, settings.stream_hold_ms)
        if isinstance(engines[spec.id], EmbeddingEngine):
            log.info("%s is an embedding model (Embed, not Generate)", spec.id)
    return engines


def build_server(settings: InferenceSmallSettings, engines: dict[str, Engine]) -> GrpcServer:
    server = GrpcServer(
        service_names=[SERVICE_NAME],
        service_token=settings.service_token.get_secret_value(),
        grace_period_s=settings.grace_period_s,
    )
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(engines), server.server
    )
    return server


async def serve(settings: InferenceSmallSettings) -> None:
    engines = await asyncio.to_thread(load_engines, settings)
    server = build_server(settings, engines)
    try:
        port = await server.start(settings.listen)
        await server.set_serving(True)
        log.info("inference-small serving %s on port %d", ", ".join(engines), port)
        await server.serve_until_signalled()
    finally:
        for engine in engines.values():
            await asyncio.to_thread(engine.close)

"""A real inference-small gRPC server on a loopback port, serving the tiny model.

One engine per test module (loading the tiny model takes milliseconds); a module can
override ``engine_options`` to change its context size. One llama.cpp thread: on a busy
2-core machine ggml's spinning thread pool makes two threads many times slower than one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.grpc_client import create_channel
from lalo_inference_small.catalog import ModelSpec
from lalo_inference_small.engine import BatchEngine
from lalo_inference_small.server import build_server, load_engine
from lalo_inference_small.settings import InferenceSmallSettings
from lalo_testing.inference import GenerateResult, collect

MODEL_ID = "tiny-chat"
SERVICE_TOKEN = "inference-test-token"


@dataclass
class Served:
    engine: BatchEngine
    stub: inference_pb2_grpc.InferenceServiceStub
    channel: grpc.aio.Channel
    target: str

    async def generate(self, request: pb.GenerateRequest, deadline_s: float = 60) -> GenerateResult:
        return await collect(self.stub.Generate(request, timeout=deadline_s))

    @staticmethod
    def chat(
        content: str = "Hello, how are you today?", *, request_id: str = "", **sampling: Any
    ) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            request_id=request_id,
            model=MODEL_ID,
            chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content=content)]),
            sampling=pb.SamplingParams(**sampling),
        )

    @staticmethod
    def prompt(text: str, *, request_id: str = "", **sampling: Any) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            request_id=request_id,
            model=MODEL_ID,
            prompt=text,
            sampling=pb.SamplingParams(**sampling),
        )


@pytest.fixture(scope="module")
def engine_options() -> dict[str, Any]:
    return {"n_ctx": 512, "parallel": 4, "threads": 1, "n_batch": 512}


@pytest.fixture(scope="module")
async def served(tiny_model_path: Path, engine_options: dict[str, Any]) -> AsyncIterator[Served]:
    spec = ModelSpec(id=MODEL_ID, path=tiny_model_path, **engine_options)
    engine = await asyncio.to_thread(load_engine, spec)
    settings = InferenceSmallSettings.model_validate(
        {"LALO_SERVICE_TOKEN": SERVICE_TOKEN, "grace_period_s": 0.1}
    )
    server = build_server(settings, {MODEL_ID: engine})
    port = await server.start("127.0.0.1:0")
    await server.set_serving(True)
    target = f"127.0.0.1:{port}"
    channel = create_channel(target, service_token=SERVICE_TOKEN)
    try:
        yield Served(engine, inference_pb2_grpc.InferenceServiceStub(channel), channel, target)
    finally:
        await channel.close()
        await server.stop()
        await asyncio.to_thread(engine.close)

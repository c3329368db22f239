"""The server around the engine: health, reflection, the service credential, start-up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import FailedPrecondition
from lalo_inference_small.catalog import ModelSpec
from lalo_inference_small.server import build_server, load_engine, load_engines
from lalo_inference_small.settings import InferenceSmallSettings
from lalo_testing.inference import collect

pytestmark = pytest.mark.integration

SERVICE = "lalo.inference.v1.InferenceService"


async def test_health_is_serving(served: Any) -> None:
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(served: Any) -> None:
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name async for r in call for s in r.list_services_response.service}
    assert SERVICE in names


async def test_calls_without_the_service_token_are_refused(served: Any) -> None:
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListModels(pb.ListModelsRequest(), timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _event in stub.Generate(served.prompt("hi", max_tokens=2), timeout=5):
                pass
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_start_without_a_model_explains_itself(tmp_path: Any) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LALO_INFERENCE_SMALL_") and k != "LALO_SERVICE_TOKEN"
    }
    done = subprocess.run(
        [sys.executable, "-m", "lalo_inference_small"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "LALO_INFERENCE_SMALL_MODEL_PATH" in done.stderr


async def test_a_catalog_of_two_models(tiny_model_path: Any, tmp_path: Any) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "models:\n"
        f"  - {{id: first, path: {tiny_model_path}, n_ctx: 256, threads: 1, parallel: 2}}\n"
        f"  - {{id: second, path: {tiny_model_path}, n_ctx: 512, threads: 1, parallel: 1}}\n"
    )
    settings = InferenceSmallSettings.model_validate(
        {"models_path": catalog, "LALO_SERVICE_TOKEN": "", "grace_period_s": 0}
    )
    engines = await asyncio.to_thread(load_engines, settings)
    server = build_server(settings, engines)
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            listed = await stub.ListModels(pb.ListModelsRequest(), timeout=5)
            assert {(m.id, m.context_length) for m in listed.models} == {
                ("first", 256),
                ("second", 512),
            }
            load = await stub.GetLoad(pb.GetLoadRequest(), timeout=5)
            assert load.max_sequences == 3
            request = pb.GenerateRequest(
                model="second", prompt="Hello", sampling=pb.SamplingParams(max_tokens=3)
            )
            result = await collect(stub.Generate(request, timeout=30))
            assert result.complete.model == "second"
            # With several models, the model must be named.
            request.model = ""
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await collect(stub.Generate(request, timeout=30))
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
            assert "first, second" in (info.value.details() or "")
    finally:
        await server.stop()
        for engine in engines.values():
            await asyncio.to_thread(engine.close)


def test_missing_model_file_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(FailedPrecondition, match="model file not found"):
        load_engine(ModelSpec(id="x", path=tmp_path / "absent.gguf"))

"""One real vLLM engine (CPU build) for the whole test session, behind a real gRPC server.

These tests need vLLM: `make test-large` installs the CPU engine into .venv-vllm and runs
them there; in the default (torch-free) environment they are skipped with that reason.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from lalo.inference.v1 import inference_pb2_grpc
from lalo_inference_large.server import InferenceLargeServer, build_server
from lalo_inference_large.settings import InferenceLargeSettings
from lalo_inference_large.vllm_backend import VllmBackend, vllm_available

SKIP_REASON = (
    "vLLM is not installed in this environment (the default install is torch-free); "
    "`make test-large` installs vLLM's CPU build into .venv-vllm and runs these tests there"
)

MODEL_NAME = "tiny-vllm"
CONTEXT = 1024
MAX_SEQS = 16


def engine_settings(model_dir: Path, **overrides: object) -> InferenceLargeSettings:
    """CPU settings that start in seconds: small KV cache, eager mode, no torch.compile."""
    fields: dict[str, object] = {
        "model": str(model_dir),
        "served_model_name": MODEL_NAME,
        "model_aliases": ["tiny-alias"],
        "dtype": "float32",
        "max_model_len": CONTEXT,
        "max_num_seqs": MAX_SEQS,
        "kv_cache_memory_bytes": 256 * 1024 * 1024,
        "enforce_eager": True,
        "torch_compile": False,
        "listen_address": "127.0.0.1:0",
    }
    if os.environ.get("LALO_TEST_VLLM_DEVICE") == "gpu":
        # `make test-gpu`: the same tests on the CUDA build.
        fields.update(dtype="bfloat16", kv_cache_memory_bytes=0, gpu_memory_utilization=0.3)
    fields.update(overrides)
    return InferenceLargeSettings(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_hf_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lalo_testing.tiny_hf_model import write_hf_model

    return write_hf_model(tmp_path_factory.mktemp("models") / "tiny-hf")


@pytest.fixture(scope="session")
async def large_server(
    tiny_hf_model_dir: Path,
) -> AsyncIterator[tuple[InferenceLargeServer, VllmBackend, int]]:
    if not vllm_available():
        pytest.skip(SKIP_REASON)
    settings = engine_settings(tiny_hf_model_dir)
    server = build_server(settings)
    port = await server.start()
    try:
        # Inside the try: a gRPC server left running when the engine fails to start keeps
        # the test process alive after the session ends (it hangs instead of failing).
        backend = await VllmBackend.create(settings)
        await server.attach(backend)
        yield server, backend, port
    finally:
        await server.stop()


@pytest.fixture(scope="session")
async def channel(
    large_server: tuple[InferenceLargeServer, VllmBackend, int],
) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{large_server[2]}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> inference_pb2_grpc.InferenceServiceStub:
    return inference_pb2_grpc.InferenceServiceStub(channel)


@pytest.fixture
def backend(large_server: tuple[InferenceLargeServer, VllmBackend, int]) -> VllmBackend:
    return large_server[1]

"""inference-large's embeddings (vLLM's pooling runner) beside vLLM's own OpenAI server.

    make bench-embeddings-large    (or: .venv-vllm/bin/python bench/embeddings_large.py)

The model is all-MiniLM-L6-v2 from the installed package (real weights), with the same engine
settings for both servers, one server at a time on the same machine:

* gRPC: inference-large's Embed over loopback gRPC;
* gateway: POST /v1/embeddings through gateway -> router -> inference-large (auth, quota,
  audit, JSON floats), interleaved round by round with the gRPC calls;
* reference: vLLM's own server (``vllm.entrypoints.openai.api_server``), POST /v1/embeddings
  with JSON floats, the same requests.

Prints latency p50/p99 for one sentence and for a batch of 32, and inputs per second for
batches; gateway / vLLM server is what LALO's HTTP path costs against vLLM's HTTP path.
Results are also written to bench/results/embeddings_large.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from embedding_workload import batch_of, percentile
from inference_large import server_env, stop, wait_until
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_testing.embedding_model import minilm_dir
from lalo_testing.stack import free_port, start_relay

MODEL_NAME = "minilm-bench"
BATCH = 32
KV_BYTES = 64 * 1024 * 1024
MAX_SEQS = 64

Call = Callable[[list[str]], Awaitable[int]]


def large_env(model: Path, port: int) -> dict[str, str]:
    return {
        **server_env(argparse.Namespace(device="cpu")),
        "LALO_INFERENCE_LARGE_MODEL": str(model),
        "LALO_INFERENCE_LARGE_SERVED_MODEL_NAME": MODEL_NAME,
        "LALO_INFERENCE_LARGE_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "LALO_INFERENCE_LARGE_DTYPE": "float32",
        "LALO_INFERENCE_LARGE_MAX_NUM_SEQS": str(MAX_SEQS),
        "LALO_INFERENCE_LARGE_KV_CACHE_MEMORY_BYTES": str(KV_BYTES),
        "LALO_INFERENCE_LARGE_ENFORCE_EAGER": "true",
        "LALO_INFERENCE_LARGE_TORCH_COMPILE": "false",
        "LALO_INFERENCE_LARGE_SEED": "0",
    }


def vllm_cli_args(model: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-num-seqs", str(MAX_SEQS), "--enforce-eager", "--seed", "0",
        "--kv-cache-memory-bytes", str(KV_BYTES),
        "--disable-log-stats", "--disable-uvicorn-access-log",
    ]  # fmt: skip


def http_call(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Call:
    async def call(inputs: list[str]) -> int:
        response = await client.post(
            "/v1/embeddings",
            json={"model": MODEL_NAME, "input": inputs, "encoding_format": "float"},
            headers=headers,
        )
        response.raise_for_status()
        return len(response.json()["data"])

    return call


async def measure(calls: dict[str, Call], rounds: int) -> dict[str, dict[str, float]]:
    """Each path's latencies for one input and for a batch, interleaved round by round."""
    one: dict[str, list[float]] = {name: [] for name in calls}
    many: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        await call(batch_of(BATCH, -1))
    for round_no in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            assert await call(batch_of(1, round_no)) == 1
            one[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert await call(batch_of(BATCH, round_no)) == BATCH
            many[name].append(time.perf_counter() - started)
    return {
        name: {
            "one_p50_ms": round(percentile(one[name], 50) * 1000, 2),
            "one_p99_ms": round(percentile(one[name], 99) * 1000, 2),
            "batch_p50_ms": round(percentile(many[name], 50) * 1000, 2),
            "batch_p99_ms": round(percentile(many[name], 99) * 1000, 2),
            "inputs_per_s": round(BATCH * len(many[name]) / sum(many[name]), 1),
        }
        for name in calls
    }


async def bench_lalo(model: Path, rounds: int, logs: Path) -> dict[str, dict[str, float]]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server runs beside us
        [sys.executable, "-m", "lalo_inference_large"], env=large_env(model, port)
    )
    relay = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)

            async def ready() -> bool:
                await stub.ListModels(pb.ListModelsRequest(), timeout=2)
                return True

            await wait_until(ready, proc, "inference-large")
            api_key = f"sk-bench-{secrets.token_hex(12)}"
            relay = await asyncio.to_thread(
                start_relay,
                pool="large",
                backend_target=f"127.0.0.1:{port}",
                api_key=api_key,
                log_dir=logs,
            )

            async def grpc_call(inputs: list[str]) -> int:
                reply = await stub.Embed(
                    pb.EmbedRequest(model=MODEL_NAME, inputs=inputs), timeout=120
                )
                return len(reply.embeddings)

            async with httpx.AsyncClient(base_url=relay.gateway_url, timeout=120) as client:
                gateway = http_call(client, {"authorization": f"Bearer {api_key}"})
                return await measure(
                    {"inference-large gRPC": grpc_call, "gateway /v1/embeddings": gateway}, rounds
                )
    finally:
        if relay is not None:
            relay.stop()
        stop(proc)


async def bench_vllm_server(model: Path, rounds: int) -> dict[str, dict[str, float]]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220
        vllm_cli_args(model, port), env=server_env(argparse.Namespace(device="cpu"))
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:

            async def ready() -> bool:
                return (await client.get("/v1/models", timeout=2)).status_code == 200

            await wait_until(ready, proc, "vllm serve")
            return await measure({"vLLM server /v1/embeddings": http_call(client)}, rounds)
    finally:
        stop(proc)


async def run(args: argparse.Namespace) -> int:
    model = minilm_dir()
    with tempfile.TemporaryDirectory() as logs:
        results = await bench_lalo(model, args.rounds, Path(logs))
    results.update(await bench_vllm_server(model, args.rounds))
    reference = results["vLLM server /v1/embeddings"]
    print()
    print(
        f"all-MiniLM-L6-v2 on vLLM's pooling runner (CPU, {os.cpu_count()} cores), "
        f"{args.rounds} rounds, batch {BATCH}"
    )
    print(
        f"{'path':30} {'1 input p50':>11} {'p99':>7} {'32 p50':>8} {'p99':>7} "
        f"{'inputs/s':>9} {'vs vLLM':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:30} {r['one_p50_ms']:>11.2f} {r['one_p99_ms']:>7.2f} "
            f"{r['batch_p50_ms']:>8.2f} {r['batch_p99_ms']:>7.2f} {r['inputs_per_s']:>9.1f} "
            f"{r['inputs_per_s'] / reference['inputs_per_s']:>7.2f}x"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "embeddings_large.json").write_text(json.dumps(results, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

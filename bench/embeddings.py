"""/v1/embeddings beside raw llama-cpp-python on the same GGUF embedding model, same threads.

    make bench-embeddings    (or: python bench/embeddings.py [--threads N] [--samples N])

The model is all-MiniLM-L6-v2 converted to GGUF from the installed package (real weights).
Three paths, measured in one run, interleaved round by round so a noisy machine hits them
alike:

* raw: ``llama_cpp.Llama(embedding=True, flash_attn=True).embed`` in this process (the
  reference, with the engine settings inference-small uses);
* gRPC: inference-small's Embed over loopback gRPC (conversion, thread hop, protobuf);
* gateway: POST /v1/embeddings through gateway -> router -> inference-small (auth, quota,
  audit, JSON floats), over one kept-alive HTTP connection.

Prints latency p50/p99 for one sentence and for a batch of 32, and inputs per second for
batches; the ratio to raw is what LALO's layers cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import llama_cpp
from embedding_workload import batch_of, percentile
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.grpc_client import create_channel
from lalo_testing.embedding_model import MODEL_ID, write_minilm
from lalo_testing.stack import start_stack
from lalo_testing.tiny_model import write_model

ROOT = Path(__file__).resolve().parents[1]
SERVICE_TOKEN = secrets.token_hex(16)  # the stack and this client share it


async def run(args: argparse.Namespace) -> int:
    models = Path(tempfile.mkdtemp(prefix="lalo-bench-embed-"))
    embed_path = write_minilm(models / f"{MODEL_ID}.gguf")
    chat_path = write_model(models / "tiny-chat.gguf", "tiny", seed=0)
    key = f"sk-bench-{secrets.token_hex(8)}"
    print(f"model {MODEL_ID} (GGUF f16), {args.threads} threads, {args.samples} rounds", flush=True)
    stack = start_stack(
        chat_path,
        api_key=key,
        service_token=SERVICE_TOKEN,
        threads=args.threads,
        parallel=8,
        n_ctx=512,
        log_dir=ROOT / ".lalo" / "bench-logs",
        timeout_s=300,
        embedding_model_path=embed_path,
        embedding_model_id=MODEL_ID,
    )
    raw = llama_cpp.Llama(
        str(embed_path),
        embedding=True,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        n_seq_max=8,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        # The engine settings inference-small runs with: llama.cpp's default flash attention
        # (llama-cpp-python's Llama turns it off unless asked: a batch of 32 then takes ~2.8x
        # as long, which would flatter LALO).
        flash_attn=True,
        verbose=False,
    )
    channel = create_channel(stack.inference_target, service_token=SERVICE_TOKEN)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    http = httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    results: dict[tuple[str, int], list[float]] = {}
    try:

        async def via_raw(texts: list[str]) -> None:
            raw.embed(texts, normalize=True)

        async def via_grpc(texts: list[str]) -> None:
            reply = await stub.Embed(pb.EmbedRequest(model=MODEL_ID, inputs=texts), timeout=60)
            assert len(reply.embeddings) == len(texts)

        async def via_gateway(texts: list[str]) -> None:
            response = await http.post(
                "/v1/embeddings",
                json={"model": MODEL_ID, "input": texts, "encoding_format": "float"},
            )
            response.raise_for_status()
            assert len(response.json()["data"]) == len(texts)

        paths = {"raw llama-cpp-python": via_raw, "inference-small gRPC": via_grpc}
        paths["gateway /v1/embeddings"] = via_gateway
        for size in (1, 32):
            for warm in range(3):
                for call in paths.values():
                    await call(batch_of(size, warm))
        for round_no in range(args.samples):
            for size in (1, 32):
                texts = batch_of(size, round_no)
                for name, call in paths.items():
                    start = time.perf_counter()
                    await call(texts)
                    results.setdefault((name, size), []).append(time.perf_counter() - start)
    except (grpc.aio.AioRpcError, httpx.HTTPError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await http.aclose()
        await channel.close()
        stack.stop()

    print()
    header = (
        f"{'path':<26}{'1 input p50 ms':>16}{'p99 ms':>9}"
        f"{'32 inputs p50 ms':>18}{'p99 ms':>9}{'inputs/s':>10}{'vs raw':>8}"
    )
    print(header)
    raw_rate = 0.0
    for name in paths:
        one = [t * 1000 for t in results[(name, 1)]]
        many = [t * 1000 for t in results[(name, 32)]]
        rate = 32 / (statistics.median(many) / 1000)
        raw_rate = raw_rate or rate
        print(
            f"{name:<26}{percentile(one, 50):>16.2f}{percentile(one, 99):>9.2f}"
            f"{percentile(many, 50):>18.2f}{percentile(many, 99):>9.2f}"
            f"{rate:>10.0f}{rate / raw_rate:>7.2f}x"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--samples", type=int, default=40)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

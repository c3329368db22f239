"""inference-large over gRPC vs vLLM's own OpenAI-compatible server, in the same run.

Both serve the same random-weight model (``lalo_testing.tiny_hf_model``) with the same engine
settings, one after the other on the same machine; a client in this process streams chat
completions from each at 1 and 8 concurrent streams and reports generated tokens per second
and time to first token (TTFT, first streamed text). Every request is greedy with EOS
suppressed, so both servers produce the same number of tokens.

Then the whole path, gateway -> router -> inference-large, with the stream hold off and at its
default (40 ms): client throughput at 8 streams, tokens per SSE chunk, and the CPU time each
process spends per 100 tokens (from /proc).

Run: ``make bench-large`` (or ``.venv-vllm/bin/python bench/inference_large.py``).
Results are also written to bench/results/inference_large.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import httpx
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_testing.stack import free_port, start_relay, stop_process
from lalo_testing.tiny_hf_model import write_hf_model

MODEL_NAME = "tiny-bench"
PROMPT = "Write a long story about a small model that answered questions quickly and well."


@dataclass
class Result:
    server: str
    streams: int
    requests: int
    tokens: int
    seconds: float
    tokens_per_s: float
    ttft_ms_median: float
    ttft_ms_p90: float


def engine_flags(args: argparse.Namespace) -> dict[str, str]:
    """The engine settings both servers get, as LALO_INFERENCE_LARGE_* values."""
    flags = {
        "DTYPE": args.dtype,
        "MAX_MODEL_LEN": str(args.max_model_len),
        "MAX_NUM_SEQS": "16",
        "ENFORCE_EAGER": "true",
        "SEED": "0",
    }
    if args.device == "cpu":
        flags["KV_CACHE_MEMORY_BYTES"] = str(256 * 1024 * 1024)
        flags["TORCH_COMPILE"] = "false"
    else:
        flags["GPU_MEMORY_UTILIZATION"] = "0.3"
    return flags


def vllm_cli_args(args: argparse.Namespace, model: Path, port: int) -> list[str]:
    flags = engine_flags(args)
    cli = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", flags["DTYPE"], "--max-model-len", flags["MAX_MODEL_LEN"],
        "--max-num-seqs", flags["MAX_NUM_SEQS"], "--enforce-eager", "--seed", "0",
        "--disable-log-stats", "--disable-uvicorn-access-log",
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]  # fmt: skip
    if "KV_CACHE_MEMORY_BYTES" in flags:
        cli += ["--kv-cache-memory-bytes", flags["KV_CACHE_MEMORY_BYTES"]]
    if "GPU_MEMORY_UTILIZATION" in flags:
        cli += ["--gpu-memory-utilization", flags["GPU_MEMORY_UTILIZATION"]]
    return cli


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.device == "cpu":
        env["TORCHDYNAMO_DISABLE"] = "1"
    return env


async def wait_until(
    check: Callable[[], Awaitable[bool]], proc: subprocess.Popen[bytes], what: str
) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if await check():
                return
        except (httpx.HTTPError, grpc.aio.AioRpcError):
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{what} was not ready within 600 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, timeout_s=60, sig=signal.SIGINT)


async def run_load(
    one: Callable[[int], Awaitable[tuple[float, int]]], streams: int, rounds: int
) -> tuple[int, float, list[float]]:
    """``rounds`` waves of ``streams`` concurrent requests; returns tokens, seconds, TTFTs."""
    ttfts: list[float] = []
    tokens = 0
    started = time.perf_counter()
    for wave in range(rounds):
        results = await asyncio.gather(*(one(wave * streams + i) for i in range(streams)))
        for ttft, count in results:
            ttfts.append(ttft)
            tokens += count
    return tokens, time.perf_counter() - started, ttfts


def summarise(server: str, streams: int, tokens: int, seconds: float, ttfts: list[float]) -> Result:
    ordered = sorted(ttfts)
    return Result(
        server=server,
        streams=streams,
        requests=len(ttfts),
        tokens=tokens,
        seconds=round(seconds, 3),
        tokens_per_s=round(tokens / seconds, 1),
        ttft_ms_median=round(statistics.median(ordered) * 1000, 1),
        ttft_ms_p90=round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
    )


async def bench_grpc(args: argparse.Namespace, model: Path, eos: int) -> list[Result]:
    port = free_port()
    env = large_env(args, model, port)
    # Popen returns at once; the servers run beside this event loop.
    proc = subprocess.Popen([sys.executable, "-m", "lalo_inference_large"], env=env)  # noqa: ASYNC220
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)

            async def ready() -> bool:
                await stub.ListModels(pb.ListModelsRequest(), timeout=2)
                return True

            await wait_until(ready, proc, "inference-large")

            async def one(index: int) -> tuple[float, int]:
                request = pb.GenerateRequest(
                    model=MODEL_NAME,
                    chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content=PROMPT)]),
                    sampling=pb.SamplingParams(
                        max_tokens=args.max_tokens, temperature=0.0, logit_bias={eos: -100.0}
                    ),
                )
                started = time.perf_counter()
                ttft = None
                count = 0
                async for event in stub.Generate(request):
                    kind = event.WhichOneof("event")
                    if kind == "chunk" and event.chunk.text and ttft is None:
                        ttft = time.perf_counter() - started
                    elif kind == "complete":
                        count = event.complete.usage.completion_tokens
                    elif kind == "error":
                        raise RuntimeError(event.error.message)
                return (ttft if ttft is not None else float("nan")), count

            return await measure("inference-large (gRPC)", one, args)
    finally:
        stop(proc)


async def bench_openai(args: argparse.Namespace, model: Path, eos: int) -> list[Result]:
    port = free_port()
    proc = subprocess.Popen(vllm_cli_args(args, model, port), env=server_env(args))  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:

            async def ready() -> bool:
                return (await client.get("/v1/models", timeout=2)).status_code == 200

            await wait_until(ready, proc, "vllm serve")

            async def one(index: int) -> tuple[float, int]:
                return await openai_stream(client, args, eos)

            return await measure("vLLM OpenAI server (HTTP)", one, args)
    finally:
        stop(proc)


async def openai_stream(
    client: httpx.AsyncClient,
    args: argparse.Namespace,
    eos: int,
    headers: dict[str, str] | None = None,
    counts: dict[str, int] | None = None,
) -> tuple[float, int]:
    """One streamed chat completion: TTFT and generated tokens; ``counts["chunks"]`` adds
    the SSE chunks that carried text."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "logit_bias": {str(eos): -100},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft = None
    count = 0
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            choices = payload.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                if ttft is None:
                    ttft = time.perf_counter() - started
                if counts is not None:
                    counts["chunks"] = counts.get("chunks", 0) + 1
            if payload.get("usage"):
                count = payload["usage"]["completion_tokens"]
    return (ttft if ttft is not None else float("nan")), count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (10 ms clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class StackResult:
    hold_ms: float
    tokens_per_s: float
    tokens_per_chunk: float
    cpu_ms_per_100_tokens: dict[str, float]


def large_env(args: argparse.Namespace, model: Path, port: int) -> dict[str, str]:
    env = server_env(args) | {
        f"LALO_INFERENCE_LARGE_{key}": value for key, value in engine_flags(args).items()
    }
    return env | {
        "LALO_INFERENCE_LARGE_MODEL": str(model),
        "LALO_INFERENCE_LARGE_SERVED_MODEL_NAME": MODEL_NAME,
        "LALO_INFERENCE_LARGE_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "LALO_INFERENCE_LARGE_LOG_LEVEL": "WARNING",
    }


async def bench_full_stack(
    args: argparse.Namespace, model: Path, eos: int, hold_ms: float
) -> StackResult:
    """gateway -> router -> inference-large with ``hold_ms`` (stream hold), 8 streams: the
    throughput a client sees and the CPU each process spends per 100 tokens."""
    token, key = "bench-service-token-0123456789abcdef", "sk-bench-0123456789abcdef0123456789"
    port = free_port()
    env = large_env(args, model, port) | {
        "LALO_SERVICE_TOKEN": token,
        "LALO_INFERENCE_LARGE_STREAM_HOLD_MS": str(hold_ms),
    }
    # Popen returns at once; the server runs beside this event loop.
    engine = subprocess.Popen([sys.executable, "-m", "lalo_inference_large"], env=env)  # noqa: ASYNC220
    relay = None
    try:
        relay = await asyncio.to_thread(
            start_relay,
            pool="large",
            backend_target=f"127.0.0.1:{port}",
            api_key=key,
            service_token=token,
            extra_env={"LALO_ROUTER_LOG_LEVEL": "WARNING", "LALO_GATEWAY_LOG_LEVEL": "WARNING"},
        )
        pids = {"inference-large": engine.pid} | {s.name: s.process.pid for s in relay.services}
        async with httpx.AsyncClient(base_url=relay.gateway_url, timeout=600) as client:
            headers = {"authorization": f"Bearer {key}"}

            async def ready() -> bool:
                models = await client.get("/v1/models", headers=headers, timeout=2)
                return models.status_code == 200 and MODEL_NAME in models.text

            await wait_until(ready, engine, "inference-large behind the gateway")
            counts: dict[str, int] = {}

            async def one(index: int) -> tuple[float, int]:
                return await openai_stream(client, args, eos, headers, counts)

            await run_load(one, 8, 1)  # warm-up
            counts.clear()
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            tokens, seconds, _ = await run_load(one, 8, args.rounds * 2)
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        return StackResult(
            hold_ms=hold_ms,
            tokens_per_s=round(tokens / seconds, 1),
            tokens_per_chunk=round(tokens / max(counts.get("chunks", 0), 1), 1),
            cpu_ms_per_100_tokens={
                name: round(100_000 * value / tokens, 2) for name, value in spent.items()
            },
        )
    finally:
        if relay is not None:
            relay.stop()
        stop(engine)


async def measure(
    name: str, one: Callable[[int], Awaitable[tuple[float, int]]], args: argparse.Namespace
) -> list[Result]:
    await run_load(one, 8, 1)  # warm-up: first-request costs stay out of the figures
    results = []
    for streams in (1, 8):
        tokens, seconds, ttfts = await run_load(one, streams, args.rounds * (8 // streams))
        results.append(summarise(name, streams, tokens, seconds, ttfts))
    return results


def table(results: list[Result]) -> str:
    lines = [
        f"{'server':28} {'streams':>7} {'reqs':>5} {'tokens':>7} {'tok/s':>8} "
        f"{'TTFT p50 ms':>11} {'TTFT p90 ms':>11}"
    ]
    for r in results:
        lines.append(
            f"{r.server:28} {r.streams:>7} {r.requests:>5} {r.tokens:>7} {r.tokens_per_s:>8.1f} "
            f"{r.ttft_ms_median:>11.1f} {r.ttft_ms_p90:>11.1f}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        model = write_hf_model(Path(tmp) / "model", args.preset)
        eos = json.loads((model / "config.json").read_text())["eos_token_id"]
        ours = await bench_grpc(args, model, eos)
        reference = await bench_openai(args, model, eos)
        stacks = [await bench_full_stack(args, model, eos, hold) for hold in (0.0, 40.0)]
    results = ours + reference
    print()
    print(f"model preset {args.preset}, {args.device}, {args.max_tokens} tokens per request")
    print(table(results))
    for streams in (1, 8):
        a = next(r for r in ours if r.streams == streams)
        b = next(r for r in reference if r.streams == streams)
        print(
            f"{streams} stream(s): throughput {a.tokens_per_s / b.tokens_per_s:.2f}x "
            f"vLLM's server, TTFT p50 {a.ttft_ms_median:.1f} vs {b.ttft_ms_median:.1f} ms"
        )
    print()
    print("gateway -> router -> inference-large, 8 streams, by stream hold (0: every engine")
    print("output alone; 40: the default); CPU is each process's user + system time")
    print(
        f"{'hold ms':>7} {'tok/s':>8} {'tokens/chunk':>12} "
        f"{'CPU ms per 100 tokens: inference-large':>38} {'router':>7} {'gateway':>8}"
    )
    for r in stacks:
        cpu = r.cpu_ms_per_100_tokens
        print(
            f"{r.hold_ms:>7.0f} {r.tokens_per_s:>8.1f} {r.tokens_per_chunk:>12.1f} "
            f"{cpu['inference-large']:>38.2f} {cpu['router']:>7.2f} {cpu['gateway']:>8.2f}"
        )
    print(
        f"hold 40 / hold 0: throughput {stacks[1].tokens_per_s / stacks[0].tokens_per_s:.2f}x "
        "(the engine's own worker process is not counted in its CPU)"
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    record = {"servers": [asdict(r) for r in results], "full_stack": [asdict(r) for r in stacks]}
    (out / "inference_large.json").write_text(json.dumps(record, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--preset", default="tiny", help="tiny_hf_model preset")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--dtype", default="")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2, help="waves of 8 requests per level")
    args = parser.parse_args()
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

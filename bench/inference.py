"""Inference benchmark: raw llama-cpp-python vs inference-small over gRPC vs the full stack.

All three run in one process tree on the same GGUF file with the same thread count, so
their figures can be read side by side:

- generation tok/s at 1 stream (decode rate: tokens after the first, over the time from the
  first token to the last), the three paths interleaved run by run so the VM's drift hits
  them alike, and at 4 concurrent streams (aggregate while all four generate);
- time to first token p50/p99;
- the latency that gateway + router add per request, measured on the tiny model (where
  model time is smallest) as the difference between time to first token through the
  gateway and directly against inference-small over gRPC.

The gateway is read with a bare HTTP/1.1 client (``MinimalHttp``): the client shares the
machine's cores with the stack, and a client library's own per-request and per-token work
would be charged to the server. The same figures read with httpx are printed beside them.
Internal calls carry a service token, as under ``make up`` and in production.

Usage: python bench/inference.py [--model PATH] [--threads N] [--tokens N] [--samples N]
Without --model it writes the TinyLlama-1.1B-shaped random Q4_0 model (~590 MiB) once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_model import bench_model, start_bench_stack
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.grpc_client import create_channel
from lalo_testing.stack import start_stack
from lalo_testing.tiny_model import write_model

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
ROOT = Path(__file__).resolve().parents[1]
# Internal calls carry a service credential, as under `make up` and in production.
SERVICE_TOKEN = secrets.token_hex(16)


@dataclass
class Run:
    tokens: int
    ttft_s: float
    first_to_last_s: float
    total_s: float
    first_at: float = 0.0  # perf_counter of the first token
    last_at: float = 0.0
    times: list[float] = field(default_factory=list)  # perf_counter of every token


_counter = iter(range(1_000_000))


def fresh_prompt() -> str:
    """A prompt no earlier request shares a prefix with: llama-cpp-python's Llama reuses a
    cached prefix, which would make the reference's time to first token look free."""
    return f"{next(_counter)}. {PROMPT}"


def checked(run: Run) -> Run:
    """A stream that delivered no text is a broken measurement, not a fast one."""
    if run.tokens == 0:
        raise RuntimeError("a benchmark stream delivered no text: is the model emitting any?")
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def decode_rate(runs: list[Run]) -> float:
    """Single stream: decode tok/s of one run (median over runs)."""
    rates = [
        (r.tokens - 1) / r.first_to_last_s for r in runs if r.tokens > 1 and r.first_to_last_s > 0
    ]
    return statistics.median(rates) if rates else float("nan")


def paired_ratios(runs: list[Run], reference: list[Run]) -> list[float]:
    """Each run's decode rate over the reference run of the same round (they ran back to
    back, so the VM's drift mostly cancels), sorted."""
    return sorted(
        ((r.tokens - 1) / r.first_to_last_s) / ((ref.tokens - 1) / ref.first_to_last_s)
        for r, ref in zip(runs, reference, strict=True)
    )


def decode_aggregate(runs: list[Run]) -> float:
    """Generation aggregate (as the single-stream figure): tokens after each stream's first,
    over the time from the earliest first token to the last token."""
    start = min(r.first_at for r in runs)
    end = max(r.last_at for r in runs)
    return sum(max(0, r.tokens - 1) for r in runs) / (end - start)


def decode_steady(runs: list[Run]) -> float:
    """Generation aggregate while every stream is generating: tokens over the window from
    the last stream's first token to the first stream's last token (no stream is waiting
    for its prompt or already done, as in the single-stream figure)."""
    start = max(r.first_at for r in runs)
    end = min(r.last_at for r in runs)
    if end <= start:
        return float("nan")
    tokens = sum(1 for r in runs for t in r.times if start < t <= end)
    return tokens / (end - start)


def aggregate_rate(runs: list[Run], wall_s: float) -> float:
    return sum(r.tokens for r in runs) / wall_s


# Rounds of 4 concurrent streams per path; each figure is the median over rounds.
CONCURRENT_ROUNDS = 3


def concurrent_figures(rounds: list[tuple[list[Run], float]]) -> dict[str, float]:
    return {
        "tok_s_4_steady": statistics.median(decode_steady(runs) for runs, _ in rounds),
        "tok_s_4": statistics.median(decode_aggregate(runs) for runs, _ in rounds),
        "tok_s_4_wall": statistics.median(aggregate_rate(runs, wall) for runs, wall in rounds),
    }


# ---- raw llama-cpp-python (the reference) ----


def raw_stream(llm, max_tokens: int) -> Run:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    first = last = start
    count = 0
    times: list[float] = []
    for _chunk in llm.create_completion(
        fresh_prompt(), max_tokens=max_tokens, temperature=0.0, stream=True
    ):
        now = time.perf_counter()
        if count == 0:
            first = now
        last = now
        count += 1
        times.append(now)
    return Run(count, first - start, last - first, last - start, first, last, times)


def load_raw(model: Path, threads: int):  # type: ignore[no-untyped-def]
    import llama_cpp

    return llama_cpp.Llama(
        str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False
    )


def raw_sequential(llm, max_tokens: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The high-level API cannot serve two streams at once: 4 "concurrent" streams are four
    sequential ones, which is what a server built on it would deliver."""
    start = time.perf_counter()
    seq_runs = [raw_stream(llm, max_tokens) for _ in range(4)]
    wall = time.perf_counter() - start
    rate = aggregate_rate(seq_runs, wall)
    return {"tok_s_4_steady": rate, "tok_s_4": rate, "tok_s_4_wall": rate}


# ---- inference-small over gRPC ----


async def grpc_stream(
    stub: inference_pb2_grpc.InferenceServiceStub,
    model_id: str,
    max_tokens: int,
    chat: bool = False,
) -> Run:
    request = pb.GenerateRequest(model=model_id)
    if chat:
        request.chat.messages.add(role="user", content=fresh_prompt())
    else:
        request.prompt = fresh_prompt()
    request.sampling.max_tokens = max_tokens
    request.sampling.temperature = 0.0
    start = time.perf_counter()
    first = last = start
    count = 0
    times: list[float] = []
    async for event in stub.Generate(request):
        if event.WhichOneof("event") == "error":
            raise RuntimeError(f"inference-small failed: {event.error.message}")
        if event.WhichOneof("event") == "chunk":
            now = time.perf_counter()
            if count == 0:
                first = now
            last = now
            count += max(1, len(event.chunk.tokens))
            times.extend([now] * max(1, len(event.chunk.tokens)))
    return checked(Run(count, first - start, last - first, last - start, first, last, times))


async def grpc_rounds(target: str, model_id: str, max_tokens: int) -> dict[str, float]:
    async with create_channel(target, service_token=SERVICE_TOKEN) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        rounds = []
        for _ in range(CONCURRENT_ROUNDS):
            start = time.perf_counter()
            streams = (grpc_stream(stub, model_id, max_tokens) for _ in range(4))
            conc = await asyncio.gather(*streams)
            rounds.append((list(conc), time.perf_counter() - start))
    return concurrent_figures(rounds)


# ---- full stack through the gateway ----


def stream_request(model_id: str, max_tokens: int, chat: bool) -> tuple[str, dict[str, object]]:
    """Path and body of a greedy streamed request on a fresh prompt."""
    if chat:
        path = "/v1/chat/completions"
        body: dict[str, object] = {"messages": [{"role": "user", "content": fresh_prompt()}]}
    else:
        path = "/v1/completions"
        body = {"prompt": fresh_prompt()}
    body.update(
        {
            "model": model_id,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            # The token count comes from usage: a chunk may carry several tokens.
            "stream_options": {"include_usage": True},
        }
    )
    return path, body


def token_times(pieces: list[tuple[float, str]], total_tokens: int) -> list[float]:
    """One arrival time per token from the text chunks of a stream and its usage count.

    inference-small sends tokens that come faster than its stream hold two or three to a
    message, so chunks are not tokens; each chunk's share of the tokens is its share of the
    text (the first chunk, always one token, and the totals are exact)."""
    if not pieces or total_tokens <= 0:
        return []
    times = [pieces[0][0]]
    rest = pieces[1:]
    chars = sum(len(text) for _, text in rest)
    if not rest or chars == 0:
        return times + [pieces[-1][0]] * (total_tokens - 1)
    given, seen = 0, 0
    for at, text in rest:
        seen += len(text)
        upto = round((total_tokens - 1) * seen / chars)
        times.extend([at] * (upto - given))
        given = upto
    return times


def run_from_times(start: float, times: list[float]) -> Run:
    first, last = (times[0], times[-1]) if times else (start, start)
    return checked(Run(len(times), first - start, last - first, last - start, first, last, times))


def usage_tokens(payload: dict[str, Any]) -> int | None:
    usage = payload.get("usage")
    return int(usage["completion_tokens"]) if usage else None


async def http_stream(
    client: httpx.AsyncClient, model_id: str, max_tokens: int, chat: bool = False
) -> Run:
    path, body = stream_request(model_id, max_tokens, chat)
    start = time.perf_counter()
    pieces: list[tuple[float, str]] = []
    total = 0
    async with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            now = time.perf_counter()
            payload = json.loads(line[6:])
            total = usage_tokens(payload) or total
            piece = piece_of(payload)
            if piece:
                pieces.append((now, piece))
    return run_from_times(start, token_times(pieces, total))


async def gateway_rounds(
    base_url: str, api_key: str, model_id: str, max_tokens: int
) -> dict[str, float]:
    """Four streams at once through the gateway, each on its own bare HTTP connection."""
    rounds = []
    for _ in range(CONCURRENT_ROUNDS):
        async with contextlib.AsyncExitStack() as connections:
            clients = [
                await connections.enter_async_context(MinimalHttp(base_url, api_key))
                for _ in range(4)
            ]
            start = time.perf_counter()
            streams = (minimal_stream(c, model_id, max_tokens) for c in clients)
            conc = await asyncio.gather(*streams)
            rounds.append((list(conc), time.perf_counter() - start))
    return concurrent_figures(rounds)


SINGLE_PATHS = ("raw", "grpc", "gateway", "gateway_httpx")


async def single_streams(  # type: ignore[no-untyped-def]
    llm, target: str, base_url: str, api_key: str, model_id: str, max_tokens: int, samples: int
) -> dict[str, list[Run]]:
    """One stream at a time on every path, interleaved (raw, gRPC, gateway, gateway read with
    httpx, raw, ...): this VM's speed drifts by several per cent within a minute, and
    interleaving makes the drift hit every path alike instead of whichever ran last.

    The gateway is read with a bare HTTP client: the client shares the machine's two cores
    with the stack, and a client library's per-token parsing would be charged to the server
    (the raw reference has no client at all); the httpx path shows what one costs."""
    runs: dict[str, list[Run]] = {name: [] for name in SINGLE_PATHS}
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        create_channel(target, service_token=SERVICE_TOKEN) as channel,
        MinimalHttp(base_url, api_key) as http,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as client,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        raw_stream(llm, 8)  # warm-up every path
        await grpc_stream(stub, model_id, 8)
        await minimal_stream(http, model_id, 8)
        await http_stream(client, model_id, 8)
        for _ in range(samples):
            # Blocks the loop on purpose: nothing else may run while the reference does.
            runs["raw"].append(raw_stream(llm, max_tokens))
            runs["grpc"].append(await grpc_stream(stub, model_id, max_tokens))
            runs["gateway"].append(await minimal_stream(http, model_id, max_tokens))
            runs["gateway_httpx"].append(await http_stream(client, model_id, max_tokens))
    return runs


def single_figures(runs: list[Run]) -> dict[str, float]:
    return {
        "tok_s_1": decode_rate(runs),
        "ttft_p50_ms": percentile([r.ttft_s for r in runs], 50) * 1000,
        "ttft_p99_ms": percentile([r.ttft_s for r in runs], 99) * 1000,
    }


class MinimalHttp:
    """A bare keep-alive HTTP/1.1 client: measures the server, not a client library."""

    def __init__(self, base_url: str, api_key: str) -> None:
        host_port = base_url.split("://", 1)[1].split("/", 1)[0]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.api_key = api_key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> MinimalHttp:
        await self._connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def _connect(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def _send(self, path: str, body: bytes) -> tuple[float, bytes]:
        """POST ``body``: the time it was sent and the response's header block.

        The server closes a keep-alive connection left idle longer than its timeout (uvicorn:
        5 s; on a slow machine the raw runs between two gateway requests take longer): a
        connection found closed is opened again before the clock starts, and a request that
        met a connection closing under it (no byte of an answer) is sent once more, timed
        afresh."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.api_key}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        for attempt in range(2):
            if self.reader is None or self.writer is None or self.reader.at_eof():
                await self._connect()
            assert self.reader is not None
            assert self.writer is not None
            start = time.perf_counter()
            try:
                self.writer.write(head + body)
                return start, await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                answered = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if answered or attempt:
                    raise
                self.reader = None
        raise AssertionError("unreachable")

    async def post(self, path: str, body: bytes) -> float:
        assert self.reader is not None
        start, headers = await self._send(path, body)
        length = 0
        for line in headers.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        payload = await self.reader.readexactly(length)
        elapsed = time.perf_counter() - start
        if not headers.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"gateway answered {headers[:40]!r}: {payload[:200]!r}")
        return elapsed

    async def stream_events(
        self, path: str, body: bytes
    ) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
        """POST a streamed request: the time it was sent and each SSE ``data:`` event with
        the time it arrived (the chunked body is read to its end, so the connection can be
        reused)."""
        assert self.reader is not None
        start, headers = await self._send(path, body)
        if not headers.startswith(b"HTTP/1.1 200") or b"chunked" not in headers.lower():
            raise RuntimeError(f"gateway answered {headers[:200]!r}")
        events: list[tuple[float, dict[str, Any]]] = []
        pending = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                return start, events
            now = time.perf_counter()
            pending += data[:-2]
            *complete, pending = pending.split(b"\n\n")
            events.extend((now, json.loads(e[6:])) for e in complete if e.startswith(b"data: {"))


def piece_of(payload: dict[str, Any]) -> str:
    """The generated text an SSE chunk carries (chat delta or completion text)."""
    choices = payload.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    return str(choice["delta"].get("content") or "") if "delta" in choice else choice["text"]


async def minimal_stream(
    http: MinimalHttp, model_id: str, max_tokens: int, chat: bool = False
) -> Run:
    """``http_stream`` read with the bare client."""
    path, body = stream_request(model_id, max_tokens, chat)
    start, events = await http.stream_events(path, json.dumps(body).encode())
    pieces = [(at, piece) for at, payload in events if (piece := piece_of(payload))]
    total = max((usage_tokens(payload) or 0 for _, payload in events), default=0)
    return run_from_times(start, token_times(pieces, total))


async def added_latency(
    base_url: str, api_key: str, target: str, model_id: str, samples: int, client: str
) -> dict[str, float]:
    """Streamed TTFT through gateway+router minus TTFT straight to inference over gRPC,
    interleaved pairs. ``client`` "minimal" reads the gateway with a bare HTTP/1.1 client, so
    the difference is what the two services add; "httpx" adds that library's own per-request
    cost (~2 ms here), which is the client's, not the server's."""
    headers = {"Authorization": f"Bearer {api_key}"}
    direct: list[float] = []
    full: list[float] = []
    async with (
        create_channel(target, service_token=SERVICE_TOKEN) as channel,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http_client,
        MinimalHttp(base_url, api_key) as minimal,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def through_gateway() -> float:
            if client == "httpx":
                return (await http_stream(http_client, model_id, 1, chat=True)).ttft_s
            return (await minimal_stream(minimal, model_id, 1, chat=True)).ttft_s

        for _ in range(20):  # warm-up both paths
            await grpc_stream(stub, model_id, 1, chat=True)
            await through_gateway()
        for _ in range(samples):
            direct.append((await grpc_stream(stub, model_id, 1, chat=True)).ttft_s)
            full.append(await through_gateway())
    diffs = sorted(f - d for f, d in zip(full, direct, strict=True))
    return {
        "direct_p50_ms": percentile(direct, 50) * 1000,
        "full_p50_ms": percentile(full, 50) * 1000,
        "added_p50_ms": (percentile(full, 50) - percentile(direct, 50)) * 1000,
        "added_p99_ms": (percentile(full, 99) - percentile(direct, 99)) * 1000,
        "paired_diff_p50_ms": percentile(diffs, 50) * 1000,
        # The tail of the per-request difference: stricter than the difference of the two
        # tails (a slow direct request and a slow gateway one do not cancel out).
        "paired_diff_p99_ms": percentile(diffs, 99) * 1000,
        "full_p99_ms": percentile(full, 99) * 1000,
        "direct_p99_ms": percentile(direct, 99) * 1000,
    }


async def added_latency_minimal(
    base_url: str, api_key: str, target: str, model_id: str, samples: int
) -> dict[str, float]:
    """Whole one-token requests, non-streamed: gateway (minimal HTTP client) vs inference
    (gRPC), interleaved; the difference is what gateway + router add on the server side."""
    body = json.dumps(
        {
            "model": model_id,
            "max_tokens": 1,
            "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    direct: list[float] = []
    full: list[float] = []

    async def one_direct(stub: inference_pb2_grpc.InferenceServiceStub) -> float:
        request = pb.GenerateRequest(model=model_id)
        request.chat.messages.add(role="user", content="hi")
        request.sampling.max_tokens = 1
        request.sampling.temperature = 0.0
        start = time.perf_counter()
        async for _event in stub.Generate(request):
            pass
        return time.perf_counter() - start

    async with (
        create_channel(target, service_token=SERVICE_TOKEN) as channel,
        MinimalHttp(base_url, api_key) as http,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for _ in range(20):
            await one_direct(stub)
            await http.post("/v1/chat/completions", body)
        for _ in range(samples):
            direct.append(await one_direct(stub))
            full.append(await http.post("/v1/chat/completions", body))
    return {
        "direct_p50_ms": percentile(direct, 50) * 1000,
        "full_p50_ms": percentile(full, 50) * 1000,
        "added_p50_ms": (percentile(full, 50) - percentile(direct, 50)) * 1000,
        "added_p99_ms": (percentile(full, 99) - percentile(direct, 99)) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="LALO inference benchmark")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()

    model = bench_model(args.model)
    tiny = ROOT / ".lalo" / "models" / "tiny-chat.gguf"
    if not tiny.exists():
        write_model(tiny, "tiny", seed=0)
    print(
        f"model {model.name}, {args.threads} threads, {args.tokens} tokens per stream, "
        f"{args.samples} samples",
        flush=True,
    )

    key = f"sk-bench-{secrets.token_hex(8)}"
    print("starting the stack on the benchmark model ...", flush=True)
    stack = start_bench_stack(model, api_key=key, service_token=SERVICE_TOKEN, threads=args.threads)
    try:
        llm = load_raw(model, args.threads)
        print("single streams: raw, gRPC, gateway, gateway with httpx, interleaved ...", flush=True)
        single = asyncio.run(
            single_streams(
                llm,
                stack.inference_target,
                stack.gateway_url,
                key,
                "bench",
                args.tokens,
                args.samples,
            )
        )
        print("4 streams: raw (one after another), gRPC, gateway ...", flush=True)
        raw4 = raw_sequential(llm, args.tokens)
        del llm
        grpc4 = asyncio.run(grpc_rounds(stack.inference_target, "bench", args.tokens))
        gateway4 = asyncio.run(gateway_rounds(stack.gateway_url, key, "bench", args.tokens))
    finally:
        stack.stop()
    results = {
        "raw llama-cpp-python": {**single_figures(single["raw"]), **raw4},
        "inference-small gRPC": {**single_figures(single["grpc"]), **grpc4},
        "gateway+router+inference": {
            **single_figures(single["gateway"]),
            "tok_s_1_httpx": decode_rate(single["gateway_httpx"]),
            "paired_1": paired_ratios(single["gateway"], single["raw"]),
            **gateway4,
        },
    }

    print("measuring added latency on the tiny model ...", flush=True)
    stack = start_stack(
        tiny,
        api_key=key,
        service_token=SERVICE_TOKEN,
        model_id="tiny-chat",
        threads=1,
        parallel=2,
        n_ctx=512,
        log_dir=ROOT / ".lalo" / "bench-logs",
    )
    try:
        latency, latency_httpx = (
            asyncio.run(
                added_latency(
                    stack.gateway_url,
                    key,
                    stack.inference_target,
                    "tiny-chat",
                    args.latency_samples,
                    client=client,
                )
            )
            for client in ("minimal", "httpx")
        )
        server_side = asyncio.run(
            added_latency_minimal(
                stack.gateway_url, key, stack.inference_target, "tiny-chat", args.latency_samples
            )
        )
    finally:
        stack.stop()

    raw1 = results["raw llama-cpp-python"]["tok_s_1"]
    print()
    print(
        f"{'path':28} {'tok/s 1 stream':>15} {'4 streams':>10} {'4 gen':>7} {'4 wall':>7} "
        f"{'vs raw 1':>9} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12}"
    )
    for name, row in results.items():
        print(
            f"{name:28} {row['tok_s_1']:15.1f} {row['tok_s_4_steady']:10.1f} {row['tok_s_4']:7.1f} "
            f"{row['tok_s_4_wall']:7.1f} {row['tok_s_1'] / raw1:8.2f}x {row['ttft_p50_ms']:12.1f} "
            f"{row['ttft_p99_ms']:12.1f}"
        )
    full = results["gateway+router+inference"]
    print("4 streams: aggregate generation tok/s while all four generate (median of")
    print(f" {CONCURRENT_ROUNDS} rounds); 4 gen: from the first stream's first token to the last")
    print(" token, so it includes the other prompts' processing; 4 wall: all tokens / wall time.")
    print(" raw llama-cpp-python serves one stream at a time, so its 4 run one after another.")
    print()
    print(
        f"full stack 1 stream / raw 1 stream:  {full['tok_s_1'] / raw1:.2f}x (target >= 0.95; "
        f"read with httpx instead of the bare client: {full['tok_s_1_httpx'] / raw1:.2f}x)"
    )
    paired = full["paired_1"]
    print(
        f"  the same, round by round (each full-stack run over the raw run before it): median "
        f"{statistics.median(paired):.2f}x, range {paired[0]:.2f}-{paired[-1]:.2f}x"
    )
    print(
        f"full stack 4 streams / raw 1 stream: {full['tok_s_4_steady'] / raw1:.2f}x "
        f"(target >= 1.3; including prompt processing {full['tok_s_4'] / raw1:.2f}x)"
    )
    print(
        f"gateway+router added latency (streamed TTFT, bare HTTP client vs gRPC direct): "
        f"p50 {latency['added_p50_ms']:.2f} ms (target <= 2), "
        f"p99 {latency['added_p99_ms']:.2f} ms (target <= 10); per request (paired) p50 "
        f"{latency['paired_diff_p50_ms']:.2f} ms, p99 {latency['paired_diff_p99_ms']:.2f} ms;"
        f" TTFT direct p50/p99 {latency['direct_p50_ms']:.2f}/{latency['direct_p99_ms']:.2f}"
        f" ms, through gateway {latency['full_p50_ms']:.2f}/{latency['full_p99_ms']:.2f} ms"
    )
    print(
        f"same, read with httpx (adds the client library's own cost): "
        f"p50 {latency_httpx['added_p50_ms']:.2f} ms, p99 {latency_httpx['added_p99_ms']:.2f} ms"
        f"; through gateway {latency_httpx['full_p50_ms']:.2f} ms"
    )
    print(
        f"same, whole non-streamed requests with a minimal HTTP client (server-side cost): "
        f"p50 {server_side['added_p50_ms']:.2f} ms, p99 {server_side['added_p99_ms']:.2f} ms "
        f"(direct {server_side['direct_p50_ms']:.2f} ms, through gateway "
        f"{server_side['full_p50_ms']:.2f} ms)"
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())

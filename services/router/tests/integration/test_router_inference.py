"""The router in front of two real inference-small servers serving the tiny model, and the
LLM classification strategy asking a real inference-small.

Everything runs in this process on loopback ports (one llama.cpp thread per engine: on a
busy 2-core machine ggml's spinning thread pool makes more threads much slower).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.inference.v1 import inference_pb2_grpc
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.grpc_client import create_channel
from lalo_common.grpc_server import GrpcServer
from lalo_inference_small.catalog import ModelSpec
from lalo_inference_small.engine import BatchEngine
from lalo_inference_small.server import build_server as build_inference
from lalo_inference_small.server import load_engine
from lalo_inference_small.settings import InferenceSmallSettings
from lalo_router.cli import main as cli_main
from lalo_router.llm_classifier import DEFAULT_LABELS, LlmClassifier
from lalo_router.policy import PolicySpec
from lalo_router.replicas import ReplicaSet
from lalo_router.server import build_server as build_router
from lalo_router.settings import RouterSettings
from lalo_testing.inference import GenerateResult, collect, wait_until

pytestmark = pytest.mark.integration

MODEL_ID = "tiny-chat"
TOKEN = "router-integration-token"


@dataclass
class Inference:
    engine: BatchEngine
    server: GrpcServer
    target: str
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.server.stop()


@dataclass
class Stack:
    inference: list[Inference]
    replicas: ReplicaSet
    router: router_pb2_grpc.RouterServiceStub
    channel: grpc.aio.Channel

    async def chat(self, request: rpb.ChatRequest, deadline_s: float = 60) -> GenerateResult:
        return await collect(self.router.Chat(request, timeout=deadline_s))


def chat(
    content: str = "Hello there", *, model: str = "auto", request_id: str = "", **sampling: Any
) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        request_id=request_id,
        model=model,
        chat=ipb.ChatInput(messages=[ipb.ChatMessage(role="user", content=content)]),
        sampling=ipb.SamplingParams(**sampling),
    )


async def _start_inference(model_path: Path, n_ctx: int = 512) -> Inference:
    spec = ModelSpec(id=MODEL_ID, path=model_path, n_ctx=n_ctx, parallel=4, threads=1)
    engine = await asyncio.to_thread(load_engine, spec)
    settings = InferenceSmallSettings.model_validate(
        {"LALO_SERVICE_TOKEN": TOKEN, "grace_period_s": 0}
    )
    server = build_inference(settings, {MODEL_ID: engine})
    port = await server.start("127.0.0.1:0")
    await server.set_serving(True)
    return Inference(engine, server, f"127.0.0.1:{port}")


@pytest.fixture
async def stack(tiny_model_path: Path) -> AsyncIterator[Stack]:
    inference = [await _start_inference(tiny_model_path) for _ in range(2)]
    replicas = ReplicaSet([("small", i.target) for i in inference], service_token=TOKEN)
    await replicas.refresh()
    settings = RouterSettings.model_validate(
        {"LALO_SERVICE_TOKEN": TOKEN, "grace_period_s": 0, "classifier": "none"}
    )
    router = build_router(settings, replicas)
    port = await router.start("127.0.0.1:0")
    await router.set_serving(True)
    channel = create_channel(f"127.0.0.1:{port}", service_token=TOKEN)
    try:
        yield Stack(inference, replicas, router_pb2_grpc.RouterServiceStub(channel), channel)
    finally:
        await channel.close()
        await router.stop()
        await replicas.close()
        for item in inference:
            await item.stop()
            await asyncio.to_thread(item.engine.close)


async def test_tokens_pass_through_unchanged(stack: Stack) -> None:
    routed = await stack.chat(chat(max_tokens=24, temperature=0.0, logprobs=True))
    assert routed.route.pool == "small"
    assert routed.route.model == MODEL_ID
    assert routed.route.replica in {i.target for i in stack.inference}

    async with create_channel(routed.route.replica, service_token=TOKEN) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        direct = await collect(
            stub.Generate(
                ipb.GenerateRequest(
                    model=MODEL_ID,
                    chat=ipb.ChatInput(
                        messages=[ipb.ChatMessage(role="user", content="Hello there")]
                    ),
                    sampling=ipb.SamplingParams(max_tokens=24, temperature=0.0, logprobs=True),
                ),
                timeout=60,
            )
        )
    # Chunk boundaries follow timing (inference-small sends fast tokens a few to a message);
    # the text and every token must be the same.
    assert "".join(c.text for c in routed.chunks) == "".join(c.text for c in direct.chunks)
    assert [(t.token, t.logprob) for t in routed.tokens] == [
        (t.token, t.logprob) for t in direct.tokens
    ]
    assert [t.token_id for t in routed.tokens] == [t.token_id for t in direct.tokens]
    assert routed.complete == direct.complete


async def test_explicit_model_and_errors_pass_through(stack: Stack) -> None:
    result = await stack.chat(chat(model=MODEL_ID, max_tokens=4))
    assert result.route.reason == "explicit model"
    assert result.complete.usage.completion_tokens <= 4

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.chat(chat(model="gpt-17"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.chat(chat("word " * 600, max_tokens=4))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length is 512 tokens" in (info.value.details() or "")

    # Caller mistakes do not count against the replicas.
    assert all(r.consecutive_failures == 0 for r in stack.replicas.replicas)


async def test_concurrent_requests_use_both_replicas(stack: Stack) -> None:
    results = await asyncio.gather(
        *(stack.chat(chat(f"Question {i}", max_tokens=48, temperature=0.0)) for i in range(8))
    )
    assert all(r.finish_reason == ipb.FINISH_REASON_LENGTH for r in results)
    assert {r.route.replica for r in results} == {i.target for i in stack.inference}


async def test_cancelling_through_the_router_frees_the_sequence(stack: Stack) -> None:
    engine_by_target = {i.target: i.engine for i in stack.inference}
    model = stack.inference[0].engine.model
    no_eog = {t: -100.0 for t in range(model.n_vocab) if model.is_eog(t)}
    call = stack.router.Chat(chat(logit_bias=no_eog, top_logprobs=20), timeout=60)
    route = (await call.read()).route
    assert (await call.read()).WhichOneof("event") == "chunk"
    engine = engine_by_target[route.replica]
    call.cancel()
    await wait_until(lambda: engine.running == 0)
    await wait_until(lambda: all(r.outstanding == 0 for r in stack.replicas.replicas))


async def test_stopping_a_replica_under_load(stack: Stack) -> None:
    """Requests keep succeeding on the other replica once one goes away."""
    first, second = stack.inference
    stopped = asyncio.Event()
    before: list[GenerateResult] = []
    after: list[GenerateResult] = []

    async def client(n: int) -> None:
        for i in range(6):
            issued_after_stop = stopped.is_set()
            result = await stack.chat(chat(f"Client {n} request {i}", max_tokens=24))
            (after if issued_after_stop else before).append(result)
            if i == 1 and n == 0:
                await first.stop()
                stopped.set()

    await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(4))), timeout=120)
    assert after, "no request was issued after the stop"
    for result in after:
        assert result.error is None, result.error
        assert result.complete is not None
        assert result.route.replica == second.target
    # A request streaming from the replica when it stopped may end with an in-band error
    # (nothing is retried after output); it never hangs and never loses its status.
    for result in before:
        assert result.complete is not None or result.error is not None
    # The router learns the replica is gone.
    await stack.replicas.refresh(timeout_s=2.0)
    assert [r.healthy for r in stack.replicas.replicas] == [False, True]


# ---- the LLM classification strategy on a real llama.cpp server ----

PROMPTS = [
    "Hello! How are you today?",
    "What is the capital of France?",
    "Solve for x: 3x + 7 = 22.",
    "Write a Python function that reverses a linked list.",
    "Pull the names and dates out of this email: Anna met Bo on 3 May.",
    "Summarize the following meeting notes in two sentences: ...",
    "Write a short poem about the sea.",
    "If Tom is taller than Ann and Ann is taller than Bo, who is shortest?",
    "Book a table for two at 7pm and add it to my calendar.",
    "",
]


@pytest.fixture
async def llm_server(tiny_model_path: Path) -> AsyncIterator[Inference]:
    # The prompt lists every label with its meaning: a few hundred tokens of the tiny
    # tokenizer, so a bigger context than the chat tests need.
    inference = await _start_inference(tiny_model_path, n_ctx=2048)
    try:
        yield inference
    finally:
        await inference.stop()
        await asyncio.to_thread(inference.engine.close)


async def test_llm_strategy_answers_only_labels(llm_server: Inference) -> None:
    """The tiny model is random: the grammar, not the model, makes every answer a label."""
    classifier = LlmClassifier(
        MODEL_ID, target=llm_server.target, service_token=TOKEN, timeout_s=60
    )
    try:
        for text in PROMPTS[:-1]:
            result = await classifier.classify(text)
            assert result.label in DEFAULT_LABELS, result
            assert result.fallback == "", result  # the model answered
            assert result.output.strip() == result.label
            assert 0.0 < result.confidence <= 1.0
        empty = await classifier.classify(PROMPTS[-1])
        assert (empty.label, empty.fallback) == ("other", "empty")
    finally:
        await classifier.close()


async def test_router_routes_by_the_llm_strategy(llm_server: Inference) -> None:
    replicas = ReplicaSet([("small", llm_server.target)], service_token=TOKEN)
    await replicas.refresh()
    categories = {label: "small" for label in DEFAULT_LABELS}
    settings = RouterSettings.model_validate(
        {"LALO_SERVICE_TOKEN": TOKEN, "grace_period_s": 0, "classifier": "none"}
    )
    # No target: the strategy asks the router's own replicas that serve the model.
    strategy = LlmClassifier(MODEL_ID, replicas=replicas, timeout_s=60)
    router = build_router(
        settings, replicas, policy=PolicySpec(categories=categories), strategy=strategy
    )
    port = await router.start("127.0.0.1:0")
    await router.set_serving(True)
    channel = create_channel(f"127.0.0.1:{port}", service_token=TOKEN)
    try:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        result = await collect(stub.Chat(chat("Write a haiku", max_tokens=8), timeout=60))
        assert result.route.category in DEFAULT_LABELS
        assert ", llm)" in result.route.reason
        assert result.route.classify_ms > 0
        assert result.complete is not None
        assert replicas.replicas[0].outstanding == 0
    finally:
        await channel.close()
        await router.stop()
        await strategy.close()
        await replicas.close()


async def test_cli_eval_runs_the_llm_strategy_end_to_end(
    llm_server: Inference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LALO_SERVICE_TOKEN", TOKEN)
    labels = ["chat", "factual_qa", "math", "code", "extraction"] + ["summarization"] * 4
    rows = [{"text": text, "label": label} for text, label in zip(PROMPTS, labels, strict=False)]
    src = tmp_path / "labelled.jsonl"
    src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = ["--strategy", "llm", "--target", llm_server.target, "--model", MODEL_ID]
    report_path = tmp_path / "report.json"
    args = ["eval", "categories", str(src), *common, "--timeout", "60", "--json"]
    # The CLI runs its own event loop: a thread, while this loop serves the model.
    assert await asyncio.to_thread(cli_main, [*args, "-o", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["n"] == len(rows)
    assert report["strategy"] == "llm"
    assert report["llm_fallbacks"] == {}
    assert set(report["confusion_labels"]) <= {*DEFAULT_LABELS, "other"}
    assert sum(map(sum, report["confusion"])) == len(rows)
    assert 0.0 <= report["macro_f1"] <= 1.0

    predictions = tmp_path / "predictions.jsonl"
    args = ["predict", str(src), *common, "--timeout", "60", "-o", str(predictions)]
    assert await asyncio.to_thread(cli_main, args) == 0
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(records) == len(rows)
    assert all(r["label"] in DEFAULT_LABELS and r["strategy"] == "llm" for r in records)

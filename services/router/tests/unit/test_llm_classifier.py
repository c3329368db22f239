"""The LLM classification strategy against a scripted inference server on a loopback port:
the request it sends, how it reads the answer, and every fallback (it never fails)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.auth import SERVICE_TOKEN_METADATA
from lalo_common.grpc_server import GrpcServer
from lalo_router.cli import main
from lalo_router.llm_classifier import (
    DEFAULT_LABELS,
    LABEL_MEANINGS,
    LlmClassifier,
    build_messages,
    label_grammar,
    match_label,
)
from lalo_router.policy import EmbeddingStrategy
from lalo_router.replicas import ReplicaSet
from lalo_router.server import build_strategy
from lalo_router.settings import RouterSettings
from lalo_testing.inference import FakeInference
from lalo_testing.stack import free_port

TOKEN = "llm-classifier-token"
MODEL = "router-model"


@dataclass
class Embedding:
    """A stand-in for the embedding classifier: fixed label and p_escalate."""

    label: str = "chat"
    confidence: float = 0.7
    p_escalate: float = 0.42
    latency_ms: float = 0.5
    labels: tuple[str, ...] = DEFAULT_LABELS
    seen: list[str] = field(default_factory=list)

    def classify(self, text: str) -> Embedding:
        self.seen.append(text)
        return self


class ScriptedInference(FakeInference):
    """Answers Generate with ``answer`` (one chunk per piece, logprob -0.1 per piece);
    ``behaviour``: "ok", "hang" (never answers), "error" (in-band error)."""

    def __init__(self, models: list[str]) -> None:
        super().__init__("scripted", models)
        self.answer = ["co", "de"]
        self.requests: list[ipb.GenerateRequest] = []
        self.deadlines: list[float | None] = []
        self.tokens_seen: list[str] = []

    async def Generate(
        self, request: ipb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ipb.GenerateResponse]:
        self.requests.append(request)
        self.deadlines.append(context.time_remaining())
        metadata = dict(context.invocation_metadata() or ())
        self.tokens_seen.append(str(metadata.get(SERVICE_TOKEN_METADATA, "")))
        if request.model not in self.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.model!r} not served")
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        if self.behaviour == "error":
            yield ipb.GenerateResponse(error=ipb.GenerateError(code=13, message="engine died"))
            return
        for piece in self.answer:
            token = ipb.TokenInfo(token=piece, logprob=-0.1)
            yield ipb.GenerateResponse(chunk=ipb.GenerateChunk(text=piece, tokens=[token]))
        yield ipb.GenerateResponse(
            complete=ipb.GenerateComplete(finish_reason=ipb.FINISH_REASON_STOP, model=MODEL)
        )


@dataclass
class Scripted:
    servicer: ScriptedInference
    server: GrpcServer
    target: str


async def start_scripted(models: list[str] | None = None) -> Scripted:
    servicer = ScriptedInference(models or [MODEL])
    server = GrpcServer(
        service_names=[ipb.DESCRIPTOR.services_by_name["InferenceService"].full_name],
        service_token=TOKEN,
        grace_period_s=0,
    )
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server.server)
    port = await server.start("127.0.0.1:0")
    await server.set_serving(True)
    return Scripted(servicer, server, f"127.0.0.1:{port}")


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    item = await start_scripted()
    yield item
    await item.server.stop()


def llm(target: str, **kwargs: object) -> LlmClassifier:
    options: dict[str, object] = {"service_token": TOKEN, "fallback": Embedding()}
    options.update(kwargs)
    return LlmClassifier(MODEL, target=target, **options)  # type: ignore[arg-type]


# ---- pure parts ----


def test_the_grammar_admits_exactly_the_labels() -> None:
    grammar = label_grammar(["chat", "code", 'say "hi"'])
    assert grammar == 'root ::= "chat" | "code" | "say \\"hi\\""\n'


def test_the_prompt_lists_every_label_with_its_meaning() -> None:
    system, user = build_messages("sort this list in rust", DEFAULT_LABELS)
    assert system.role == "system"
    for label, meaning in LABEL_MEANINGS.items():
        assert f"- {label}: {meaning}" in system.content
    assert user.role == "user"
    assert "sort this list in rust" in user.content
    _, long_user = build_messages("a" * 5000 + "TAIL", ["chat"])
    assert len(long_user.content) < 2200
    assert long_user.content.count("a") >= 1500
    assert "TAIL" in long_user.content


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("code", "code"),
        (" math\n", "math"),
        ("creat", "creative_writing"),  # cut off by max_tokens, but only one label fits
        ("c", None),  # chat, code, creative_writing
        ("", None),
        ("poem", None),
    ],
)
def test_match_label(output: str, label: str | None) -> None:
    assert match_label(output, DEFAULT_LABELS) == label


def test_labels_come_from_the_embedding_classifier_without_other() -> None:
    embedding = Embedding(labels=("chat", "code", "other"))
    classifier = LlmClassifier(MODEL, target="127.0.0.1:1", fallback=embedding)
    assert classifier.labels == ("chat", "code")
    assert LlmClassifier(MODEL, target="127.0.0.1:1").labels == DEFAULT_LABELS
    with pytest.raises(ValueError, match="target or the router's replicas"):
        LlmClassifier(MODEL)


# ---- against the scripted server ----


async def test_the_request_is_greedy_grammar_bound_short_and_authenticated(
    scripted: Scripted,
) -> None:
    classifier = llm(scripted.target, timeout_s=1.5, max_tokens=12)
    await classifier.classify("write a parser", request_id="req-9")
    (request,) = scripted.servicer.requests
    assert request.model == MODEL
    assert request.request_id == "req-9"
    assert request.sampling.temperature == 0.0
    assert request.sampling.max_tokens == 12
    assert request.sampling.response_format.type == ipb.ResponseFormat.GRAMMAR
    assert request.sampling.response_format.grammar == label_grammar(DEFAULT_LABELS)
    assert [m.role for m in request.chat.messages] == ["system", "user"]
    assert scripted.servicer.tokens_seen == [TOKEN]
    (deadline,) = scripted.servicer.deadlines
    assert deadline is not None
    assert deadline <= 1.6  # the wire rounds deadlines a little
    await classifier.classify("again", time_remaining=0.5)
    assert scripted.servicer.deadlines[1] is not None
    assert scripted.servicer.deadlines[1] <= 0.6  # the caller's deadline caps it
    await classifier.close()


async def test_the_models_label_wins_and_p_escalate_comes_from_the_embedding(
    scripted: Scripted,
) -> None:
    classifier = llm(scripted.target)
    result = await classifier.classify("write a parser")
    assert result.label == "code"  # the embedding said "chat"
    assert result.p_escalate == pytest.approx(0.42)
    assert result.confidence == pytest.approx(math.exp(-0.2))
    assert result.fallback == ""
    assert result.note == "llm"
    await classifier.close()


async def test_a_cut_off_answer_counts_when_it_fits_one_label(scripted: Scripted) -> None:
    scripted.servicer.answer = ["crea", "t"]
    classifier = llm(scripted.target)
    assert (await classifier.classify("a poem please")).label == "creative_writing"
    await classifier.close()


@pytest.mark.parametrize(
    ("behaviour", "answer", "reason"),
    [
        ("ok", ["I think it is code"], "invalid"),
        ("ok", ["c"], "invalid"),
        ("error", [], "error"),
        ("hang", [], "timeout"),
    ],
)
async def test_failures_fall_back_to_the_embedding_decision(
    scripted: Scripted, behaviour: str, answer: list[str], reason: str
) -> None:
    scripted.servicer.behaviour = behaviour
    scripted.servicer.answer = answer
    classifier = llm(scripted.target, timeout_s=0.3)
    result = await classifier.classify("hello there")
    assert (result.label, result.p_escalate) == ("chat", pytest.approx(0.42))
    assert result.fallback == reason
    assert result.note == f"llm fallback: {reason}"
    await classifier.close()


async def test_an_unreachable_server_falls_back_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    classifier = llm(f"127.0.0.1:{free_port()}", timeout_s=2.0)
    with caplog.at_level(logging.WARNING):
        results = [await classifier.classify(f"question {i}") for i in range(3)]
    assert {r.fallback for r in results} == {"unavailable"}
    assert caplog.text.count("fell back to the embedding classifier") == 1
    await classifier.close()


async def test_an_unknown_model_is_an_error_fallback(scripted: Scripted) -> None:
    classifier = LlmClassifier("not-served", target=scripted.target, service_token=TOKEN)
    result = await classifier.classify("hello")
    # Without an embedding classifier: "other" (the default pool) and no p_escalate.
    assert (result.label, result.p_escalate) == ("other", 0.0)
    assert result.fallback == "error"
    await classifier.close()


async def test_an_unexpected_exception_is_a_fallback_too(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = llm(scripted.target)

    def broken(text: str, request_id: str = "") -> ipb.GenerateRequest:
        raise RuntimeError("a bug")

    monkeypatch.setattr(classifier, "request", broken)
    result = await classifier.classify("hello")
    assert (result.label, result.fallback) == ("chat", "error")
    await classifier.close()


async def test_empty_text_is_not_sent(scripted: Scripted) -> None:
    classifier = llm(scripted.target)
    result = await classifier.classify("   ")
    assert result.label == "chat"
    assert result.fallback == "empty"
    assert not scripted.servicer.requests
    await classifier.close()


async def test_without_a_target_it_asks_the_replicas_serving_the_model(
    scripted: Scripted,
) -> None:
    other = await start_scripted(["chat-model"])
    replicas = ReplicaSet(
        [("small", other.target), ("router", scripted.target)], service_token=TOKEN
    )
    await replicas.refresh()
    try:
        classifier = LlmClassifier(MODEL, replicas=replicas, fallback=Embedding())
        result = await classifier.classify("write a parser")
        assert result.label == "code"
        assert len(scripted.servicer.requests) == 1
        assert not other.servicer.requests
        assert all(r.outstanding == 0 for r in replicas.replicas)
        # Its replica at its cap, then gone: the embedding decision, never an error.
        replicas.replicas[1].max_outstanding = replicas.replicas[1].outstanding = 1
        result = await classifier.classify("write a parser")
        assert result.fallback == "saturated"
        replicas.replicas[1].outstanding = 0
        replicas.replicas[1].healthy = False
        result = await classifier.classify("write a parser")
        assert result.fallback == "no_replica"
    finally:
        await replicas.close()
        await other.server.stop()


# ---- settings and wiring ----


def test_settings_for_the_llm_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="LALO_ROUTER_LLM_MODEL is required"):
        RouterSettings(classifier="llm")
    with pytest.raises(ValidationError, match="must be host:port"):
        RouterSettings(classifier="llm", llm_model="m", llm_target="nohost")
    with pytest.raises(ValidationError):
        RouterSettings(classifier="gpt")
    monkeypatch.setenv("LALO_ROUTER_CLASSIFIER", "llm")
    monkeypatch.setenv("LALO_ROUTER_LLM_MODEL", "lfm2-1.2b-tool")
    monkeypatch.setenv("LALO_ROUTER_LLM_TIMEOUT_S", "0.8")
    settings = RouterSettings()
    assert (settings.classifier, settings.llm_model, settings.llm_target) == (
        "llm",
        "lfm2-1.2b-tool",
        "",
    )
    assert settings.llm_timeout_s == 0.8


def test_build_strategy_follows_the_settings() -> None:
    replicas = ReplicaSet([])
    embedding = Embedding()
    llm_pool = build_strategy(
        RouterSettings(classifier="llm", llm_model="m"),
        embedding,
        replicas,  # type: ignore[arg-type]
    )
    assert isinstance(llm_pool, LlmClassifier)
    assert (llm_pool.replicas, llm_pool.target, llm_pool.fallback) == (replicas, "", embedding)
    pinned = build_strategy(
        RouterSettings(classifier="llm", llm_model="m", llm_target="h:1"), None, replicas
    )
    assert isinstance(pinned, LlmClassifier)
    assert (pinned.replicas, pinned.target) == (None, "h:1")
    plain = build_strategy(RouterSettings(), embedding, replicas)  # type: ignore[arg-type]
    assert isinstance(plain, EmbeddingStrategy)
    assert build_strategy(RouterSettings(), None, replicas) is None


# ---- the CLI measures the LLM strategy the way the router runs it ----


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


async def test_cli_predict_and_eval_with_the_llm_strategy(
    scripted: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LALO_SERVICE_TOKEN", TOKEN)
    rows: list[dict[str, object]] = [
        {"text": "write a python function", "label": "code", "id": 1},
        {"text": "hi there", "label": "chat"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    common = ["--strategy", "llm", "--target", scripted.target, "--model", MODEL]
    # The CLI runs its own event loop: give it a thread, this loop serves the fake.
    code = await asyncio.to_thread(main, ["predict", str(src), *common, "-o", str(out)])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in records] == ["code", "code"]
    assert records[0]["id"] == 1
    assert {r["strategy"] for r in records} == {"llm"}
    assert all(r["fallback"] is None for r in records)

    report_path = tmp_path / "report.json"
    args = ["eval", "categories", str(src), *common, "--json", "-o", str(report_path)]
    assert await asyncio.to_thread(main, args) == 0
    report = json.loads(report_path.read_text())
    assert (report["n"], report["strategy"], report["accuracy"]) == (2, "llm", 0.5)
    assert report["llm_fallbacks"] == {}

    scripted.servicer.answer = ["not a label"]
    text_path = tmp_path / "report.txt"
    args = ["eval", "categories", str(src), *common, "-o", str(text_path)]
    assert await asyncio.to_thread(main, args) == 1  # every call fell back: say so
    assert "llm fallbacks  2 of 2 (invalid 2)" in text_path.read_text()

"""The LLM classification strategy: a small instruction model names the request's category.

The router asks a small model (e.g. LFM2-1.2B-Tool as a GGUF on inference-small) through
the ordinary ``lalo.inference.v1.InferenceService/Generate`` contract, so any inference
server can answer: greedy decoding, a GBNF grammar that admits only the label names, a few
tokens and a short deadline. The prompt lists each label with a one-line meaning.

It never fails a request: on a timeout, an unreachable or missing server, an error, or an
answer that is not a label, the embedding classifier's decision is used instead (without
one, ``other``, which routes to the default pool); each kind of fallback is counted and
logged once. ``p_escalate`` always comes from the embedding classifier's escalation head
(0 without it): the LLM only names the category.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.grpc_client import create_channel, request_metadata
from prometheus_client import Counter

from lalo_router.policy import OTHER_LABEL, Classification, Classifier
from lalo_router.replicas import Replica, ReplicaSet

log = logging.getLogger(__name__)

LLM_FALLBACKS = Counter(
    "lalo_router_llm_classify_fallbacks_total",
    "LLM classifications that fell back to the embedding classifier, by reason",
    ["reason"],
)

# What each category means for routing (from the training data's README); the prompt
# gives the model these one-liners.
LABEL_MEANINGS: dict[str, str] = {
    "chat": "greetings, small talk, chit-chat",
    "factual_qa": "a short factual question",
    "math": "arithmetic and word problems",
    "code": "write, fix or explain code",
    "extraction": "pull structured fields out of a given text",
    "summarization": "summarise a given text",
    "creative_writing": "stories, poems, slogans",
    "reasoning": "multi-step logic, tracking, planning questions",
    "agentic": "needs tools or several steps (look something up, then act); device or app commands",
}
DEFAULT_LABELS = tuple(LABEL_MEANINGS)
# The model reads the head and tail of a long request: enough to tell the kind of task,
# and prompt processing on a CPU costs time per token.
HEAD_CHARS, TAIL_CHARS = 1500, 500

SYSTEM_PROMPT = (
    "You sort requests for a router. Read the user's request and answer with the name of "
    "the one category that fits it best, and nothing else. Do not answer the request.\n\n"
    "Categories:\n{categories}"
)


def label_grammar(labels: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the labels (JSON string syntax is valid GBNF
    literal syntax)."""
    return "root ::= " + " | ".join(json.dumps(label) for label in labels) + "\n"


def clip(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n[...]\n" + text[-TAIL_CHARS:]


def build_messages(text: str, labels: Sequence[str]) -> list[ipb.ChatMessage]:
    categories = "\n".join(
        f"- {label}: {LABEL_MEANINGS[label]}" if label in LABEL_MEANINGS else f"- {label}"
        for label in labels
    )
    return [
        ipb.ChatMessage(role="system", content=SYSTEM_PROMPT.format(categories=categories)),
        ipb.ChatMessage(role="user", content=f"Request:\n{clip(text)}\n\nCategory:"),
    ]


def match_label(output: str, labels: Sequence[str]) -> str | None:
    """The label the model wrote; a cut-off answer (max_tokens) counts when it is the start
    of exactly one label."""
    output = output.strip()
    if output in labels:
        return output
    started = [label for label in labels if output and label.startswith(output)]
    return started[0] if len(started) == 1 else None


@dataclass
class LlmClassification:
    label: str
    confidence: float  # the model's own probability of the label's tokens (greedy path)
    p_escalate: float  # from the embedding classifier's escalation head; 0 without one
    latency_ms: float
    fallback: str = ""  # why the embedding decision was used instead; "" when the LLM answered
    output: str = ""  # what the model wrote
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def note(self) -> str:
        """What the route's reason adds about this decision."""
        return f"llm fallback: {self.fallback}" if self.fallback else "llm"

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "p_escalate": round(self.p_escalate, 6),
            "latency_ms": round(self.latency_ms, 4),
            "strategy": "llm",
            "fallback": self.fallback or None,
            "output": self.output,
        }


class LlmFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LlmClassifier:
    """The ``llm`` strategy (see the module docstring). Ask ``target`` when given, else the
    least busy of ``replicas`` serving ``model``."""

    name = "llm"

    def __init__(
        self,
        model: str,
        *,
        target: str = "",
        replicas: ReplicaSet | None = None,
        service_token: str = "",
        fallback: Classifier | None = None,
        labels: Sequence[str] | None = None,
        timeout_s: float = 2.0,
        max_tokens: int = 16,
    ) -> None:
        if not target and replicas is None:
            raise ValueError("the LLM classifier needs a target or the router's replicas")
        self.model = model
        self.target = target
        self.replicas = replicas
        self.service_token = service_token
        self.fallback = fallback
        fallback_labels = getattr(fallback, "labels", None)
        chosen = labels or fallback_labels or DEFAULT_LABELS
        self.labels: tuple[str, ...] = tuple(label for label in chosen if label != OTHER_LABEL)
        self.grammar = label_grammar(self.labels)
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self._channel: grpc.aio.Channel | None = None
        self._stub: inference_pb2_grpc.InferenceServiceStub | None = None
        self._reported: set[str] = set()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    def request(self, text: str, request_id: str = "") -> ipb.GenerateRequest:
        return ipb.GenerateRequest(
            request_id=request_id,
            model=self.model,
            chat=ipb.ChatInput(messages=build_messages(text, self.labels)),
            sampling=ipb.SamplingParams(
                max_tokens=self.max_tokens,
                temperature=0.0,
                logprobs=True,
                response_format=ipb.ResponseFormat(
                    type=ipb.ResponseFormat.GRAMMAR, grammar=self.grammar
                ),
            ),
        )

    async def classify(
        self, text: str, *, time_remaining: float | None = None, request_id: str = ""
    ) -> LlmClassification:
        start = time.perf_counter()
        base = self.fallback.classify(text) if self.fallback is not None else None
        if not text.strip():
            return self._fall_back(base, "empty", "nothing to classify", start, output="")
        timeout = min(self.timeout_s, time_remaining) if time_remaining else self.timeout_s
        output = ""
        try:
            output, logprob = await self._ask(text, timeout, request_id)
        except LlmFailure as failure:
            return self._fall_back(base, failure.reason, failure.detail, start, output)
        except Exception as exc:  # a routing decision must never fail the request
            log.exception("LLM classification failed unexpectedly")
            return self._fall_back(base, "error", repr(exc), start, output)
        label = match_label(output, self.labels)
        if label is None:
            return self._fall_back(
                base, "invalid", f"{output!r} is not a label", start, output=output
            )
        return LlmClassification(
            label=label,
            confidence=math.exp(logprob),
            p_escalate=base.p_escalate if base is not None else 0.0,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            output=output,
        )

    def _channel_stub(self) -> tuple[inference_pb2_grpc.InferenceServiceStub, Replica | None]:
        if self.target:
            if self._stub is None:  # made on first use, inside the event loop that uses it
                self._channel = create_channel(self.target, service_token=self.service_token)
                self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)
            return self._stub, None
        assert self.replicas is not None
        candidates = self.replicas.candidates(model=self.model)
        if not candidates:
            if self.replicas.candidates(model=self.model, include_saturated=True):
                raise LlmFailure("saturated", f"every replica serving {self.model!r} is busy")
            raise LlmFailure("no_replica", f"no available replica serves {self.model!r}")
        return candidates[0].stub, candidates[0]

    async def _ask(self, text: str, deadline_s: float, request_id: str) -> tuple[str, float]:
        """The model's answer and the sum of its tokens' log-probabilities."""
        stub, replica = self._channel_stub()
        if replica is not None:
            replica.outstanding += 1  # counts toward the replica's load like a chat does
        call = stub.Generate(
            self.request(text, request_id),
            timeout=deadline_s,
            metadata=request_metadata(request_id),
        )
        output, logprob = "", 0.0
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "chunk":
                    output += event.chunk.text
                    logprob += sum(token.logprob for token in event.chunk.tokens)
                elif kind == "error":
                    raise LlmFailure("error", event.error.message or "in-band error")
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            reason = {
                grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
                grpc.StatusCode.UNAVAILABLE: "unavailable",
            }.get(code, "error")
            raise LlmFailure(reason, f"{code.name}: {exc.details() or ''}") from None
        finally:
            if replica is not None:
                replica.outstanding -= 1
            call.cancel()
        return output, logprob

    def _fall_back(
        self,
        base: Classification | None,
        reason: str,
        detail: str,
        start: float,
        output: str,
    ) -> LlmClassification:
        if reason != "empty":
            LLM_FALLBACKS.labels(reason).inc()
            if reason not in self._reported:
                self._reported.add(reason)
                log.warning(
                    "LLM classification (%s at %s) fell back to the %s: %s",
                    self.model,
                    self.target or "the router's replicas",
                    "embedding classifier" if base is not None else "default pool",
                    detail,
                )
        return LlmClassification(
            label=base.label if base is not None else OTHER_LABEL,
            confidence=base.confidence if base is not None else 0.0,
            p_escalate=base.p_escalate if base is not None else 0.0,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            fallback=reason,
            output=output,
            scores=dict(getattr(base, "scores", {}) or {}),
        )

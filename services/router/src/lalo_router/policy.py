"""The routing policy: which pool answers a request, and why.

Loaded from YAML (``LALO_ROUTER_POLICY_PATH``)::

    default_pool: small
    pools:
      small: {supports: [json_schema, grammar, logprobs]}
      large: {supports: [json_schema, logprobs, tools]}
    categories:            # classifier label -> pool ("workflow": the complex path)
      chat: small
      factual_qa: small
      math: small
      code: large
      reasoning: large
      agentic: workflow
      other: small
    escalation:
      to: large            # where a request goes when the small model is likely to fail
      threshold: 0.6       # default p_escalate threshold
      thresholds: {math: 0.5, factual_qa: 0.7}
    fallbacks:             # pool -> pools tried in order when it has no healthy replica
      large: [small]
      small: [large]

A request naming a concrete model bypasses all of this; ``model: "auto"`` (or empty)
classifies. Requests with tools or a response format only go to pools that support them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import Unavailable
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, Field, ValidationError

from lalo_router.classify.messages import text_from_messages
from lalo_router.complex_path import WORKFLOW_MODEL, WORKFLOW_POOL
from lalo_router.forwarding import AUTO_MODELS, Route
from lalo_router.replicas import ReplicaSet

log = logging.getLogger(__name__)

ROUTES = Counter(
    "lalo_router_routes_total", "Requests routed, by pool and category", ["pool", "category"]
)
CLASSIFY_SECONDS = Histogram(
    "lalo_router_classify_seconds",
    "Time to classify one request",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1),
)


class Classification(Protocol):
    label: str
    confidence: float
    p_escalate: float
    latency_ms: float


class Classifier(Protocol):
    def classify(self, text: str) -> Classification: ...


class PoolSpec(BaseModel):
    supports: list[str] = Field(default_factory=list)
    model: str | None = None  # preferred model in the pool; else the first one served


class EscalationSpec(BaseModel):
    to: str | None = None
    threshold: float = Field(default=1.1, ge=0.0, le=1.1)  # > 1: never escalate
    thresholds: dict[str, float] = Field(default_factory=dict)


class PolicySpec(BaseModel):
    default_pool: str = "small"
    pools: dict[str, PoolSpec] = Field(default_factory=dict)
    categories: dict[str, str] = Field(default_factory=dict)
    escalation: EscalationSpec = Field(default_factory=EscalationSpec)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)


class PolicyError(ValueError):
    pass


def load_policy(path: Path | None, default_pool: str) -> PolicySpec:
    if path is None:
        return PolicySpec(default_pool=default_pool)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return PolicySpec.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise PolicyError(f"invalid routing policy {path}: {exc}") from exc


def text_to_classify(request: rpb.ChatRequest) -> str:
    """What the classifier reads: the raw prompt, or the last user turn of a chat (the
    classifier's own rule, which also bounds the length)."""
    if request.WhichOneof("input") != "chat":
        return text_from_messages([{"role": "user", "content": request.prompt}])
    return text_from_messages(request.chat.messages)


@dataclass
class RouteCounters:
    """Counts per route and classification latency, exported for operators."""

    routes: dict[str, int] = field(default_factory=dict)
    classify_ms: list[float] = field(default_factory=list)

    def record(self, route: Route) -> None:
        ROUTES.labels(route.pool, route.category or "explicit").inc()
        if route.classify_ms:
            CLASSIFY_SECONDS.observe(route.classify_ms / 1000.0)
        key = f"{route.pool}/{route.category or 'explicit'}"
        self.routes[key] = self.routes.get(key, 0) + 1
        if route.classify_ms:
            self.classify_ms.append(route.classify_ms)
            if len(self.classify_ms) > 10_000:
                del self.classify_ms[:5_000]


class PolicyRouter:
    def __init__(
        self,
        spec: PolicySpec,
        replicas: ReplicaSet,
        classifier: Classifier | None,
        workflows_enabled: bool = False,
    ) -> None:
        self.spec = spec
        self.replicas = replicas
        self.classifier = classifier
        self.workflows_enabled = workflows_enabled
        self.counters = RouteCounters()

    def _needs(self, request: rpb.ChatRequest) -> set[str]:
        needs: set[str] = set()
        if request.WhichOneof("input") == "chat" and len(request.chat.tools):
            needs.add("tools")
        fmt = request.sampling.response_format.type
        if fmt in (2, 3):  # JSON_OBJECT, JSON_SCHEMA
            needs.add("json_schema")
        elif fmt == 4:
            needs.add("grammar")
        if request.sampling.logprobs:
            needs.add("logprobs")
        return needs

    def _capable(self, pool: str, needs: set[str]) -> bool:
        spec = self.spec.pools.get(pool)
        if spec is None or not needs:
            return True  # pools without a declared capability list are not filtered
        return needs.issubset(spec.supports)

    def _healthy(self, pool: str) -> bool:
        if pool == WORKFLOW_POOL:
            return self.workflows_enabled
        return bool(self.replicas.candidates(pool=pool))

    def _resolve(self, preferred: str, needs: set[str]) -> tuple[str, str]:
        chain = [preferred, *self.spec.fallbacks.get(preferred, [])]
        if self.spec.default_pool not in chain:
            chain.append(self.spec.default_pool)
        for pool in chain:
            if self._capable(pool, needs) and self._healthy(pool):
                note = "" if pool == preferred else f"; {preferred} unavailable or incapable"
                return pool, note
        raise Unavailable(
            f"no healthy pool can serve this request (tried {', '.join(chain)}"
            + (f"; needs {', '.join(sorted(needs))}" if needs else "")
            + ")"
        )

    def _model(self, pool: str) -> str:
        if pool == WORKFLOW_POOL:
            return WORKFLOW_MODEL
        spec = self.spec.pools.get(pool)
        if spec and spec.model:
            return spec.model
        return self.replicas.model_for_pool(pool)

    def decide(self, request: rpb.ChatRequest) -> Route:
        if request.model == WORKFLOW_MODEL and self.workflows_enabled:
            route = Route(pool=WORKFLOW_POOL, model=WORKFLOW_MODEL, reason="explicit workflow")
            self.counters.record(route)
            return route
        if request.model not in AUTO_MODELS:
            self.replicas.require_model(request.model)
            pool = next(
                (r.pool for r in self.replicas.candidates(model=request.model)),
                self.spec.default_pool,
            )
            route = Route(pool=pool, model=request.model, reason="explicit model")
            self.counters.record(route)
            return route
        needs = self._needs(request)
        if self.classifier is None:
            pool, note = self._resolve(self.spec.default_pool, needs)
            route = Route(pool=pool, model=self._model(pool), reason="default pool" + note)
            self.counters.record(route)
            return route
        result = self.classifier.classify(text_to_classify(request))
        category = result.label
        preferred = self.spec.categories.get(category, self.spec.default_pool)
        reason = f"category {category} ({result.confidence:.2f})"
        escalation = self.spec.escalation
        threshold = escalation.thresholds.get(category, escalation.threshold)
        escalated = False
        if escalation.to and preferred != escalation.to and result.p_escalate >= threshold:
            preferred = escalation.to
            escalated = True
            reason += f"; p_escalate {result.p_escalate:.2f} >= {threshold:.2f}"
        pool, note = self._resolve(preferred, needs)
        route = Route(
            pool=pool,
            model=self._model(pool),
            reason=reason + note,
            category=category,
            category_confidence=result.confidence,
            p_escalate=result.p_escalate,
            classify_ms=result.latency_ms,
            escalated=escalated and pool == preferred,
        )
        self.counters.record(route)
        return route


def load_classifier() -> Classifier | None:
    """The trained category classifier, when its artifact is installed; None otherwise."""
    try:
        from lalo_router.classify import load_classifier as load
    except ImportError:
        log.warning("no category classifier installed: 'auto' goes to the default pool")
        return None
    try:
        classifier: Classifier = load()
    except Exception:  # a missing or broken artifact must not keep the router down
        log.exception(
            "the category classifier could not be loaded: 'auto' goes to the "
            "default pool until it is fixed"
        )
        return None
    return classifier

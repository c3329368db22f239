"""The routing policy: which pool answers a request, and why.

Loaded from YAML (``LALO_ROUTER_POLICY_PATH``; the full format is in the README)::

    default_pool: small
    pools:
      small:
        replicas: ["inference-small-0:50061", "inference-small-1:50061"]
        models: [qwen2.5-0.5b-instruct]   # preference order; else what the pool serves
        supports: [json_schema, grammar, logprobs]
        max_outstanding_per_replica: 8    # a replica at this many in flight is saturated
      large: {replicas: ["inference-large:50062"], supports: [json_schema, logprobs, tools]}
    categories:            # classifier label -> pool ("workflow": the complex path)
      chat: small
      code: large
      agentic: workflow
    escalation:
      to: large            # where a request goes when the small model is likely to fail
      threshold: 0.6       # default p_escalate threshold
      thresholds: {math: 0.5, factual_qa: 0.7}
    fallbacks:             # pool -> pools tried in order when it is down or saturated
      large: [small]
      small: [large]

A request naming a concrete model bypasses all of this; ``model: "auto"`` (or empty)
classifies. Requests with tools or a response format only go to pools that support them.
Replica endpoints come from the policy and from ``LALO_ROUTER_BACKENDS``; for a pool the
policy gives replicas, the policy's list wins (``merge_backends``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import ResourceExhausted, Unavailable
from prometheus_client import Counter, Histogram
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from lalo_router.classify.messages import text_from_messages
from lalo_router.complex_path import WORKFLOW_MODEL, WORKFLOW_POOL
from lalo_router.forwarding import AUTO_MODELS, Route
from lalo_router.replicas import ReplicaSet
from lalo_router.settings import is_target

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


# What a request may need from a pool (see PolicyRouter._needs).
Capability = Literal["tools", "json_schema", "grammar", "logprobs"]


def _endpoint(value: str) -> str:
    if not is_target(value):
        raise ValueError(f"{value!r} is not an endpoint: expected host:port")
    return value


Endpoint = Annotated[str, AfterValidator(_endpoint)]


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # gRPC endpoints of the pool's inference servers (merged with LALO_ROUTER_BACKENDS).
    replicas: list[Endpoint] = Field(default_factory=list)
    # Models to route "auto" requests to, in preference order; empty: whatever it serves.
    models: list[str] = Field(default_factory=list)
    model: str | None = None  # one preferred model (older spelling of ``models: [x]``)
    supports: list[Capability] = Field(default_factory=list)
    # In-flight requests a replica takes before it counts as saturated; None: no cap.
    max_outstanding_per_replica: int | None = Field(default=None, ge=1)

    def preferred_models(self) -> list[str]:
        return list(dict.fromkeys([*([self.model] if self.model else []), *self.models]))


class EscalationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str | None = None
    threshold: float = Field(default=1.1, ge=0.0, le=1.1)  # > 1: never escalate
    thresholds: dict[str, float] = Field(default_factory=dict)


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_pool: str = "small"
    pools: dict[str, PoolSpec] = Field(default_factory=dict)
    categories: dict[str, str] = Field(default_factory=dict)
    escalation: EscalationSpec = Field(default_factory=EscalationSpec)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)


class PolicyError(ValueError):
    pass


def _field_errors(exc: ValidationError) -> list[str]:
    """One ``field.path: message`` line per problem (pydantic's own text is harder to read)."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


def reference_errors(spec: PolicySpec, backend_pools: Iterable[str] = ()) -> list[str]:
    """Pool names the policy uses but nothing defines. A pool is defined by ``pools`` or by
    a LALO_ROUTER_BACKENDS entry; ``workflow`` is the complex path's reserved name."""
    inference_pools = set(spec.pools) | set(backend_pools)
    known = inference_pools | {WORKFLOW_POOL}
    shown = ", ".join(sorted(inference_pools)) or "none"
    errors: list[str] = []

    def check(where: str, pool: str, allowed: set[str] = known) -> None:
        if pool not in allowed:
            errors.append(f"{where}: pool {pool!r} is not defined (defined pools: {shown})")

    if WORKFLOW_POOL in spec.pools:
        errors.append(f"pools.{WORKFLOW_POOL}: the name is reserved for the complex path")
    check("default_pool", spec.default_pool, inference_pools)
    for category, pool in spec.categories.items():
        check(f"categories.{category}", pool)
    if spec.escalation.to is not None:
        check("escalation.to", spec.escalation.to)
    for pool, chain in spec.fallbacks.items():
        check(f"fallbacks.{pool}", pool)
        for index, target in enumerate(chain):
            check(f"fallbacks.{pool}.{index}", target)
    for pool, pool_spec in spec.pools.items():
        seen: set[str] = set()
        for index, target in enumerate(pool_spec.replicas):
            if target in seen:
                errors.append(f"pools.{pool}.replicas.{index}: {target!r} is listed twice")
            seen.add(target)
    return errors


def load_policy(
    path: Path | None, default_pool: str, backend_pools: Iterable[str] = ()
) -> PolicySpec:
    """Read and check the policy file; ``backend_pools`` are the pools LALO_ROUTER_BACKENDS
    defines. Every problem is reported at once, each with the field it is in. Without a file
    the policy is "everything to ``default_pool``" and is not checked."""
    if path is None:
        return PolicySpec(default_pool=default_pool)
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"invalid routing policy {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise PolicyError(f"invalid routing policy {path}: expected a mapping at the top level")
    raw.setdefault("default_pool", default_pool)
    try:
        spec = PolicySpec.model_validate(raw)
    except ValidationError as exc:
        problems = _field_errors(exc)
    else:
        problems = reference_errors(spec, backend_pools)
    if problems:
        raise PolicyError(f"invalid routing policy {path}:\n  " + "\n  ".join(problems))
    return spec


def merge_backends(
    spec: PolicySpec, env_backends: list[tuple[str, str]], *, env_explicit: bool = True
) -> list[tuple[str, str]]:
    """Every (pool, target) the router dials. For a pool whose replicas the policy lists,
    the policy wins and LALO_ROUTER_BACKENDS entries for that pool are ignored (logged when
    the variable was set on purpose, ``env_explicit``); other pools keep their entries."""
    from_policy = [(pool, target) for pool, p in spec.pools.items() for target in p.replicas]
    policy_pools = {pool for pool, _ in from_policy}
    ignored = [f"{pool}={target}" for pool, target in env_backends if pool in policy_pools]
    if ignored and env_explicit:
        log.warning(
            "LALO_ROUTER_BACKENDS entries %s ignored: the routing policy lists those pools' "
            "replicas",
            ", ".join(ignored),
        )
    return from_policy + [(pool, t) for pool, t in env_backends if pool not in policy_pools]


def replica_limits(spec: PolicySpec) -> dict[str, int | None]:
    """The per-replica cap of outstanding requests, by pool (for ReplicaSet)."""
    return {pool: p.max_outstanding_per_replica for pool, p in spec.pools.items()}


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

    def _pool_state(self, pool: str) -> Literal["ok", "saturated", "down"]:
        """ "down": no available replica serves the pool's models; "saturated": some do, but
        every one is at its cap of outstanding requests."""
        if pool == WORKFLOW_POOL:
            return "ok" if self.workflows_enabled else "down"
        live = self.replicas.candidates(pool=pool, include_saturated=True)
        spec = self.spec.pools.get(pool)
        wanted = spec.preferred_models() if spec else []
        if wanted:
            live = [r for r in live if any(m in r.models for m in wanted)]
        if not live:
            return "down"
        return "saturated" if all(r.saturated for r in live) else "ok"

    def _resolve(self, preferred: str, needs: set[str]) -> tuple[str, str]:
        chain = [preferred, *self.spec.fallbacks.get(preferred, [])]
        if self.spec.default_pool not in chain:
            chain.append(self.spec.default_pool)
        skipped: list[str] = []
        for pool in dict.fromkeys(chain):
            if not self._capable(pool, needs):
                skipped.append(f"{pool} lacks {', '.join(sorted(needs))}")
                continue
            state = self._pool_state(pool)
            if state == "ok":
                return pool, "".join(f"; {note}" for note in skipped)
            skipped.append(f"{pool} {state}")
        needed = f"; needs {', '.join(sorted(needs))}" if needs else ""
        if any(note.endswith(" saturated") for note in skipped):
            # Healthy pools at their caps: the caller may retry later (429 upstream).
            raise ResourceExhausted(
                f"every pool that can serve this request is busy ({'; '.join(skipped)}{needed})"
            )
        raise Unavailable(
            f"no healthy pool can serve this request (tried {', '.join(chain)}{needed})"
        )

    def _model(self, pool: str) -> str:
        if pool == WORKFLOW_POOL:
            return WORKFLOW_MODEL
        spec = self.spec.pools.get(pool)
        for model in spec.preferred_models() if spec else []:
            if self.replicas.candidates(pool=pool, model=model):
                return model
        return self.replicas.model_for_pool(pool)

    def decide(self, request: rpb.ChatRequest) -> Route:
        if request.model == WORKFLOW_MODEL and self.workflows_enabled:
            route = Route(pool=WORKFLOW_POOL, model=WORKFLOW_MODEL, reason="explicit workflow")
            self.counters.record(route)
            return route
        if request.model not in AUTO_MODELS:
            self.replicas.require_model(request.model)
            pool = next(
                (
                    r.pool
                    for r in self.replicas.candidates(model=request.model, include_saturated=True)
                ),
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

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
      threshold: pgr50     # default p_escalate threshold: a number, or an operating point
      thresholds: {math: pgr80, factual_qa: 0.7}   # of the classifier (see _threshold)
    fallbacks:             # pool -> pools tried in order when it is down or saturated
      large: [small]
      small: [large]

A request naming a concrete model bypasses all of this; ``model: "auto"`` (or empty)
classifies. Requests with tools or a response format only go to pools that support them.
Only text models answer chats: an embedding model a pool's replicas serve beside them is
never chosen for ``auto`` (nor named: that is an error pointing to /v1/embeddings).
Replica endpoints come from the policy and from ``LALO_ROUTER_BACKENDS``; for a pool the
policy gives replicas, the policy's list wins (``merge_backends``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, cast

import yaml
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import (
    InvalidArgument,
    LaloError,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from prometheus_client import Counter, Histogram
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from lalo_router.classify.messages import text_from_messages
from lalo_router.complex_path import WORKFLOW_MODEL, WORKFLOW_POOL
from lalo_router.forwarding import AUTO_MODELS, Route, offers_tools
from lalo_router.replicas import ReplicaSet
from lalo_router.settings import is_target

log = logging.getLogger(__name__)
OTHER_LABEL = "other"  # what a classifier answers when no category is likely enough

ROUTES = Counter(
    "lalo_router_routes_total", "Requests routed, by pool and category", ["pool", "category"]
)
CLASSIFY_SECONDS = Histogram(
    "lalo_router_classify_seconds",
    "Time to classify one request, by strategy",
    ["strategy"],
    # Milliseconds for the embedding classifier, up to seconds for an LLM on a CPU.
    buckets=(0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)


class Classification(Protocol):
    label: str
    confidence: float
    p_escalate: float
    latency_ms: float


class Classifier(Protocol):
    """The embedding classifier (``classify/model.py``): a category and p_escalate per
    text, and the p_escalate thresholds of its named operating points ("pgr50": recovers
    about half of the small→large quality gap), per category where the artifact has one,
    else global; None for a name it does not know."""

    def classify(self, text: str) -> Classification: ...

    def escalation_threshold(
        self, operating_point: str, category: str | None = None
    ) -> float | None: ...


class Strategy(Protocol):
    """How "auto" requests are classified (``LALO_ROUTER_CLASSIFIER``): ``embedding``
    (EmbeddingStrategy) or ``llm`` (llm_classifier.LlmClassifier). It never raises: a
    strategy that cannot decide answers ``other``."""

    name: str

    async def classify(
        self, text: str, *, time_remaining: float | None = None, request_id: str = ""
    ) -> Classification: ...

    async def close(self) -> None: ...


class EmbeddingStrategy:
    """The trained embedding classifier, run on its own worker threads: usually a fraction
    of a millisecond, but an unsure prompt also runs the full MiniLM (1-5 ms), during which
    onnxruntime releases the GIL, so the event loop keeps relaying other requests' tokens."""

    name = "embedding"

    def __init__(self, classifier: Classifier, workers: int = 2) -> None:
        self.classifier = classifier
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify")

    async def classify(
        self, text: str, *, time_remaining: float | None = None, request_id: str = ""
    ) -> Classification:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.classifier.classify, text)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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


NEVER_ESCALATE = 1.1  # above any probability
OPERATING_POINT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _threshold(value: object) -> float | str:
    """A p_escalate threshold in [0, 1.1] (above 1: never), or an operating point's name."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0.0 <= value <= NEVER_ESCALATE:
            raise ValueError(f"{value} is out of range: a threshold is in [0, 1] (1.1: never)")
        return float(value)
    if isinstance(value, str) and OPERATING_POINT.fullmatch(value):
        return value
    raise ValueError(
        f"{value!r} is neither a number in [0, 1] nor an operating point name (e.g. pgr50)"
    )


Threshold = Annotated[float | str, PlainValidator(_threshold)]


class EscalationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str | None = None
    threshold: Threshold = NEVER_ESCALATE
    thresholds: dict[str, Threshold] = Field(default_factory=dict)

    def named(self) -> dict[str, tuple[str, str | None]]:
        """Each operating point the policy names: field -> (name, category)."""
        out: dict[str, tuple[str, str | None]] = {}
        if isinstance(self.threshold, str):
            out["escalation.threshold"] = (self.threshold, None)
        for category, value in self.thresholds.items():
            if isinstance(value, str):
                out[f"escalation.thresholds.{category}"] = (value, category)
        return out


Confidence = Annotated[float, Field(ge=0.0, le=1.0)]


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_pool: str = "small"
    pools: dict[str, PoolSpec] = Field(default_factory=dict)
    categories: dict[str, str] = Field(default_factory=dict)
    # The confidence a label needs to take its category's route; below it the request is
    # routed as ``other`` (for a costly route: a workflow is several model calls).
    min_confidence: dict[str, Confidence] = Field(default_factory=dict)
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


def classifier_errors(spec: PolicySpec, classifier: Classifier | None) -> list[str]:
    """What the policy asks of the classifier that it does not have: operating points it
    does not know, and category names it never outputs (a typo would never match)."""
    if classifier is None:
        return []
    errors: list[str] = []
    labels = getattr(classifier, "labels", None)
    if labels is not None:
        known = {*labels, OTHER_LABEL}
        shown = ", ".join(sorted(known))
        for where, names in (
            ("categories", spec.categories),
            ("min_confidence", spec.min_confidence),
            ("escalation.thresholds", spec.escalation.thresholds),
        ):
            for name in names:
                if name not in known:
                    errors.append(
                        f"{where}.{name}: the classifier has no category {name!r} ({shown})"
                    )
    if OTHER_LABEL in spec.min_confidence:
        errors.append(
            f"min_confidence.{OTHER_LABEL}: labels under their minimum are routed as "
            f"{OTHER_LABEL}, which has none"
        )
    resolve = getattr(classifier, "escalation_threshold", None)
    if resolve is None:
        return errors
    for where, (name, category) in spec.escalation.named().items():
        if resolve(name, category) is None:
            errors.append(f"{where}: the classifier has no operating point {name!r}")
    return errors


LARGE_POOL = "large"
# What a completions-style request (a raw prompt, not messages) needs of a pool: only the
# complex path lacks it, so no pool declares it.
RAW_PROMPT = "raw_prompt"
# The categories whose p_escalate was learned: the outcome data are benchmark questions
# (MMLU, GSM8K, ARC, Winogrande). Elsewhere it is an extrapolation: a long text to
# summarise reads as "hard" to it (pgr50 would send ~90 % of summaries to the large pool).
LEARNED_ESCALATION = ("factual_qa", "math", "reasoning")
DEFAULT_OPERATING_POINT = "pgr50"
# How sure the classifier must be of `agentic` before a request becomes a workflow (several
# model calls, against one for a direct answer). In grouped cross-validation (MODEL_CARD.md)
# 0.5 keeps 93 % of the right `agentic` calls and drops a third of the wrong ones (48 of
# 143; precision 0.948 -> 0.962); everyday requests unlike the training sources are often
# called `agentic` with more confidence than that, so it is a guard, not a cure.
WORKFLOW_MIN_CONFIDENCE = 0.5


def default_policy(
    default_pool: str, backend_pools: Iterable[str] = (), *, workflows: bool = False
) -> PolicySpec:
    """The policy without a file, from what the deployment has: with a ``large`` pool,
    code goes there and factual, maths and reasoning questions escalate to it at the
    classifier's pgr50 point (~half the small->large quality gap recovered); with an
    orchestrator, agentic requests become workflows; each inference pool falls back to the
    others. With one pool and no orchestrator everything goes to ``default_pool``."""
    pools = list(dict.fromkeys([default_pool, *sorted(backend_pools)]))
    categories: dict[str, str] = {}
    escalation = EscalationSpec()
    if LARGE_POOL in pools and default_pool != LARGE_POOL:
        categories["code"] = LARGE_POOL
        escalation = EscalationSpec(
            to=LARGE_POOL,
            threshold=NEVER_ESCALATE,
            thresholds=dict.fromkeys(LEARNED_ESCALATION, DEFAULT_OPERATING_POINT),
        )
    min_confidence: dict[str, float] = {}
    if workflows:
        categories["agentic"] = WORKFLOW_POOL
        min_confidence["agentic"] = WORKFLOW_MIN_CONFIDENCE
    fallbacks = {pool: [other for other in pools if other != pool] for pool in pools}
    return PolicySpec(
        default_pool=default_pool,
        categories=categories,
        min_confidence=min_confidence,
        escalation=escalation,
        fallbacks=fallbacks if len(pools) > 1 else {},
    )


def describe_policy(spec: PolicySpec) -> str:
    """One line for the start-up log: what ``auto`` requests do under ``spec``."""
    parts = [f"default pool {spec.default_pool}"]
    parts += [f"{category} -> {pool}" for category, pool in sorted(spec.categories.items())]
    parts += [
        f"{category} under {floor:.2f} confidence as {OTHER_LABEL}"
        for category, floor in sorted(spec.min_confidence.items())
    ]
    escalation = spec.escalation
    if escalation.to:
        rules = [
            f"{category} at {value}"
            for category, value in sorted(escalation.thresholds.items())
            if value != NEVER_ESCALATE
        ]
        if escalation.threshold != NEVER_ESCALATE:
            rules.append(f"the rest at {escalation.threshold}")
        parts.append(f"escalate to {escalation.to}: {', '.join(rules) or 'never'}")
    parts += [f"{pool} falls back to {', '.join(chain)}" for pool, chain in spec.fallbacks.items()]
    return "; ".join(parts)


def load_policy(
    path: Path | None,
    default_pool: str,
    backend_pools: Iterable[str] = (),
    *,
    workflows: bool = False,
) -> PolicySpec:
    """Read and check the policy file; ``backend_pools`` are the pools LALO_ROUTER_BACKENDS
    defines, ``workflows`` whether an orchestrator is configured. Every problem is reported
    at once, each with the field it is in. Without a file: ``default_policy``."""
    if path is None:
        return default_policy(default_pool, backend_pools, workflows=workflows)
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


def has_token_ids(request: rpb.ChatRequest) -> bool:
    """Whether the request's prompt (or a prompt of its list) is token ids."""
    which = request.WhichOneof("input")
    return which == "prompt_token_ids" or (
        which == "prompts" and len(request.prompts.token_prompts) > 0
    )


def _refuse_token_ids(request: rpb.ChatRequest) -> None:
    """An "auto" request with token ids cannot be routed: refused before classification."""
    if has_token_ids(request):
        raise InvalidArgument(
            "token-id prompts need a named model: ids mean something in one model's "
            "vocabulary only, and 'auto' may pick any model. Name the model, or send text.",
            param="prompt",
        )


def texts_to_classify(request: rpb.ChatRequest) -> list[str]:
    """What the classifier reads: the raw prompt (each of a list of them), or the last user
    turn of a chat (the classifier's own rule, which also bounds the length)."""
    which = request.WhichOneof("input")
    if which == "chat":
        return [text_from_messages(request.chat.messages)]
    prompts = list(request.prompts.prompts) if which == "prompts" else [request.prompt]
    return [text_from_messages([{"role": "user", "content": p}]) for p in prompts or [""]]


@dataclass
class BatchClassification:
    """A list of prompts classified as one: the classification of the prompt that decides
    its route (``PolicyRouter._hardest``), the time all of them took."""

    label: str
    confidence: float
    p_escalate: float
    latency_ms: float
    note: str


@dataclass
class RouteCounters:
    """Counts per route and classification latency, exported for operators."""

    routes: dict[str, int] = field(default_factory=dict)
    classify_ms: list[float] = field(default_factory=list)

    def record(self, route: Route, strategy: str = "") -> None:
        ROUTES.labels(route.pool, route.category or "explicit").inc()
        if route.classify_ms:
            CLASSIFY_SECONDS.labels(strategy or "embedding").observe(route.classify_ms / 1000.0)
        key = f"{route.pool}/{route.category or 'explicit'}"
        self.routes[key] = self.routes.get(key, 0) + 1
        if route.classify_ms:
            self.classify_ms.append(route.classify_ms)
            if len(self.classify_ms) > 10_000:
                del self.classify_ms[:5_000]


class PolicyRouter:
    """Decides each request's route. ``route`` (async) classifies an "auto" request with
    the strategy and calls ``decide``, the synchronous core that applies the policy to a
    request and its classification. ``classifier`` is the embedding classifier: the
    default strategy, and where named escalation thresholds are resolved."""

    def __init__(
        self,
        spec: PolicySpec,
        replicas: ReplicaSet,
        classifier: Classifier | None,
        workflows_enabled: bool = False,
        *,
        strategy: Strategy | None = None,
    ) -> None:
        self.spec = spec
        self.replicas = replicas
        self.classifier = classifier
        self.strategy: Strategy | None = strategy or (
            EmbeddingStrategy(classifier) if classifier is not None else None
        )
        self.workflows_enabled = workflows_enabled
        self.counters = RouteCounters()
        self._warned: set[tuple[str, str | None]] = set()
        problems = classifier_errors(spec, classifier)
        if problems:
            raise PolicyError(
                "routing policy does not fit the classifier:\n  " + "\n  ".join(problems)
            )
        named = spec.escalation.named()
        if named and classifier is not None and not hasattr(classifier, "escalation_threshold"):
            self._warn_once(
                ("", None),
                "the classifier has no operating points (escalation_threshold): named "
                "escalation thresholds fall back to the numeric default or never escalate",
            )

    def _needs(self, request: rpb.ChatRequest) -> set[str]:
        needs: set[str] = set()
        if request.WhichOneof("input") != "chat":
            needs.add(RAW_PROMPT)
        elif offers_tools(request.chat):
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
        if pool == WORKFLOW_POOL:
            # A workflow plans from messages and answers in plain text: it cannot take a
            # raw prompt, hand the caller's tool calls back, follow a response format or
            # report logprobs.
            return not needs
        declared = needs - {RAW_PROMPT}  # every inference pool takes a raw prompt
        spec = self.spec.pools.get(pool)
        if spec is None or not declared:
            return True  # pools without a declared capability list are not filtered
        return declared.issubset(spec.supports)

    def _pool_state(
        self, pool: str, allowed: frozenset[str] = frozenset()
    ) -> Literal["ok", "saturated", "down", "not allowed"]:
        """ "down": no available replica serves the pool's (text) models; "not allowed":
        some do, but none of the models the caller may use (``allowed``; empty: any);
        "saturated": some do, but every one is at its cap of outstanding requests."""
        if pool == WORKFLOW_POOL:
            if not self.workflows_enabled:
                return "down"
            return "not allowed" if allowed and WORKFLOW_MODEL not in allowed else "ok"
        # A replica serving only embedding models cannot answer a chat.
        live = self.replicas.candidates(pool=pool, include_saturated=True, embeddings=False)
        spec = self.spec.pools.get(pool)
        wanted = spec.preferred_models() if spec else []
        if wanted:
            live = [r for r in live if any(m in r.text_models() for m in wanted)]
        if not live:
            return "down"
        if allowed:
            # A replica counts when it serves a text model that is both wanted and allowed.
            usable = allowed.intersection(wanted) if wanted else allowed
            live = [r for r in live if any(m in usable for m in r.text_models())]
            if not live:
                return "not allowed"
        return "saturated" if all(r.saturated for r in live) else "ok"

    def _resolve(
        self, preferred: str, needs: set[str], allowed: frozenset[str] = frozenset()
    ) -> tuple[str, str]:
        default = self.spec.default_pool
        chain = [preferred, *self.spec.fallbacks.get(preferred, [])]
        if default not in chain:
            # The last resort is the default pool as it would route itself: with its own
            # fallbacks (an agentic request with tools, which no workflow can take, reaches
            # the pool that has tools when the default one lacks them).
            chain += [default, *self.spec.fallbacks.get(default, [])]
        skipped: list[str] = []
        for pool in dict.fromkeys(chain):
            if not self._capable(pool, needs):
                skipped.append(f"{pool} lacks {', '.join(sorted(needs))}")
                continue
            state = self._pool_state(pool, allowed)
            if state == "ok":
                return pool, "".join(f"; {note}" for note in skipped)
            skipped.append(f"{pool} {state}")
        declared = sorted(needs - {RAW_PROMPT})
        needed = f"; needs {', '.join(declared)}" if declared else ""
        if any(note.endswith(" saturated") for note in skipped):
            # Healthy pools at their caps: the caller may retry later (429 upstream).
            raise ResourceExhausted(
                f"every pool that can serve this request is busy ({'; '.join(skipped)}{needed})"
            )
        if any(note.endswith(" not allowed") for note in skipped):
            raise PermissionDenied(
                "This API key may not use any model that can serve this request "
                f"({'; '.join(skipped)}{needed}); its models: {', '.join(sorted(allowed))}."
            )
        raise Unavailable(
            f"no healthy pool can serve this request (tried {', '.join(chain)}{needed})"
        )

    def _warn_once(self, key: tuple[str, str | None], message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _operating_point(self, name: str, category: str) -> float | None:
        resolve = getattr(self.classifier, "escalation_threshold", None)
        if resolve is None:
            return None
        try:
            value = resolve(name, category)
        except Exception:  # a routing decision must not fail on a classifier bug
            log.exception("escalation_threshold(%r, %r) failed", name, category)
            value = None
        if value is None:
            self._warn_once(
                (name, category),
                "operating point %s has no threshold for category %s; using the fallback",
                name,
                category,
            )
            return None
        return float(value)

    def _threshold(self, category: str) -> tuple[float, str]:
        """The p_escalate threshold for ``category`` and how the reason shows it. A named
        operating point is resolved now, per category; one that cannot be (no classifier
        support, or no value) falls back to the global threshold, then to never escalating."""
        escalation = self.spec.escalation
        configured = [escalation.thresholds.get(category, escalation.threshold)]
        if category in escalation.thresholds:
            configured.append(escalation.threshold)
        for value in configured:
            if not isinstance(value, str):
                return value, f"{value:.2f}"
            resolved = self._operating_point(value, category)
            if resolved is not None:
                return resolved, f"{resolved:.2f} ({value})"
        return NEVER_ESCALATE, "never"

    def _model(self, pool: str, allowed: frozenset[str] = frozenset()) -> str:
        if pool == WORKFLOW_POOL:
            return WORKFLOW_MODEL
        spec = self.spec.pools.get(pool)
        for model in spec.preferred_models() if spec else []:
            if (not allowed or model in allowed) and self.replicas.candidates(
                pool=pool, model=model, embeddings=False
            ):
                return model
        return self.replicas.model_for_pool(pool, allowed)

    def classifies(self, request: rpb.ChatRequest) -> bool:
        """Whether ``request`` is routed by its category (else by the model it names). An
        "auto" request with token ids is refused here, before anything reads it."""
        explicit_workflow = request.model == WORKFLOW_MODEL and self.workflows_enabled
        if request.model not in AUTO_MODELS or explicit_workflow:
            return False
        _refuse_token_ids(request)
        return True

    async def route(self, request: rpb.ChatRequest, time_remaining: float | None = None) -> Route:
        """Classify (when the request is "auto" and there is a strategy), then decide."""
        result: Classification | None = None
        # (classifies() first: it refuses what no route can take, strategy or not.)
        if self.classifies(request) and self.strategy is not None:
            strategy = self.strategy
            texts = texts_to_classify(request)
            if len(texts) == 1:  # the usual case, without a task per text
                result = await strategy.classify(
                    texts[0], time_remaining=time_remaining, request_id=request.request_id
                )
            else:
                results = await asyncio.gather(
                    *(
                        strategy.classify(
                            text, time_remaining=time_remaining, request_id=request.request_id
                        )
                        for text in texts
                    )
                )
                result = self._hardest(list(results))
        return self.decide(request, result)

    def _hardest(self, results: list[Classification]) -> BatchClassification:
        """One route for a list of prompts (one model answers a response): the route of
        the prompt that most needs the bigger model, the furthest past (or closest to) its
        category's escalation threshold, so no prompt is answered by a smaller model than
        it would get alone; the first of equals."""

        def need(result: Classification) -> float:
            threshold, _ = self._threshold(self._routed_as(result)[0])
            return result.p_escalate - threshold

        index = max(range(len(results)), key=lambda i: (need(results[i]), -i))
        chosen = results[index]
        own_note = getattr(chosen, "note", "")
        return BatchClassification(
            label=chosen.label,
            confidence=chosen.confidence,
            p_escalate=chosen.p_escalate,
            latency_ms=sum(r.latency_ms for r in results),
            note=f"prompt {index + 1} of {len(results)} routes the batch"
            + (f"; {own_note}" if own_note else ""),
        )

    def _routed_as(self, result: Classification) -> tuple[str, str]:
        """The category whose route ``result`` takes: its label, or ``other`` when the label
        is less sure than its ``min_confidence`` (and the reason's note saying so)."""
        floor = self.spec.min_confidence.get(result.label)
        if floor is not None and result.confidence < floor:
            return OTHER_LABEL, f" under its minimum {floor:.2f}: routed as {OTHER_LABEL}"
        return result.label, ""

    def decide(self, request: rpb.ChatRequest, result: Classification | None = None) -> Route:
        """The route for ``request``; ``result`` is its classification (None: none was
        made, and "auto" goes to the default pool)."""
        route = self._decide(request, result)
        self.counters.record(route, self.strategy.name if self.strategy else "")
        return route

    def _decide(self, request: rpb.ChatRequest, result: Classification | None) -> Route:
        if request.model == WORKFLOW_MODEL and self.workflows_enabled:
            return Route(pool=WORKFLOW_POOL, model=WORKFLOW_MODEL, reason="explicit workflow")
        if request.model not in AUTO_MODELS:
            routes = ["auto", *([WORKFLOW_MODEL] if self.workflows_enabled else [])]
            self.replicas.require_model(request.model, routes)
            if self.replicas.models()[request.model].embeddings:
                raise InvalidArgument(
                    f"'{request.model}' is an embedding model: use /v1/embeddings",
                    param="model",
                )
            pool = next(
                (
                    r.pool
                    for r in self.replicas.candidates(model=request.model, include_saturated=True)
                ),
                self.spec.default_pool,
            )
            return Route(pool=pool, model=request.model, reason="explicit model")
        needs = self._needs(request)
        # The caller's model allowlist (the gateway's word; empty: any model).
        allowed = frozenset(request.allowed_models)
        if result is None:
            pool, note = self._resolve(self.spec.default_pool, needs, allowed)
            return Route(pool=pool, model=self._model(pool, allowed), reason="default pool" + note)
        category = result.label
        reason = f"category {category} ({result.confidence:.2f}"
        strategy_note = getattr(result, "note", "")
        reason += f", {strategy_note})" if strategy_note else ")"
        routed_as, under = self._routed_as(result)
        reason += under
        preferred = self.spec.categories.get(routed_as, self.spec.default_pool)
        escalation = self.spec.escalation
        escalated = False
        if escalation.to and preferred != escalation.to:
            threshold, shown = self._threshold(routed_as)
            if result.p_escalate >= threshold:
                preferred = escalation.to
                escalated = True
                reason += f"; p_escalate {result.p_escalate:.2f} >= {shown}"
        pool, note = self._resolve(preferred, needs, allowed)
        route = Route(
            pool=pool,
            model=self._model(pool, allowed),
            reason=reason + note,
            category=category,
            category_confidence=result.confidence,
            p_escalate=result.p_escalate,
            classify_ms=result.latency_ms,
            escalated=escalated and pool == preferred,
        )
        if pool == WORKFLOW_POOL:
            route = dataclasses.replace(route, direct=self._direct(route, needs, allowed))
        return route

    def _direct(self, route: Route, needs: set[str], allowed: frozenset[str]) -> Route | None:
        """Where a workflow the policy chose is answered instead when it does not answer:
        the default pool as it would route itself (None when no pool can take it now)."""
        try:
            pool, note = self._resolve(self.spec.default_pool, needs, allowed)
            if pool == WORKFLOW_POOL:
                return None
            model = self._model(pool, allowed)
        except LaloError:
            return None
        return dataclasses.replace(
            route,
            pool=pool,
            model=model,
            reason=f"{route.reason}; the workflow did not answer{note}",
            direct=None,
        )


def load_classifier() -> Classifier | None:
    """The trained category classifier, when its artifact is installed; None otherwise."""
    try:
        from lalo_router.classify import load_classifier as load
    except ImportError:
        log.warning("no category classifier installed: 'auto' goes to the default pool")
        return None
    try:
        # cast: artifacts from before operating points lack escalation_threshold; the
        # router checks for it at run time (PolicyRouter._operating_point).
        classifier = cast(Classifier, load())
    except Exception:  # a missing or broken artifact must not keep the router down
        log.exception(
            "the category classifier could not be loaded: 'auto' goes to the "
            "default pool until it is fixed"
        )
        return None
    return classifier

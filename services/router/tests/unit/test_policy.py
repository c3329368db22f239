"""Routing policy: category → pool, escalation, capability filters, fallbacks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from lalo_router.llm_classifier import DEFAULT_LABELS
from lalo_router.policy import (
    PolicyError,
    PolicyRouter,
    PolicySpec,
    describe_policy,
    load_policy,
    merge_backends,
    replica_limits,
    texts_to_classify,
)
from lalo_router.replicas import Replica, ReplicaSet
from lalo_router.server import load_routing
from lalo_router.settings import RouterSettings


@dataclass
class Result:
    label: str
    confidence: float = 0.9
    p_escalate: float = 0.1
    latency_ms: float = 1.5
    note: str = ""


class FakeClassifier:
    def __init__(self, result: Result) -> None:
        self.result = result
        self.seen: list[str] = []

    def classify(self, text: str) -> Result:
        self.seen.append(text)
        return self.result


def replica(
    pool: str,
    *models: str,
    healthy: bool = True,
    outstanding: int = 0,
    limit: int | None = None,
    target: str = "",
    embeddings: tuple[str, ...] = (),
) -> Replica:
    """``embeddings``: which of ``models`` are embedding models."""
    return Replica(
        pool=pool,
        target=target or f"{pool}:1",
        stub=None,
        channel=None,  # type: ignore[arg-type]
        models={model: ipb.ModelInfo(id=model, embeddings=model in embeddings) for model in models},
        healthy=healthy,
        outstanding=outstanding,
        max_outstanding=limit,
    )


def replicas(**pools: tuple[str, bool]) -> ReplicaSet:
    """pools: name=(model, healthy)."""
    return replica_set(*(replica(p, model, healthy=ok) for p, (model, ok) in pools.items()))


def replica_set(*items: Replica) -> ReplicaSet:
    rs = ReplicaSet([])
    rs.replicas.extend(items)
    return rs


SPEC = PolicySpec.model_validate(
    {
        "default_pool": "small",
        "pools": {
            "small": {"supports": ["json_schema", "logprobs"]},
            "large": {"supports": ["json_schema", "logprobs", "tools"]},
        },
        "categories": {"chat": "small", "code": "large", "math": "small"},
        "escalation": {"to": "large", "threshold": 0.6, "thresholds": {"math": 0.4}},
        "fallbacks": {"large": ["small"], "small": ["large"]},
    }
)


def chat(text: str, model: str = "auto") -> rpb.ChatRequest:
    request = rpb.ChatRequest(model=model)
    request.chat.messages.add(role="user", content=text)
    return request


async def test_category_picks_its_pool() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("code"))
    )
    route = await router.route(chat("write a sort in rust"))
    assert (route.pool, route.model, route.category) == ("large", "l", "code")
    assert route.classify_ms == 1.5


async def test_escalation_over_threshold_goes_up() -> None:
    router = PolicyRouter(
        SPEC,
        replicas(small=("s", True), large=("l", True)),
        FakeClassifier(Result("chat", p_escalate=0.7)),
    )
    route = await router.route(chat("hi"))
    assert route.pool == "large"
    assert route.escalated
    assert "p_escalate" in route.reason


async def test_per_route_threshold() -> None:
    classifier = FakeClassifier(Result("math", p_escalate=0.45))
    router = PolicyRouter(SPEC, replicas(small=("s", True), large=("l", True)), classifier)
    assert (await router.route(chat("2+2"))).pool == "large"
    classifier.result = Result("chat", p_escalate=0.45)
    assert (await router.route(chat("hi"))).pool == "small"


async def test_unknown_category_goes_to_default_pool() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("other"))
    )
    assert (await router.route(chat("???"))).pool == "small"


async def test_the_reason_says_why_a_prompt_is_other() -> None:
    unreadable = Result("other", confidence=0.4, note="unreadable text")
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(unreadable)
    )
    route = await router.route(chat("asdkjh qwe zxcmnb"))
    assert route.reason.startswith("category other (0.40, unreadable text)")


async def test_fallback_when_pool_down() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", False)), FakeClassifier(Result("code"))
    )
    route = await router.route(chat("code please"))
    assert route.pool == "small"
    assert "large down" in route.reason


async def test_tools_need_a_capable_pool() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("chat"))
    )
    request = chat("call a tool")
    request.chat.tools.add(name="calculator", parameters_json="{}")
    assert (await router.route(request)).pool == "large"


async def test_no_capable_healthy_pool_is_unavailable() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", False)), FakeClassifier(Result("chat"))
    )
    request = chat("call a tool")
    request.chat.tools.add(name="calculator", parameters_json="{}")
    with pytest.raises(Unavailable, match="tools"):
        await router.route(request)


async def test_explicit_model_bypasses_classification() -> None:
    classifier = FakeClassifier(Result("code"))
    router = PolicyRouter(SPEC, replicas(small=("s", True), large=("l", True)), classifier)
    route = await router.route(chat("code", model="s"))
    assert (route.pool, route.model, route.reason) == ("small", "s", "explicit model")
    assert classifier.seen == []
    # The message lists what may be named instead, the routes included.
    with pytest.raises(NotFound, match=r"available: auto, l, s\)"):
        await router.route(chat("x", model="missing"))
    with_workflows = PolicyRouter(SPEC, router.replicas, classifier, workflows_enabled=True)
    with pytest.raises(NotFound, match=r"available: auto, l, s, workflow\)"):
        await with_workflows.route(chat("x", model="missing"))


async def test_without_classifier_auto_is_default_pool() -> None:
    router = PolicyRouter(SPEC, replicas(small=("s", True)), None)
    route = await router.route(chat("anything"))
    assert (route.pool, route.model, route.category) == ("small", "s", "")


async def test_counts_routes() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("code"))
    )
    for _ in range(3):
        await router.route(chat("x"))
    assert router.counters.routes == {"large/code": 3}


class RecordingStrategy:
    """A strategy that records what it was asked (text, deadline, request id)."""

    name = "fake"

    def __init__(self, result: Result) -> None:
        self.result = result
        self.calls: list[tuple[str, float | None, str]] = []

    async def classify(
        self, text: str, *, time_remaining: float | None = None, request_id: str = ""
    ) -> Result:
        self.calls.append((text, time_remaining, request_id))
        return self.result

    async def close(self) -> None:
        return None


async def test_route_asks_the_strategy_only_for_auto_requests() -> None:
    strategy = RecordingStrategy(Result("code", p_escalate=0.2))
    router = PolicyRouter(SPEC, both_pools(), None, strategy=strategy)
    request = chat("write a parser")
    request.request_id = "req-7"
    route = await router.route(request, time_remaining=3.0)
    assert (route.pool, route.category) == ("large", "code")
    assert strategy.calls == [("write a parser", 3.0, "req-7")]
    await router.route(chat("x", model="s"))
    assert len(strategy.calls) == 1  # a named model is not classified


class ByTextStrategy(RecordingStrategy):
    """Classifies each text by a table (a list of prompts is classified prompt by prompt)."""

    def __init__(self, results: dict[str, Result]) -> None:
        super().__init__(Result("chat"))
        self.results = results

    async def classify(
        self, text: str, *, time_remaining: float | None = None, request_id: str = ""
    ) -> Result:
        self.calls.append((text, time_remaining, request_id))
        return self.results[text]


def prompts(*texts: str, model: str = "auto") -> rpb.ChatRequest:
    return rpb.ChatRequest(model=model, prompts=rpb.PromptList(prompts=texts))


async def test_a_list_of_prompts_is_routed_as_its_hardest_prompt() -> None:
    strategy = ByTextStrategy(
        {
            "hi": Result("chat", p_escalate=0.3),  # chat escalates at 0.6: 0.3 short
            "sum": Result("math", p_escalate=0.5, latency_ms=2.0),  # math at 0.4: 0.1 past
            "story": Result("chat", p_escalate=0.55),
        }
    )
    router = PolicyRouter(SPEC, both_pools(), None, strategy=strategy)
    route = await router.route(prompts("hi", "sum", "story"), time_remaining=2.0)
    assert (route.pool, route.category, route.escalated) == ("large", "math", True)
    assert sorted(text for text, _, _ in strategy.calls) == ["hi", "story", "sum"]
    assert all(left == 2.0 for _, left, _ in strategy.calls)
    assert "prompt 2 of 3 routes the batch" in route.reason
    assert route.classify_ms == pytest.approx(5.0)  # the time all three took

    # None escalates: the one closest to its threshold decides (first of equals).
    strategy.results["sum"] = Result("math", p_escalate=0.1)  # 0.3 short of 0.4
    route = await router.route(prompts("hi", "sum", "story"))
    assert (route.pool, route.category, route.escalated) == ("small", "chat", False)
    assert "prompt 3 of 3 routes the batch" in route.reason
    route = await router.route(prompts("hi", "hi"))
    assert "prompt 1 of 2 routes the batch" in route.reason


async def test_the_hardest_prompt_is_judged_by_the_route_it_would_take() -> None:
    """A label under its min_confidence is routed as other, in a batch as alone: its need is
    measured against other's threshold (0.3 here), not its label's (math: 0.4)."""
    spec = SPEC.model_copy(
        update={
            "min_confidence": {"math": 0.5},
            "escalation": SPEC.escalation.model_copy(
                update={"thresholds": {"math": 0.4, "other": 0.3}}
            ),
        }
    )
    strategy = ByTextStrategy(
        {
            "unsure": Result("math", confidence=0.4, p_escalate=0.35),  # as other: 0.05 past
            "sure": Result("math", confidence=0.9, p_escalate=0.42),  # as math: 0.02 past
        }
    )
    router = PolicyRouter(spec, both_pools(), None, strategy=strategy)
    route = await router.route(prompts("sure", "unsure"))
    assert "prompt 2 of 2 routes the batch" in route.reason
    assert "under its minimum 0.50: routed as other" in route.reason
    assert (route.pool, route.escalated) == ("large", True)


async def test_a_named_model_takes_a_list_of_prompts_unclassified() -> None:
    strategy = ByTextStrategy({})
    router = PolicyRouter(SPEC, both_pools(), None, strategy=strategy)
    route = await router.route(prompts("a", "b", model="s"))
    assert (route.pool, route.model, route.reason) == ("small", "s", "explicit model")
    assert strategy.calls == []


def test_every_prompt_of_a_list_is_read_for_classification() -> None:
    assert texts_to_classify(prompts("one", "two " + "y" * 100_000))[0] == "one"
    (_, long_one) = texts_to_classify(prompts("one", "two " + "y" * 100_000))
    assert long_one.startswith("two")
    assert len(long_one) < 10_000


def test_decide_is_the_synchronous_core() -> None:
    router = PolicyRouter(SPEC, both_pools(), None)
    assert router.decide(chat("x"), Result("code")).pool == "large"
    assert router.decide(chat("x"), None).reason == "default pool"
    assert router.decide(chat("x"), Result("code")).reason == "category code (0.90)"


def test_a_strategy_note_joins_the_reason() -> None:
    @dataclass
    class Noted(Result):
        note: str = ""

    router = PolicyRouter(SPEC, both_pools(), None)
    route = router.decide(chat("x"), Noted("code", note="llm fallback: timeout"))
    assert route.reason == "category code (0.90, llm fallback: timeout)"


def test_text_to_classify_uses_the_last_user_turn_and_stays_bounded() -> None:
    request = rpb.ChatRequest()
    request.chat.messages.add(role="system", content="be terse")
    request.chat.messages.add(role="user", content="first")
    request.chat.messages.add(role="assistant", content="ok")
    request.chat.messages.add(role="user", content="second " + "x" * 100_000)
    (text,) = texts_to_classify(request)
    assert text.startswith("second")
    assert "first" not in text
    assert len(text) < 10_000
    assert texts_to_classify(rpb.ChatRequest(prompt="solve 2+2")) == ["solve 2+2"]
    assert texts_to_classify(rpb.ChatRequest(prompt="")) == [""]


def test_load_policy(tmp_path: Path) -> None:
    assert load_policy(None, "small").default_pool == "small"
    good = tmp_path / "policy.yaml"
    good.write_text("default_pool: large\ncategories: {code: large}\n")
    # "large" is defined by a LALO_ROUTER_BACKENDS entry, not by the file.
    assert load_policy(good, "small", {"large"}).categories == {"code": "large"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("escalation: {threshold: 7}\n")
    with pytest.raises(PolicyError, match=r"escalation\.threshold"):
        load_policy(bad, "small")
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "missing.yaml", "small")
    listed = tmp_path / "list.yaml"
    listed.write_text("- small\n")
    with pytest.raises(PolicyError, match="mapping"):
        load_policy(listed, "small")


def test_default_pool_comes_from_settings_when_the_file_has_none(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("pools: {tiny: {replicas: ['127.0.0.1:1']}}\n")
    assert load_policy(path, "tiny").default_pool == "tiny"


POOLS_YAML = """
default_pool: small
pools:
  small:
    replicas: ["127.0.0.1:50061", "inference-small-1:50061"]
    models: [qwen, tinyllama]
    supports: [json_schema, logprobs]
    max_outstanding_per_replica: 8
  large:
    replicas: ["dns:///inference-large:50062"]
categories: {chat: small, code: large, agentic: workflow}
escalation: {to: large, threshold: 0.6}
fallbacks: {small: [large], large: [small]}
"""


def test_pools_list_their_replicas_models_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POOLS_YAML)
    spec = load_policy(path, "small")
    assert spec.pools["small"].replicas == ["127.0.0.1:50061", "inference-small-1:50061"]
    assert spec.pools["small"].preferred_models() == ["qwen", "tinyllama"]
    assert replica_limits(spec) == {"small": 8, "large": None}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ("pools: {small: {replicas: ['a:1', 'localhost']}}", "pools.small.replicas.1", "host:port"),
        ("pools: {small: {replicas: ['a:1', 'a:1']}}", "pools.small.replicas.1", "listed twice"),
        ("pools: {small: {replica: ['a:1']}}", "pools.small.replica", "not permitted"),
        ("pools: {small: {supports: [json]}}", "pools.small.supports.0", "tools"),
        ("pools: {small: {max_outstanding_per_replica: 0}}", "pools.small.max", "greater"),
        ("pools: {workflow: {}}", "pools.workflow", "reserved"),
        ("categories: {code: larg}", "categories.code", "pool 'larg' is not defined"),
        ("escalation: {to: huge}", "escalation.to", "pool 'huge' is not defined"),
        ("fallbacks: {small: [large, gone]}", "fallbacks.small.1", "pool 'gone'"),
        ("fallbacks: {gone: [small]}", "fallbacks.gone", "pool 'gone'"),
        ("default_pool: workflow", "default_pool", "pool 'workflow' is not defined"),
        ("defualt_pool: small", "defualt_pool", "not permitted"),
        ("min_confidence: {agentic: 1.5}", "min_confidence.agentic", "less than or equal to 1"),
        ("min_confidence: {agentic: high}", "min_confidence.agentic", "valid number"),
    ],
)
def test_policy_errors_name_the_field(
    tmp_path: Path, change: str, field: str, message: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("pools: {large: {}}\n" + change + "\n" if "pools" not in change else change)
    with pytest.raises(PolicyError) as info:
        load_policy(path, "small", {"small"})
    line = next((ln for ln in str(info.value).splitlines() if field in ln), "")
    assert message in line, str(info.value)


def test_every_reference_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("categories: {a: x, b: y}\nescalation: {to: z}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path, "small", {"small"})
    text = str(info.value)
    assert all(f"pool {name!r}" in text for name in "xyz")
    assert "defined pools: small" in text


def test_policy_replicas_win_over_backends_pool_by_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = PolicySpec.model_validate({"pools": {"small": {"replicas": ["p:1", "p:2"]}}})
    env = [("small", "e:1"), ("large", "e:2")]
    with caplog.at_level(logging.WARNING):
        merged = merge_backends(spec, env)
    assert merged == [("small", "p:1"), ("small", "p:2"), ("large", "e:2")]
    assert "small=e:1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert merge_backends(spec, env, env_explicit=False) == merged
    assert not caplog.text  # the built-in default is replaced silently
    assert merge_backends(PolicySpec(), env) == env


def test_load_routing_merges_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POOLS_YAML)
    monkeypatch.setenv("LALO_ROUTER_POLICY_PATH", str(path))
    monkeypatch.setenv("LALO_ROUTER_BACKENDS", "small=ignored:1,extra=127.0.0.1:7")
    spec, backends = load_routing(RouterSettings())
    assert backends == [
        ("small", "127.0.0.1:50061"),
        ("small", "inference-small-1:50061"),
        ("large", "dns:///inference-large:50062"),
        ("extra", "127.0.0.1:7"),
    ]
    assert spec.categories["code"] == "large"
    # A pool only the environment defines may be referenced by the file...
    path.write_text(POOLS_YAML.replace("code: large", "code: extra"))
    assert load_routing(RouterSettings())[0].categories["code"] == "extra"
    # ...and without that entry the reference is an error that names the field.
    monkeypatch.setenv("LALO_ROUTER_BACKENDS", "")
    with pytest.raises(PolicyError, match=r"categories\.code: pool 'extra' is not defined"):
        load_routing(RouterSettings())


# ---- saturation and pool models ----

SATURATION_SPEC = PolicySpec.model_validate(
    {
        "default_pool": "small",
        "pools": {"small": {"max_outstanding_per_replica": 2}, "large": {}},
        "categories": {"chat": "small"},
        "fallbacks": {"small": ["large"]},
    }
)


async def test_a_saturated_pool_falls_through_to_its_fallback() -> None:
    rs = replica_set(
        replica("small", "s", target="s:1", outstanding=2, limit=2),
        replica("small", "s", target="s:2", outstanding=3, limit=2),
        replica("large", "l"),
    )
    route = await PolicyRouter(SATURATION_SPEC, rs, FakeClassifier(Result("chat"))).route(
        chat("hi")
    )
    assert (route.pool, route.model) == ("large", "l")
    assert "small saturated" in route.reason


async def test_one_replica_with_room_keeps_the_pool() -> None:
    rs = replica_set(
        replica("small", "s", target="s:1", outstanding=2, limit=2),
        replica("small", "s", target="s:2", outstanding=1, limit=2),
        replica("large", "l"),
    )
    route = await PolicyRouter(SATURATION_SPEC, rs, FakeClassifier(Result("chat"))).route(
        chat("hi")
    )
    assert route.pool == "small"
    assert "saturated" not in route.reason


async def test_every_pool_saturated_is_resource_exhausted() -> None:
    rs = replica_set(
        replica("small", "s", outstanding=2, limit=2),
        replica("large", "l", outstanding=1, limit=1),
    )
    router = PolicyRouter(SATURATION_SPEC, rs, FakeClassifier(Result("chat")))
    with pytest.raises(ResourceExhausted, match="small saturated; large saturated"):
        await router.route(chat("hi"))
    # Down everywhere (no saturation) stays UNAVAILABLE.
    for item in rs.replicas:
        item.healthy = False
    with pytest.raises(Unavailable):
        await router.route(chat("hi"))


async def test_pool_models_are_a_preference_order() -> None:
    spec = PolicySpec.model_validate(
        {
            "pools": {"small": {"models": ["best", "ok"]}, "large": {}},
            "fallbacks": {"small": ["large"]},
        }
    )
    both = replica_set(replica("small", "ok", "best", "other"), replica("large", "l"))
    assert (await PolicyRouter(spec, both, None).route(chat("x"))).model == "best"
    second = replica_set(replica("small", "other", "ok"), replica("large", "l"))
    assert (await PolicyRouter(spec, second, None).route(chat("x"))).model == "ok"
    # A pool serving none of its listed models is down for "auto" requests.
    neither = replica_set(replica("small", "other"), replica("large", "l"))
    route = await PolicyRouter(spec, neither, None).route(chat("x"))
    assert (route.pool, route.model) == ("large", "l")
    assert "small down" in route.reason


async def test_agentic_requests_take_the_complex_path_when_workflows_are_on() -> None:
    spec = SPEC.model_copy(update={"categories": {**SPEC.categories, "agentic": "workflow"}})
    rs = replicas(small=("s", True), large=("l", True))
    router = PolicyRouter(spec, rs, FakeClassifier(Result("agentic")), workflows_enabled=True)
    route = await router.route(chat("book a flight and email me the receipt"))
    assert (route.pool, route.model) == ("workflow", "workflow")
    explicit = await PolicyRouter(spec, rs, None, workflows_enabled=True).route(
        chat("x", model="workflow")
    )
    assert explicit.pool == "workflow"
    # Without an orchestrator the complex path is not healthy: fall back to the default pool.
    off = PolicyRouter(spec, rs, FakeClassifier(Result("agentic")), workflows_enabled=False)
    assert (await off.route(chat("book a flight"))).pool == "small"


async def test_requests_a_workflow_would_ignore_stay_off_the_complex_path() -> None:
    """Tools, a response format or logprobs: the caller wants them back from a model, and a
    workflow answers in plain text, so an agentic request carrying one goes to a pool."""
    spec = SPEC.model_copy(update={"categories": {**SPEC.categories, "agentic": "workflow"}})
    rs = replicas(small=("s", True), large=("l", True))
    router = PolicyRouter(spec, rs, FakeClassifier(Result("agentic")), workflows_enabled=True)
    with_tools = chat("what is the weather in Boston?")
    with_tools.chat.tools.add(name="get_weather")
    route = await router.route(with_tools)
    assert route.pool == "large"  # the default pool lacks tools; large has them
    assert "workflow lacks tools" in route.reason
    structured = chat("list three flights to Paris as JSON")
    structured.sampling.response_format.type = ipb.ResponseFormat.JSON_SCHEMA
    assert (await router.route(structured)).pool == "small"
    plain = chat("book a flight and email me the receipt")
    assert (await router.route(plain)).pool == "workflow"


def test_without_a_file_the_policy_follows_the_deployment() -> None:
    only_small = load_policy(None, "small", {"small"})
    assert (only_small.categories, only_small.escalation.to, only_small.fallbacks) == (
        {},
        None,
        {},
    )
    with_workflows = load_policy(None, "small", {"small"}, workflows=True)
    assert with_workflows.categories == {"agentic": "workflow"}
    full = load_policy(None, "small", {"small", "large"}, workflows=True)
    assert full.categories == {"code": "large", "agentic": "workflow"}
    assert full.escalation.to == "large"
    # Escalation where p_escalate was learned (benchmark questions), not elsewhere.
    assert full.escalation.thresholds == {
        "factual_qa": "pgr50",
        "math": "pgr50",
        "reasoning": "pgr50",
    }
    assert full.escalation.threshold == 1.1
    assert full.fallbacks == {"small": ["large"], "large": ["small"]}
    # A large default pool has nowhere to escalate to.
    assert load_policy(None, "large", {"small", "large"}).escalation.to is None
    assert full.min_confidence == {"agentic": 0.5}
    assert only_small.min_confidence == {}
    assert describe_policy(full) == (
        "default pool small; agentic -> workflow; code -> large; agentic under 0.50 "
        "confidence as other; escalate to large: "
        "factual_qa at pgr50, math at pgr50, reasoning at pgr50; small falls back to large; "
        "large falls back to small"
    )


async def test_the_default_policy_routes_auto_requests() -> None:
    spec = load_policy(None, "small", {"small", "large"}, workflows=True)
    rs = replicas(small=("s", True), large=("l", True))

    class Labelled(PointsClassifier):
        labels = DEFAULT_LABELS

    def classifier(result: Result) -> Labelled:
        return Labelled(result, {"pgr50": {None: 0.4}})

    async def pool_of(result: Result) -> str:
        router = PolicyRouter(spec, rs, classifier(result), workflows_enabled=True)
        return (await router.route(chat("x"))).pool

    assert await pool_of(Result("code")) == "large"
    assert await pool_of(Result("agentic")) == "workflow"
    # An unsure `agentic` is not worth a workflow's several model calls.
    assert await pool_of(Result("agentic", confidence=0.45)) == "small"
    assert await pool_of(Result("math", p_escalate=0.5)) == "large"  # pgr50 here: 0.4
    assert await pool_of(Result("math", p_escalate=0.3)) == "small"
    # A summary of a long text looks hard to p_escalate; it stays on the small model.
    assert await pool_of(Result("summarization", p_escalate=0.9)) == "small"
    assert await pool_of(Result("chat", p_escalate=0.9)) == "small"
    # The small pool down: its fallback is the large one.
    down = replicas(small=("s", False), large=("l", True))
    router = PolicyRouter(spec, down, classifier(Result("chat")), workflows_enabled=True)
    assert (await router.route(chat("hi"))).pool == "large"


def restricted(text: str, *allowed: str) -> rpb.ChatRequest:
    request = chat(text)
    request.allowed_models.extend(allowed)
    return request


async def test_auto_routes_only_to_models_the_key_may_use() -> None:
    rs = replicas(small=("s", True), large=("l", True))
    escalating = PolicyRouter(SPEC, rs, FakeClassifier(Result("chat", p_escalate=0.9)))
    # Escalation would pick the large pool; this key may only use the small model.
    route = await escalating.route(restricted("hi", "auto", "s"))
    assert (route.pool, route.model) == ("small", "s")
    assert "large not allowed" in route.reason
    assert (await escalating.route(restricted("hi", "auto", "s", "l"))).pool == "large"
    code = PolicyRouter(SPEC, rs, FakeClassifier(Result("code")))
    # No model of the key can serve it: a permission error that says which it may use.
    with pytest.raises(PermissionDenied, match=r"may not use any model.*its models: auto, x"):
        await code.route(restricted("write a parser", "auto", "x"))


async def test_a_pool_serving_several_models_gives_an_allowed_one() -> None:
    rs = replica_set(replica("small", "qwen", "tinyllama"))
    router = PolicyRouter(PolicySpec(default_pool="small"), rs, None)
    assert (await router.route(restricted("hi", "auto", "tinyllama"))).model == "tinyllama"
    assert (await router.route(chat("hi"))).model == "qwen"


async def test_an_allowed_model_counts_only_on_the_replica_that_serves_it() -> None:
    """The pool wants qwen or tinyllama; the key may use tinyllama; only the qwen replica is
    up: the pool cannot serve this key (it is not "ok" because another replica might)."""
    spec = PolicySpec.model_validate(
        {
            "pools": {"small": {"models": ["qwen", "tinyllama"]}, "large": {}},
            "fallbacks": {"small": ["large"]},
        }
    )
    rs = replica_set(replica("small", "qwen"), replica("large", "tinyllama", target="large:1"))
    route = await PolicyRouter(spec, rs, None).route(restricted("hi", "auto", "tinyllama"))
    assert (route.pool, route.model) == ("large", "tinyllama")
    assert "small not allowed" in route.reason


async def test_a_raw_prompt_never_reaches_a_workflow_even_through_a_fallback() -> None:
    spec = PolicySpec.model_validate(
        {
            "categories": {"chat": "large"},
            "fallbacks": {"large": ["workflow", "small"]},
        }
    )
    rs = replicas(small=("s", True), large=("l", False))
    router = PolicyRouter(spec, rs, FakeClassifier(Result("chat")), workflows_enabled=True)
    route = await router.route(rpb.ChatRequest(model="auto", prompt="complete this"))
    assert route.pool == "small"
    assert "large down; workflow lacks raw_prompt" in route.reason
    # A chat request with the same chain may take the workflow.
    assert (await router.route(chat("hello"))).pool == "workflow"


async def test_a_workflow_gets_no_direct_route_when_no_pool_could_answer_now() -> None:
    """Then a failed workflow fails the request as it would have without the fallback."""
    spec = PolicySpec.model_validate({"categories": {"agentic": "workflow"}})
    up = PolicyRouter(
        spec, replicas(small=("s", True)), FakeClassifier(Result("agentic")), workflows_enabled=True
    )
    assert (await up.route(chat("book a flight"))).direct is not None
    down = PolicyRouter(
        spec,
        replicas(small=("s", False)),
        FakeClassifier(Result("agentic")),
        workflows_enabled=True,
    )
    route = await down.route(chat("book a flight"))
    assert route.pool == "workflow"
    assert route.direct is None


async def test_the_complex_path_needs_the_workflow_entry() -> None:
    spec = SPEC.model_copy(update={"categories": {**SPEC.categories, "agentic": "workflow"}})
    rs = replicas(small=("s", True), large=("l", True))
    router = PolicyRouter(spec, rs, FakeClassifier(Result("agentic")), workflows_enabled=True)
    route = await router.route(restricted("book a flight", "auto", "s"))
    assert route.pool == "small"
    assert "workflow not allowed" in route.reason
    allowed = await router.route(restricted("book a flight", "auto", "s", "workflow"))
    assert allowed.pool == "workflow"
    assert allowed.direct is not None
    assert allowed.direct.model == "s"


async def test_auto_never_gets_an_embedding_model_the_replica_lists_first() -> None:
    rs = replica_set(replica("small", "embed", "s", embeddings=("embed",)))
    router = PolicyRouter(PolicySpec(default_pool="small"), rs, None)
    assert (await router.route(chat("hi"))).model == "s"
    # A key that may only use the embedding model has no model for a chat.
    with pytest.raises(PermissionDenied, match="may not use any model"):
        await router.route(restricted("hi", "auto", "embed"))


async def test_a_pool_listing_an_embedding_model_first_still_gets_a_text_model() -> None:
    spec = PolicySpec.model_validate({"pools": {"small": {"models": ["embed", "s"]}}})
    rs = replica_set(replica("small", "embed", "s", embeddings=("embed",)))
    assert (await PolicyRouter(spec, rs, None).route(chat("hi"))).model == "s"
    only_embedding = PolicySpec.model_validate({"pools": {"small": {"models": ["embed"]}}})
    with pytest.raises(Unavailable, match="no healthy pool"):
        await PolicyRouter(only_embedding, rs, None).route(chat("hi"))


async def test_a_pool_serving_only_embedding_models_is_down_for_chats() -> None:
    rs = replica_set(
        replica("small", "embed", embeddings=("embed",)), replica("large", "l", "embed-l")
    )
    route = await PolicyRouter(SPEC, rs, FakeClassifier(Result("chat"))).route(chat("hi"))
    assert (route.pool, route.model) == ("large", "l")
    assert "small down" in route.reason


async def test_a_workflows_direct_route_is_a_text_model() -> None:
    spec = PolicySpec.model_validate({"categories": {"agentic": "workflow"}})
    rs = replica_set(replica("small", "embed", "s", embeddings=("embed",)))
    router = PolicyRouter(spec, rs, FakeClassifier(Result("agentic")), workflows_enabled=True)
    route = await router.route(chat("book a flight"))
    assert route.direct is not None
    assert route.direct.model == "s"


def test_a_chat_naming_an_embedding_model_is_refused() -> None:
    rs = replica_set(replica("small", "embed", "s", embeddings=("embed",)))
    router = PolicyRouter(PolicySpec(default_pool="small"), rs, None)
    with pytest.raises(InvalidArgument) as info:
        router.decide(chat("hi", model="embed"))
    assert info.value.message == "'embed' is an embedding model: use /v1/embeddings"
    assert info.value.param == "model"
    assert router.decide(chat("hi", model="s")).model == "s"


def test_the_example_policy_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "policy.example.yaml"
    spec = load_policy(example, "small")
    assert merge_backends(spec, []) == [("small", "127.0.0.1:50061"), ("large", "127.0.0.1:50062")]
    assert spec.escalation.named() == {
        "escalation.threshold": ("pgr50", None),
        "escalation.thresholds.math": ("pgr80", "math"),
    }
    assert spec.escalation.thresholds["summarization"] == 1.1  # never
    # Its categories are the committed classifier's labels.
    from lalo_router.classify import load_classifier

    PolicyRouter(spec, ReplicaSet([]), load_classifier())  # type: ignore[arg-type]


def test_policies_in_the_deploy_profiles_are_valid(tmp_path: Path) -> None:
    """A Helm profile's router.policy is what the router loads at start-up: keep them valid
    (the chart always sets LALO_ROUTER_BACKENDS for the small and large pools)."""
    import yaml

    repo = Path(__file__).resolve().parents[4]
    found = 0
    profiles = [*(repo / "deploy/profiles").rglob("*.yaml"), repo / "deploy/helm/lalo/values.yaml"]
    for profile in sorted(profiles):
        values = yaml.safe_load(profile.read_text())
        policy = values.get("router", {}).get("policy") if isinstance(values, dict) else None
        if not policy:
            continue
        found += 1
        path = tmp_path / f"{profile.stem}.yaml"
        path.write_text(yaml.safe_dump(policy))
        load_policy(path, "small", {"small", "large"})
    assert found, "no deploy profile sets router.policy"


# ---- escalation thresholds: numbers or named operating points ----


class PointsClassifier(FakeClassifier):
    """A classifier with operating points: {name: {category or None: threshold}}."""

    labels = ("chat", "code", "math")

    def __init__(self, result: Result, points: dict[str, dict[str | None, float]]) -> None:
        super().__init__(result)
        self.points = points
        self.asked: list[tuple[str, str | None]] = []

    def escalation_threshold(
        self, operating_point: str, category: str | None = None
    ) -> float | None:
        self.asked.append((operating_point, category))
        values = self.points.get(operating_point)
        if values is None:
            return None
        return values.get(category, values.get(None))


POINTS = {"pgr50": {None: 0.3, "math": 0.2}, "pgr80": {None: 0.15}}


def escalating(threshold: object, thresholds: dict[str, object] | None = None) -> PolicySpec:
    return PolicySpec.model_validate(
        {
            "pools": {"small": {}, "large": {}},
            "categories": {"chat": "small", "math": "small", "code": "small"},
            "escalation": {"to": "large", "threshold": threshold, "thresholds": thresholds or {}},
        }
    )


def both_pools() -> ReplicaSet:
    return replicas(small=("s", True), large=("l", True))


async def test_a_named_operating_point_is_resolved_per_category() -> None:
    classifier = PointsClassifier(Result("math", p_escalate=0.25), POINTS)
    router = PolicyRouter(escalating("pgr50"), both_pools(), classifier)
    route = await router.route(chat("2+2"))
    assert route.pool == "large"
    assert "p_escalate 0.25 >= 0.20 (pgr50)" in route.reason
    assert ("pgr50", "math") in classifier.asked
    classifier.result = Result("chat", p_escalate=0.25)  # chat uses the global 0.3
    assert (await router.route(chat("hi"))).pool == "small"


async def test_per_category_points_and_numbers_mix() -> None:
    spec = escalating(0.9, {"math": "pgr80", "code": 0.5})
    classifier = PointsClassifier(Result("math", p_escalate=0.16), POINTS)
    router = PolicyRouter(spec, both_pools(), classifier)
    assert (await router.route(chat("2+2"))).pool == "large"  # pgr80 = 0.15
    classifier.result = Result("code", p_escalate=0.49)
    assert (await router.route(chat("sort"))).pool == "small"  # 0.5
    classifier.result = Result("chat", p_escalate=0.89)
    assert (await router.route(chat("hi"))).pool == "small"  # 0.9


def test_an_unknown_operating_point_is_a_startup_error() -> None:
    classifier = PointsClassifier(Result("chat"), POINTS)
    with pytest.raises(PolicyError, match=r"escalation\.thresholds\.math: .*'pgr99'"):
        PolicyRouter(escalating("pgr50", {"math": "pgr99"}), both_pools(), classifier)
    with pytest.raises(PolicyError, match=r"escalation\.threshold: .*'pgr70'"):
        PolicyRouter(escalating("pgr70"), both_pools(), classifier)


async def test_a_label_under_its_minimum_confidence_is_routed_as_other() -> None:
    spec = SPEC.model_copy(
        update={
            "categories": {**SPEC.categories, "agentic": "workflow", "other": "small"},
            "min_confidence": {"agentic": 0.5},
            "escalation": SPEC.escalation.model_copy(
                update={"threshold": 1.1, "thresholds": {"other": 0.3, "agentic": 0.9}}
            ),
        }
    )
    classifier = FakeClassifier(Result("agentic", confidence=0.42, p_escalate=0.1))
    router = PolicyRouter(spec, both_pools(), classifier, workflows_enabled=True)
    route = await router.route(chat("can you summarize this email for me? ..."))
    assert (route.pool, route.category, route.category_confidence) == ("small", "agentic", 0.42)
    assert "category agentic (0.42) under its minimum 0.50: routed as other" in route.reason
    # Routed as other, it escalates as other does (0.3 here, not agentic's 0.9).
    classifier.result = Result("agentic", confidence=0.42, p_escalate=0.35)
    escalated = await router.route(chat("x"))
    assert (escalated.pool, escalated.escalated) == ("large", True)
    # At the minimum the label takes its route; other labels have none.
    classifier.result = Result("agentic", confidence=0.5)
    assert (await router.route(chat("book a flight"))).pool == "workflow"
    classifier.result = Result("code", confidence=0.2)
    assert (await router.route(chat("sort"))).pool == "large"


def test_min_confidence_names_classifier_labels_other_than_other() -> None:
    classifier = PointsClassifier(Result("chat"), POINTS)
    spec = escalating(0.5).model_copy(update={"min_confidence": {"cdoe": 0.5}})
    with pytest.raises(PolicyError, match=r"min_confidence\.cdoe: .*no category"):
        PolicyRouter(spec, both_pools(), classifier)
    spec = escalating(0.5).model_copy(update={"min_confidence": {"other": 0.5}})
    with pytest.raises(PolicyError, match=r"min_confidence\.other: .*routed as other"):
        PolicyRouter(spec, both_pools(), classifier)


def test_policy_categories_must_be_classifier_labels() -> None:
    classifier = PointsClassifier(Result("chat"), POINTS)
    spec = escalating(0.5, {"maths": 0.4})
    with pytest.raises(PolicyError, match=r"escalation\.thresholds\.maths: .*no category"):
        PolicyRouter(spec, both_pools(), classifier)
    spec = spec.model_copy(update={"categories": {"cdoe": "small"}})
    with pytest.raises(PolicyError, match=r"categories\.cdoe"):
        PolicyRouter(spec, both_pools(), classifier)


async def test_without_operating_points_named_thresholds_fall_back_and_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # FakeClassifier has no escalation_threshold (an artifact from before operating points).
    classifier = FakeClassifier(Result("math", p_escalate=0.55))
    with caplog.at_level(logging.WARNING):
        router = PolicyRouter(escalating(0.5, {"math": "pgr80"}), both_pools(), classifier)
        for _ in range(3):
            route = await router.route(chat("2+2"))
            assert route.pool == "large"  # the numeric default 0.5 applies
            assert ">= 0.50" in route.reason
    assert caplog.text.count("no operating points") == 1
    # A named default with nothing numeric behind it: never escalate.
    never = PolicyRouter(
        escalating("pgr50"), both_pools(), FakeClassifier(Result("math", p_escalate=1.0))
    )
    assert (await never.route(chat("2+2"))).pool == "small"


class GlobalOnlyClassifier(PointsClassifier):
    """Knows pgr50 globally but answers None per category: a decision-time gap."""

    def escalation_threshold(
        self, operating_point: str, category: str | None = None
    ) -> float | None:
        return super().escalation_threshold(operating_point) if category is None else None


async def test_a_point_without_a_value_at_decision_time_falls_back_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    classifier = GlobalOnlyClassifier(Result("code", p_escalate=0.95), POINTS)
    router = PolicyRouter(escalating("pgr50"), both_pools(), classifier)  # passes start-up
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert (await router.route(chat("sort"))).pool == "small"  # nothing to fall to: never
    assert caplog.text.count("has no threshold for category code") == 1


@pytest.mark.parametrize(
    ("threshold", "ok"),
    [
        (0.5, True),
        (0, True),
        (1.1, True),
        ("pgr50", True),
        ("my_point2", True),
        (7, False),
        (-0.1, False),
        ("0.5x", False),
        ("", False),
        (True, False),
        ([0.5], False),
    ],
)
def test_threshold_values(threshold: object, ok: bool) -> None:
    if ok:
        escalating(threshold)
        escalating(0.5, {"math": threshold})
    else:
        with pytest.raises(ValueError, match=r"neither a number|out of range"):
            escalating(threshold)

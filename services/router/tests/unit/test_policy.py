"""Routing policy: category → pool, escalation, capability filters, fallbacks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import NotFound, Unavailable
from lalo_router.policy import (
    PolicyError,
    PolicyRouter,
    PolicySpec,
    load_policy,
    text_to_classify,
)
from lalo_router.replicas import Replica, ReplicaSet


@dataclass
class Result:
    label: str
    confidence: float = 0.9
    p_escalate: float = 0.1
    latency_ms: float = 1.5


class FakeClassifier:
    def __init__(self, result: Result) -> None:
        self.result = result
        self.seen: list[str] = []

    def classify(self, text: str) -> Result:
        self.seen.append(text)
        return self.result


def replicas(**pools: tuple[str, bool]) -> ReplicaSet:
    """pools: name=(model, healthy)."""
    rs = ReplicaSet([])
    for pool, (model, healthy) in pools.items():
        rs.replicas.append(
            Replica(
                pool=pool,
                target=f"{pool}:1",
                stub=None,
                channel=None,  # type: ignore[arg-type]
                models={model: ipb.ModelInfo(id=model)},
                healthy=healthy,
            )
        )
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


def test_category_picks_its_pool() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("code"))
    )
    route = router.decide(chat("write a sort in rust"))
    assert (route.pool, route.model, route.category) == ("large", "l", "code")
    assert route.classify_ms == 1.5


def test_escalation_over_threshold_goes_up() -> None:
    router = PolicyRouter(
        SPEC,
        replicas(small=("s", True), large=("l", True)),
        FakeClassifier(Result("chat", p_escalate=0.7)),
    )
    route = router.decide(chat("hi"))
    assert route.pool == "large"
    assert route.escalated
    assert "p_escalate" in route.reason


def test_per_route_threshold() -> None:
    router = PolicyRouter(
        SPEC,
        replicas(small=("s", True), large=("l", True)),
        FakeClassifier(Result("math", p_escalate=0.45)),
    )
    assert router.decide(chat("2+2")).pool == "large"
    router.classifier = FakeClassifier(Result("chat", p_escalate=0.45))
    assert router.decide(chat("hi")).pool == "small"


def test_unknown_category_goes_to_default_pool() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("other"))
    )
    assert router.decide(chat("???")).pool == "small"


def test_fallback_when_pool_down() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", False)), FakeClassifier(Result("code"))
    )
    route = router.decide(chat("code please"))
    assert route.pool == "small"
    assert "unavailable" in route.reason


def test_tools_need_a_capable_pool() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("chat"))
    )
    request = chat("call a tool")
    request.chat.tools.add(name="calculator", parameters_json="{}")
    assert router.decide(request).pool == "large"


def test_no_capable_healthy_pool_is_unavailable() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", False)), FakeClassifier(Result("chat"))
    )
    request = chat("call a tool")
    request.chat.tools.add(name="calculator", parameters_json="{}")
    with pytest.raises(Unavailable, match="tools"):
        router.decide(request)


def test_explicit_model_bypasses_classification() -> None:
    classifier = FakeClassifier(Result("code"))
    router = PolicyRouter(SPEC, replicas(small=("s", True), large=("l", True)), classifier)
    route = router.decide(chat("code", model="s"))
    assert (route.pool, route.model, route.reason) == ("small", "s", "explicit model")
    assert classifier.seen == []
    with pytest.raises(NotFound):
        router.decide(chat("x", model="missing"))


def test_without_classifier_auto_is_default_pool() -> None:
    router = PolicyRouter(SPEC, replicas(small=("s", True)), None)
    route = router.decide(chat("anything"))
    assert (route.pool, route.model, route.category) == ("small", "s", "")


def test_counts_routes() -> None:
    router = PolicyRouter(
        SPEC, replicas(small=("s", True), large=("l", True)), FakeClassifier(Result("code"))
    )
    for _ in range(3):
        router.decide(chat("x"))
    assert router.counters.routes == {"large/code": 3}


def test_text_to_classify_uses_the_last_user_turn_and_stays_bounded() -> None:
    request = rpb.ChatRequest()
    request.chat.messages.add(role="system", content="be terse")
    request.chat.messages.add(role="user", content="first")
    request.chat.messages.add(role="assistant", content="ok")
    request.chat.messages.add(role="user", content="second " + "x" * 100_000)
    text = text_to_classify(request)
    assert text.startswith("second")
    assert "first" not in text
    assert len(text) < 10_000
    assert text_to_classify(rpb.ChatRequest(prompt="solve 2+2")) == "solve 2+2"
    assert text_to_classify(rpb.ChatRequest(prompt="")) == ""


def test_load_policy(tmp_path: Path) -> None:
    assert load_policy(None, "small").default_pool == "small"
    good = tmp_path / "policy.yaml"
    good.write_text("default_pool: large\ncategories: {code: large}\n")
    assert load_policy(good, "small").categories == {"code": "large"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("escalation: {threshold: 7}\n")
    with pytest.raises(PolicyError):
        load_policy(bad, "small")
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "missing.yaml", "small")


def test_agentic_requests_take_the_complex_path_when_workflows_are_on() -> None:
    spec = SPEC.model_copy(update={"categories": {**SPEC.categories, "agentic": "workflow"}})
    rs = replicas(small=("s", True), large=("l", True))
    router = PolicyRouter(spec, rs, FakeClassifier(Result("agentic")), workflows_enabled=True)
    route = router.decide(chat("book a flight and email me the receipt"))
    assert (route.pool, route.model) == ("workflow", "workflow")
    explicit = PolicyRouter(spec, rs, None, workflows_enabled=True).decide(
        chat("x", model="workflow")
    )
    assert explicit.pool == "workflow"
    # Without an orchestrator the complex path is not healthy: fall back to the default pool.
    off = PolicyRouter(spec, rs, FakeClassifier(Result("agentic")), workflows_enabled=False)
    assert off.decide(chat("book a flight")).pool == "small"

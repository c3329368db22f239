"""Metric functions, on hand-made examples with known answers."""

from __future__ import annotations

import pytest
from lalo_router.classify.metrics import classification_report, dataset_family, routing_curve


def test_classification_report_known_values() -> None:
    truth = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "other"]
    report = classification_report(truth, pred, ["a", "b", "c"])
    assert report.labels == ["a", "b", "c", "other"]
    assert report.accuracy == pytest.approx(3 / 5)
    assert report.per_class["a"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2.0,
    }
    assert report.per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert report.per_class["b"]["f1"] == pytest.approx(0.8)
    assert report.per_class["c"]["f1"] == 0.0
    # macro-F1 averages over the true labels only (a, b, c), not over "other"
    assert report.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert report.confusion == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_perfect_router_curve() -> None:
    # 10 prompts: the weak model fails exactly the 2 the router scores highest, strong gets all.
    p = [0.9, 0.8, 0.1, 0.2, 0.3, 0.15, 0.25, 0.05, 0.12, 0.22]
    weak = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    strong = [1] * 10
    curve = routing_curve(p, weak, strong)
    assert curve.weak_quality == pytest.approx(0.8)
    assert curve.strong_quality == pytest.approx(1.0)
    # strong share 0,10,...,100 %; quality 0.8, 0.9, then 1.0: area 0.085 + 0.095 + 0.8 = 0.98
    assert curve.strong_pct == pytest.approx([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert curve.apgr == pytest.approx((0.98 - 0.8) / 0.2)
    assert curve.cpt50 == pytest.approx(10.0)
    assert curve.cpt80 == pytest.approx(16.0)


def test_reversed_router_is_below_random() -> None:
    p = [0.1, 0.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3]
    weak = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    curve = routing_curve(p, weak, [1] * 10)
    assert curve.apgr < 0.5


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="equally long"):
        routing_curve([0.1], [1, 0], [1, 1])
    with pytest.raises(ValueError, match="non-empty"):
        routing_curve([], [], [])


def test_dataset_family() -> None:
    assert dataset_family("mmlu/anatomy") == "mmlu"
    assert dataset_family("gsm8k-test") == "gsm8k"
    assert dataset_family("arc-challenge/arc_challenge_test") == "arc"
    assert dataset_family(None) == "all"

"""Evaluation metrics: classification report and RouteLLM's cost/quality curve (APGR, CPT)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ClassReport:
    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true label, columns: predicted label (labels order)


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> ClassReport:
    """Accuracy, macro-F1 over the true labels present, per-class P/R/F1, confusion matrix.
    ``labels`` orders the matrix; predicted labels outside it (e.g. ``other``) are appended."""
    order = list(labels) if labels else sorted(set(y_true))
    for label in list(y_true) + list(y_pred):
        if label not in order:
            order.append(label)
    index = {label: i for i, label in enumerate(order)}
    confusion = np.zeros((len(order), len(order)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[index[t], index[p]] += 1
    per_class: dict[str, dict[str, float]] = {}
    true_labels = [label for label in order if confusion[index[label]].sum() > 0]
    for label in order:
        i = index[label]
        tp = float(confusion[i, i])
        predicted = float(confusion[:, i].sum())
        support = float(confusion[i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    total = confusion.sum()
    return ClassReport(
        labels=order,
        accuracy=float(np.trace(confusion) / total) if total else 0.0,
        macro_f1=float(np.mean([per_class[label]["f1"] for label in true_labels]))
        if true_labels
        else 0.0,
        per_class=per_class,
        confusion=confusion.tolist(),
    )


@dataclass(frozen=True)
class RoutingCurve:
    strong_pct: list[float]  # share of calls sent to the strong model, percent, ascending
    quality: list[float]  # mean score at that share
    weak_quality: float
    strong_quality: float
    apgr: float
    cpt50: float  # percent of strong calls needed to recover 50 % of the quality gap
    cpt80: float


def routing_curve(
    p_escalate: Sequence[float] | NDArray[np.floating],
    weak_scores: Sequence[float] | NDArray[np.floating],
    strong_scores: Sequence[float] | NDArray[np.floating],
    num_results: int = 10,
) -> RoutingCurve:
    """RouteLLM's evaluation (``routellm/evals``): thresholds at the ``num_results``-quantile
    bin edges of the router's scores (duplicates included); at each, prompts scoring >= the
    threshold (> for the last one) go to the strong model. APGR is the area between the
    quality curve and the weak model's quality over the strong-weak gap (trapezoids over the
    strong-call share); CPT(x) interpolates the strong-call share reaching weak + x * gap."""
    scores = np.asarray(p_escalate, dtype=np.float64)
    weak = np.asarray(weak_scores, dtype=np.float64)
    strong = np.asarray(strong_scores, dtype=np.float64)
    if not (scores.shape == weak.shape == strong.shape) or scores.size == 0:
        raise ValueError("routing_curve needs equally long, non-empty score arrays")
    thresholds = np.quantile(scores, np.linspace(0.0, 1.0, num_results + 1))
    points = []
    for i, threshold in enumerate(thresholds):
        chosen = scores >= threshold if i != len(thresholds) - 1 else scores > threshold
        points.append((float(chosen.mean() * 100.0), float(np.where(chosen, strong, weak).mean())))
    points.sort(key=lambda p: p[0])
    pct = np.array([p[0] for p in points])
    qualities = np.array([p[1] for p in points])
    weak_q, strong_q = float(weak.mean()), float(strong.mean())
    span = (pct[-1] - pct[0]) / 100.0
    area = float(np.trapezoid(qualities, pct / 100.0))
    gap_area = (strong_q - weak_q) * span
    apgr = (area - weak_q * span) / gap_area if gap_area else float("nan")

    def cpt(fraction: float) -> float:
        target = weak_q + fraction * (strong_q - weak_q)
        return float(np.interp(target, qualities, pct))

    return RoutingCurve(
        strong_pct=pct.tolist(),
        quality=qualities.tolist(),
        weak_quality=weak_q,
        strong_quality=strong_q,
        apgr=apgr,
        cpt50=cpt(0.5),
        cpt80=cpt(0.8),
    )


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def dataset_family(dataset: object) -> str:
    """Outcome rows' dataset names folded into families: "mmlu/anatomy" -> "mmlu"."""
    name = str(dataset if dataset is not None else "all").lower()
    for known in ("mmlu", "gsm8k", "arc", "mbpp", "winogrande", "humaneval", "math"):
        if name.startswith(known):
            return known
    return name

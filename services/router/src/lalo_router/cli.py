"""``lalo-router predict | eval categories | eval outcomes | train`` (the classifier's CLI).

``lalo_router.__main__`` hands these sub-commands to ``main``; each returns an exit status and
reports bad input (missing file, bad JSON line, missing field) with a clear message and 2.
``predict`` and ``eval categories`` measure either strategy the router can run
(``--strategy embedding|llm``): the LLM one is asked over gRPC exactly as the router asks it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

DEFAULT_DATA = Path("../shared/data/router")
SERVICE_DIR = Path(__file__).resolve().parents[2]
DEFAULT_SUPPLEMENT = SERVICE_DIR / "data" / "everyday-supplement.jsonl"
EVERYDAY_SETS = SERVICE_DIR / "eval"


class InputError(ValueError):
    """A JSONL input the commands cannot use."""


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open(encoding="utf-8") if str(path) != "-" else sys.stdin
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{number}: expected a JSON object")
            yield number, obj


def _text(path: Path, number: int, obj: dict[str, Any]) -> str:
    for key in ("text", "prompt"):
        if key in obj:
            value = obj[key]
            return value if isinstance(value, str) else json.dumps(value)
    raise InputError(f"{path}:{number}: no 'text' or 'prompt' field")


def _load(artifact: Path | None) -> Any:
    from lalo_router.classify import load_classifier

    return load_classifier(artifact)


Classify = Callable[[str], Any]  # text -> a classification with label, latency_ms, to_json()


@contextmanager
def _strategy(args: argparse.Namespace) -> Iterator[tuple[Classify, tuple[str, ...]]]:
    """The chosen strategy as a plain function, and the labels it can answer. The LLM one
    falls back to (and takes p_escalate from) the embedding classifier, as in the router."""
    classifier = _load(args.artifact)
    if args.strategy == "embedding":
        yield classifier.classify, tuple(classifier.labels)
        return
    from lalo_router.llm_classifier import LlmClassifier

    if not args.target or not args.model:
        raise InputError(
            "--strategy llm needs --target and --model "
            "(or LALO_ROUTER_LLM_TARGET and LALO_ROUTER_LLM_MODEL)"
        )
    llm = LlmClassifier(
        args.model,
        target=args.target,
        service_token=os.environ.get("LALO_SERVICE_TOKEN", ""),
        fallback=classifier,
        timeout_s=args.timeout,
        max_tokens=args.max_tokens,
    )
    # One event loop for the whole run: the gRPC channel belongs to the loop it opened in.
    with asyncio.Runner() as runner:
        try:
            yield (lambda text: runner.run(llm.classify(text))), llm.labels
        finally:
            runner.run(llm.close())


def cmd_predict(args: argparse.Namespace, out: TextIO) -> int:
    with _strategy(args) as (classify, _labels):
        for number, obj in _read_jsonl(args.file):
            result = classify(_text(args.file, number, obj))
            record = result.to_json()
            if "id" in obj:
                record = {"id": obj["id"], **record}
            out.write(json.dumps(record) + "\n")
    return 0


def cmd_eval_categories(args: argparse.Namespace, out: TextIO) -> int:
    from lalo_router.classify.metrics import classification_report, percentile

    truth, predicted, latencies = [], [], []
    fallbacks: Counter[str] = Counter()
    with _strategy(args) as (classify, labels):
        for number, obj in _read_jsonl(args.file):
            if "label" not in obj:
                raise InputError(f"{args.file}:{number}: no 'label' field")
            result = classify(_text(args.file, number, obj))
            truth.append(str(obj["label"]))
            predicted.append(result.label)
            latencies.append(result.latency_ms)
            if getattr(result, "fallback", ""):
                fallbacks[result.fallback] += 1
    if not truth:
        raise InputError(f"{args.file}: no examples")
    report = classification_report(truth, predicted, list(labels))
    # Macro-F1 averages over the true labels; a tool that also averages over every predicted
    # label (scikit-learn's default) counts `other` as a class of F1 0 when it is predicted.
    extra = sorted(set(predicted) - set(truth))
    f1s = [report.per_class[label]["f1"] for label in sorted(set(truth) | set(extra))]
    summary: dict[str, Any] = {
        "n": len(truth),
        "strategy": args.strategy,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "predicted_outside_truth": {label: predicted.count(label) for label in extra},
        "macro_f1_over_predicted_labels_too": float(sum(f1s) / len(f1s)),
        "per_class": report.per_class,
        "confusion_labels": report.labels,
        "confusion": report.confusion,
        "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)},
    }
    if args.strategy == "llm":
        # Decisions the embedding classifier made instead, by reason: part of what the
        # LLM strategy delivers, but not the LLM's own accuracy.
        summary["llm_fallbacks"] = dict(fallbacks)
    if args.json:
        out.write(json.dumps(summary, indent=2) + "\n")
    else:
        _write_categories(summary, report, out)
    if args.strategy == "llm" and sum(fallbacks.values()) == len(truth):
        print(
            f"lalo-router eval: every LLM call fell back ({dict(fallbacks)}): the figures "
            "are the embedding classifier's",
            file=sys.stderr,
        )
        return 1
    return 0


def _write_categories(summary: dict[str, Any], report: Any, out: TextIO) -> None:
    truth_n = summary["n"]
    out.write(f"strategy   {summary['strategy']}\n")
    out.write(f"examples   {truth_n}\naccuracy   {report.accuracy:.4f}\n")
    out.write(f"macro-F1   {report.macro_f1:.4f}\n")
    outside = summary["predicted_outside_truth"]
    if outside:
        shown = ", ".join(f"{label} {n}" for label, n in outside.items())
        out.write(
            f"predicted outside the true labels: {shown}; macro-F1 averaging over them too "
            f"(F1 0 each): {summary['macro_f1_over_predicted_labels_too']:.4f}\n"
        )
    out.write("\n")
    out.write(f"{'label':<18}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}\n")
    for label in report.labels:
        m = report.per_class[label]
        if m["support"] or m["precision"]:
            out.write(
                f"{label:<18}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}"
                f"{int(m['support']):>10}\n"
            )
    out.write("\nconfusion (rows: true, columns: predicted)\n")
    short = [label[:6] for label in report.labels]
    out.write(f"{'':<18}" + "".join(f"{s:>8}" for s in short) + "\n")
    for label, row in zip(report.labels, report.confusion, strict=True):
        out.write(f"{label:<18}" + "".join(f"{v:>8}" for v in row) + "\n")
    latency = summary["latency_ms"]
    out.write(f"\nlatency ms  p50 {latency['p50']:.3f}  p99 {latency['p99']:.3f}\n")
    if "llm_fallbacks" in summary:
        fell = summary["llm_fallbacks"]
        shown = ", ".join(f"{k} {v}" for k, v in sorted(fell.items())) or "none"
        out.write(f"llm fallbacks  {sum(fell.values())} of {truth_n} ({shown})\n")


def _weak_strong(path: Path, number: int, obj: dict[str, Any]) -> tuple[float, float] | None:
    scores = obj.get("scores")
    if not isinstance(scores, dict):
        raise InputError(f"{path}:{number}: no 'scores' object")
    small, large = obj.get("small_model"), obj.get("large_model")
    if small not in scores or large not in scores:
        return None  # rows without a named pair cannot be scored as a two-model router
    try:
        return float(scores[small]), float(scores[large])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}:{number}: scores must be numbers") from exc


def cmd_eval_outcomes(args: argparse.Namespace, out: TextIO) -> int:
    from lalo_router.classify.metrics import dataset_family, routing_curve

    classifier = _load(args.artifact)
    by_dataset: dict[str, tuple[list[float], list[float], list[float]]] = {}
    skipped = 0
    for number, obj in _read_jsonl(args.file):
        pair = _weak_strong(args.file, number, obj)
        if pair is None:
            skipped += 1
            continue
        p = classifier.classify(_text(args.file, number, obj)).p_escalate
        bucket = by_dataset.setdefault(dataset_family(obj.get("dataset")), ([], [], []))
        bucket[0].append(p)
        bucket[1].append(pair[0])
        bucket[2].append(pair[1])
    if not by_dataset:
        raise InputError(f"{args.file}: no rows with scores for their small_model and large_model")
    groups = dict(sorted(by_dataset.items()))
    if len(groups) > 1:
        # A mixed workload as one router sees it: every row on one curve (RouteLLM reports
        # per benchmark; both are printed).
        groups["all"] = (
            [p for bucket in by_dataset.values() for p in bucket[0]],
            [w for bucket in by_dataset.values() for w in bucket[1]],
            [s for bucket in by_dataset.values() for s in bucket[2]],
        )
    results = {}
    for name, (p, weak, strong) in groups.items():
        curve = routing_curve(p, weak, strong)
        results[name] = {
            "n": len(p),
            "apgr": curve.apgr,
            "cpt50_pct": curve.cpt50,
            "cpt80_pct": curve.cpt80,
            "small_quality": curve.weak_quality,
            "large_quality": curve.strong_quality,
        }
    if args.json:
        out.write(json.dumps({"datasets": results, "skipped_rows": skipped}, indent=2) + "\n")
        return 0
    out.write(
        f"{'dataset':<14}{'n':>7}{'APGR':>8}{'CPT50%':>9}{'CPT80%':>9}{'small':>8}{'large':>8}\n"
    )
    for name, r in results.items():
        out.write(
            f"{name:<14}{r['n']:>7}{r['apgr']:>8.3f}{r['cpt50_pct']:>9.1f}{r['cpt80_pct']:>9.1f}"
            f"{r['small_quality']:>8.3f}{r['large_quality']:>8.3f}\n"
        )
    if skipped:
        out.write(f"({skipped} rows without small_model/large_model scores skipped)\n")
    return 0


def evaluate_everyday_sets(artifact: Path) -> dict[str, dict[str, Any]]:
    """Accuracy and macro-F1 of the trained classifier on each hand-written everyday test set
    (``eval/everyday-prompts*.jsonl``, never trained on), with and without the everyday heads
    (``benchmark_*``: the benchmark heads alone), for the model card."""
    import copy

    from lalo_router.classify import load_classifier
    from lalo_router.classify.metrics import classification_report

    classifier = load_classifier(artifact)
    benchmark = copy.copy(classifier)
    benchmark.everyday = None
    results: dict[str, dict[str, Any]] = {}
    for path in sorted(EVERYDAY_SETS.glob("everyday-prompts*.jsonl")):
        rows = [obj for _, obj in _read_jsonl(path)]
        truth = [str(obj["label"]) for obj in rows]
        texts = [_text(path, number, obj) for number, obj in enumerate(rows, 1)]
        shipped = [classifier.classify(t).label for t in texts]
        alone = [benchmark.classify(t).label for t in texts]
        labels = list(classifier.labels)
        with_heads = classification_report(truth, shipped, labels)
        without = classification_report(truth, alone, labels)
        results[path.name] = {
            "n": len(truth),
            "accuracy": with_heads.accuracy,
            "macro_f1": with_heads.macro_f1,
            "benchmark_accuracy": without.accuracy,
            "benchmark_macro_f1": without.macro_f1,
        }
    return results


def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from lalo_router.classify.model import DEFAULT_ARTIFACT
    from lalo_router.classify.model_card import write_model_card
    from lalo_router.classify.train import train

    for name in ("categories-train.jsonl", "outcomes-train.jsonl"):
        if not (args.data / name).is_file():
            raise InputError(f"training data not found: {args.data / name}")
    supplement = None if args.no_supplement else args.supplement
    if supplement is not None:
        if not supplement.is_file():
            raise InputError(f"supplement not found: {supplement} (--no-supplement trains without)")
        known = {
            str(obj.get("label")) for _, obj in _read_jsonl(args.data / "categories-train.jsonl")
        }
        for number, obj in _read_jsonl(supplement):
            _text(supplement, number, obj)
            if str(obj.get("label")) not in known:
                raise InputError(
                    f"{supplement}:{number}: label {obj.get('label')!r} is not one of the "
                    f"training data's ({', '.join(sorted(known))})"
                )
    target = args.out or DEFAULT_ARTIFACT
    meta = train(args.data, target, args.cache_dir, supplement)
    everyday = evaluate_everyday_sets(target)
    card = write_model_card(meta, target.parent / "MODEL_CARD.md", target, everyday)
    cats = meta["metrics"]["categories"]
    esc = meta["metrics"]["escalation"]["per_dataset"]
    out.write(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB) and {card}\n")
    out.write(f"validation macro-F1 {cats['macro_f1']:.4f}, accuracy {cats['accuracy']:.4f}\n")
    for name in ("mmlu", "gsm8k"):
        if name in esc:
            out.write(
                f"{name}: APGR {esc[name]['apgr']:.3f}, CPT50 {esc[name]['cpt50']:.1f}%, "
                f"CPT80 {esc[name]['cpt80']:.1f}%\n"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lalo-router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", type=Path, help="JSONL input ('-' for stdin)")
        p.add_argument("--artifact", type=Path, default=None, help="classifier artifact (.npz)")
        p.add_argument("-o", "--output", type=Path, default=None, help="write here, not stdout")

    def add_strategy(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--strategy",
            choices=("embedding", "llm"),
            default="embedding",
            help="embedding: the trained classifier; llm: a router model over gRPC",
        )
        p.add_argument(
            "--target",
            default=os.environ.get("LALO_ROUTER_LLM_TARGET", ""),
            help="llm: inference server host:port (default: LALO_ROUTER_LLM_TARGET)",
        )
        p.add_argument(
            "--model",
            default=os.environ.get("LALO_ROUTER_LLM_MODEL", ""),
            help="llm: the router model's id (default: LALO_ROUTER_LLM_MODEL)",
        )
        p.add_argument(
            "--timeout", type=float, default=2.0, help="llm: seconds per call (default 2)"
        )
        p.add_argument("--max-tokens", type=int, default=16, help="llm: tokens per answer")

    predict = sub.add_parser("predict", help="one JSON line per input: label, scores, p_escalate")
    add_common(predict)
    add_strategy(predict)
    predict.set_defaults(func=cmd_predict)

    evaluate = sub.add_parser("eval", help="metrics on labelled data")
    eval_sub = evaluate.add_subparsers(dest="what", required=True)
    cats = eval_sub.add_parser(
        "categories", help="accuracy, macro-F1, per class, confusion, latency"
    )
    add_common(cats)
    add_strategy(cats)
    cats.add_argument("--json", action="store_true", help="machine-readable output")
    cats.set_defaults(func=cmd_eval_categories)
    outcomes = eval_sub.add_parser(
        "outcomes", help="APGR and CPT(50%%/80%%) per dataset, and pooled ('all') over several"
    )
    add_common(outcomes)
    outcomes.add_argument("--json", action="store_true", help="machine-readable output")
    outcomes.set_defaults(func=cmd_eval_outcomes)

    train = sub.add_parser("train", help="train the classifier and write the artifact")
    train.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with the JSONL files"
    )
    train.add_argument(
        "--out", type=Path, default=None, help="artifact path (default: committed one)"
    )
    train.add_argument(
        "--supplement",
        type=Path,
        default=DEFAULT_SUPPLEMENT,
        help="hand-written everyday requests (JSONL like categories-train.jsonl)",
    )
    train.add_argument(
        "--no-supplement", action="store_true", help="train on --data alone (no everyday heads)"
    )
    train.add_argument("--cache-dir", type=Path, default=Path(".lalo/cache/router"))
    train.add_argument("-o", "--output", type=Path, default=None, help=argparse.SUPPRESS)
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str]) -> int:
    """Run one sub-command (``argv`` excludes the program name); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from lalo_router.classify.model import ArtifactError

    try:
        if args.output is not None:
            with args.output.open("w", encoding="utf-8") as out:
                return int(args.func(args, out))
        return int(args.func(args, sys.stdout))
    except (InputError, ArtifactError) as exc:
        print(f"lalo-router {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lalo-router {args.command}: {exc}", file=sys.stderr)
        return 2

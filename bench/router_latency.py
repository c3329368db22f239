"""Router classification latency on one thread, prompts from a few words to ~8K tokens, beside
a naive-Bayes bag-of-words baseline trained and measured in the same run. The classifier's
times are end to end (``classify``), the slow path included where the fast head is unsure;
the "slow" column is the share of prompts that took it.

    make bench-router        (or: python bench/router_latency.py [--data ../shared/data/router])

Prints p50/p99 per prompt-length bucket and overall, and the baseline's macro-F1 / the
classifier's on a held-out slice when the training data is available.
"""

from __future__ import annotations

import os

# One core: set before numpy is imported (BLAS reads these once).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from lalo_router.classify import load_classifier  # noqa: E402

WORD = re.compile(r"[a-z0-9]+")


class NaiveBayes:
    """Multinomial naive Bayes over lower-cased word unigrams (Laplace smoothing)."""

    def fit(self, texts: list[str], labels: list[str]) -> NaiveBayes:
        self.labels = sorted(set(labels))
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for text, label in zip(texts, labels, strict=True):
            counts[label].update(WORD.findall(text.lower()))
        vocab = sorted({w for c in counts.values() for w in c})
        self.index = {w: i for i, w in enumerate(vocab)}
        table = np.ones((len(vocab), len(self.labels)), dtype=np.float32)
        for j, label in enumerate(self.labels):
            for w, n in counts[label].items():
                table[self.index[w], j] += n
        self.log_p = np.log(table / table.sum(0)).astype(np.float32)
        prior = Counter(labels)
        self.log_prior = np.log(np.array([prior[x] / len(labels) for x in self.labels], np.float32))
        return self

    def predict(self, text: str) -> str:
        ids = [self.index[w] for w in WORD.findall(text.lower()) if w in self.index]
        scores = self.log_prior + (self.log_p[ids].sum(0) if ids else 0.0)
        return self.labels[int(np.argmax(scores))]


def load_rows(data: Path) -> list[dict[str, str]]:
    path = data / "categories-train.jsonl"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def synthetic_rows() -> list[dict[str, str]]:
    base = {
        "chat": "hello there how are you doing today",
        "math": "what is 17 times 23 plus 4",
        "code": "write a python function that reverses a linked list",
        "summarization": "summarize the following meeting transcript",
    }
    return [{"text": f"{t} {i}", "label": k} for k, t in base.items() for i in range(50)]


def prompts_by_length(rows: list[dict[str, str]], rng: random.Random) -> dict[str, list[str]]:
    """Buckets of prompts: real short/medium ones, and long ones made by concatenating real
    prompts up to ~2K and ~8K tokens (≈4 characters per token)."""
    texts = [r["text"] for r in rows]
    rng.shuffle(texts)
    short = [t for t in texts if len(t) < 200][:300]
    medium = [t for t in texts if 200 <= len(t) < 2000][:150]

    def long(chars: int, n: int) -> list[str]:
        out = []
        for _ in range(n):
            parts, size = [], 0
            while size < chars:
                t = rng.choice(texts)
                parts.append(t)
                size += len(t) + 1
            out.append("\n".join(parts)[:chars])
        return out

    return {
        "short (<50 tok)": short,
        "medium": medium,
        "~2K tokens": long(8000, 50),
        "~8K tokens": long(32000, 50),
    }


def timed(fn, items: list[str], repeat: int) -> tuple[list[float], list[object]]:  # type: ignore[no-untyped-def]
    out, results = [], []
    for _ in range(repeat):
        for text in items:
            start = time.perf_counter()
            results.append(fn(text))
            out.append((time.perf_counter() - start) * 1000.0)
    return out, results


def row(name: str, n: int, clf_ms: list[float], slow: float, nb_ms: list[float]) -> str:
    p = np.percentile
    return (
        f"{name:<18}{n:>6}  {p(clf_ms, 50):>14.3f}{p(clf_ms, 99):>8.3f}{slow:>7.1%}"
        f"   {p(nb_ms, 50):>16.3f}{p(nb_ms, 99):>8.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("ROUTER_DATA", "../shared/data/router"))
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(0)
    rows = load_rows(args.data) or synthetic_rows()
    rng.shuffle(rows)
    split = int(len(rows) * 0.8)
    train, held = rows[:split], rows[split:]
    nb = NaiveBayes().fit([r["text"] for r in train], [r["label"] for r in train])
    started = time.perf_counter()
    classifier = load_classifier()
    load_s = time.perf_counter() - started
    for text in ("warm up", "x" * 10000):
        classifier.classify(text)

    print(f"classifier v{classifier.version} loaded in {load_s:.2f}s; one thread\n")
    header = f"{'prompts':<18}{'n':>6}  {'classifier p50':>14}{'p99':>8}{'slow':>7}"
    print(header + f"   {'naive Bayes p50':>16}{'p99':>8}")
    all_clf, all_nb, all_slow = [], [], []
    for name, items in prompts_by_length(rows, rng).items():
        if not items:
            continue
        clf_ms, results = timed(classifier.classify, items, args.repeat)
        nb_ms, _ = timed(nb.predict, items, args.repeat)
        slow = [bool(getattr(r, "slow_path", False)) for r in results]
        all_clf += clf_ms
        all_nb += nb_ms
        all_slow += slow
        print(row(name, len(items), clf_ms, float(np.mean(slow)), nb_ms))
    print(row("all", len(all_clf) // args.repeat, all_clf, float(np.mean(all_slow)), all_nb))
    print("targets: p50 <= 3 ms, p99 <= 10 ms (classifier)")
    if held and load_rows(args.data):
        from lalo_router.classify.metrics import classification_report

        truth = [r["label"] for r in held]
        nb_f1 = classification_report(truth, [nb.predict(r["text"]) for r in held]).macro_f1
        clf_f1 = classification_report(
            truth, [classifier.classify(r["text"]).label for r in held]
        ).macro_f1
        print(
            f"\nmacro-F1 on a random 20% slice: naive Bayes {nb_f1:.3f} (trained on the other "
            "80%), "
            f"classifier {clf_f1:.3f} (trained on all of it: optimistic, see MODEL_CARD.md)"
        )


if __name__ == "__main__":
    main()

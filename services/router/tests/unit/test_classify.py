"""The committed classifier artifact: decisions, robustness, thread safety, API shape."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from lalo_router.classify import (
    DEFAULT_ARTIFACT,
    OTHER,
    ArtifactError,
    Classification,
    Classifier,
    load_classifier,
    text_from_messages,
)

LABELS = {
    "agentic",
    "chat",
    "code",
    "creative_writing",
    "extraction",
    "factual_qa",
    "math",
    "reasoning",
    "summarization",
}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return load_classifier()


def test_artifact_is_small_and_versioned(classifier: Classifier) -> None:
    assert DEFAULT_ARTIFACT.stat().st_size < 5 * 1024 * 1024
    assert set(classifier.labels) == LABELS
    assert classifier.version.count(".") == 2
    assert (DEFAULT_ARTIFACT.parent / "MODEL_CARD.md").is_file()
    assert {"pgr50", "pgr80"} <= set(classifier.escalation_thresholds)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("hi there, how are you doing today?", "chat"),
        ("Write a python function to check whether a number is prime.", "code"),
        (
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May?",
            "math",
        ),
        ("who wrote the novel pride and prejudice", "factual_qa"),
        (
            "Write a short story based on this writing prompt: a dragon opens a bakery.",
            "creative_writing",
        ),
        ("set an alarm for 7 am tomorrow", "agentic"),
        (
            "Summarize the whole meeting.\n\nTranscript:\nProject Manager: Welcome everyone. "
            "Marketing: Thanks. We need to agree on the remote control design and the budget.",
            "summarization",
        ),
    ],
)
def test_clear_examples_get_their_label(classifier: Classifier, text: str, label: str) -> None:
    result = classifier.classify(text)
    assert result.label == label, result.scores


def test_result_shape(classifier: Classifier) -> None:
    result = classifier.classify("What is the capital of France?")
    assert isinstance(result, Classification)
    assert set(result.scores) == LABELS
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert result.confidence == pytest.approx(max(result.scores.values()))
    assert 0.0 <= result.p_escalate <= 1.0
    assert result.latency_ms >= 0.0
    record = result.to_json()
    assert json.loads(json.dumps(record))["label"] == result.label


def test_harder_prompts_escalate_more(classifier: Classifier) -> None:
    easy = classifier.classify("hello!").p_escalate
    hard = classifier.classify(
        "Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real x such that f(f(x)) = 0 and prove "
        "that there are no others. Options: (A) 3 (B) 5 (C) 7 (D) 9"
    ).p_escalate
    assert hard > easy


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t  ",
        "\x00\x01\x02\xff" * 100,
        "\ud800 lone surrogate \udfff",
        "Зачем нужен этот маршрутизатор? 这是什么\uff1f هذا اختبار",
        "🙂" * 5000,
        "a" * 1_000_000,
        "word " * 300_000,
        b"\x89PNG\r\n\x1a\n binary",
        None,
        12345,
        {"role": "tool", "content": "odd"},
    ],
)
def test_bad_input_gets_a_decision(classifier: Classifier, text: object) -> None:
    result = classifier.classify(text)
    assert result.label in LABELS | {OTHER}
    assert np.isfinite(result.p_escalate)
    assert all(np.isfinite(v) for v in result.scores.values())


def test_empty_input_is_other(classifier: Classifier) -> None:
    assert classifier.classify("").label == OTHER
    assert classifier.classify("   ").label == OTHER


def test_long_prompts_are_truncated_head_and_tail(classifier: Classifier) -> None:
    head = "Write a python function to merge two sorted lists. "
    padding = "lorem ipsum dolor sit amet " * 40_000
    result = classifier.classify(head + padding)
    assert result.label in LABELS | {OTHER}
    # Only head and tail count: the same head with different long middles decides the same.
    other = classifier.classify(head + "zzz qqq " * 50_000 + padding[-2000:])
    assert other.label == result.label


def test_thread_safe_and_deterministic(classifier: Classifier) -> None:
    texts = ["hello", "what is 2+2", "write a haiku about rain", "book a taxi to the airport"] * 25
    expected = [classifier.classify(t).scores for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda t: classifier.classify(t).scores, texts))
    assert got == expected


def test_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read"):
        load_classifier(tmp_path / "missing.npz")


def test_corrupt_artifact_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ArtifactError):
        load_classifier(bad)


def test_wrong_tokenizer_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "tokenizer.json"
    other.write_text("{}")
    with pytest.raises(ArtifactError, match="not the tokenizer"):
        load_classifier(tokenizer_path=other)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}], "hi"),
        (
            [
                {"role": "user", "content": "write code"},
                {"role": "assistant", "content": "def f(): pass"},
                {"role": "user", "content": "thanks!"},
            ],
            "thanks!",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": "part one"}]}], "part one"),
        ([{"role": "narrator", "content": "odd role"}], "odd role"),
        (
            [{"role": "user", "content": "   "}, {"role": "assistant", "content": "answer"}],
            "answer",
        ),
        ([], ""),
        (None, ""),
        ([{"role": "user"}, "not a message", 3], ""),
    ],
)
def test_text_from_messages(messages: object, expected: str) -> None:
    assert text_from_messages(messages) == expected  # type: ignore[arg-type]


def test_text_from_messages_bounds_megabyte_messages() -> None:
    text = text_from_messages([{"role": "user", "content": "x" * 1_000_000}])
    assert len(text) <= 4001

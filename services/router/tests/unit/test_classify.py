"""The committed classifier artifact: decisions, robustness, thread safety, API shape."""

from __future__ import annotations

import copy
import dataclasses
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
    assert DEFAULT_ARTIFACT.stat().st_size < 5 * 1000 * 1000
    assert set(classifier.labels) == LABELS
    assert classifier.version.count(".") == 2
    assert (DEFAULT_ARTIFACT.parent / "MODEL_CARD.md").is_file()
    assert {"pgr50", "pgr80"} <= set(classifier.escalation_thresholds)
    # every category has both operating points (its own, or the global ones as fallback)
    assert set(classifier.escalation_thresholds_by_category) == LABELS
    for points in classifier.escalation_thresholds_by_category.values():
        assert set(points) == {"pgr50", "pgr80"}
        assert 0.0 < points["pgr80"] <= points["pgr50"] < 1.0


def test_escalation_threshold_per_category_then_global(classifier: Classifier) -> None:
    fake = copy.copy(classifier)
    fake.escalation_thresholds = {"pgr50": 0.3, "pgr80": 0.2}
    fake.escalation_thresholds_by_category = {"math": {"pgr50": 0.9}}
    assert fake.escalation_threshold("pgr50", "math") == 0.9
    assert fake.escalation_threshold("pgr80", "math") == 0.2  # point missing there: global
    assert fake.escalation_threshold("pgr50", "chat") == 0.3  # category without its own
    assert fake.escalation_threshold("pgr50", "other") == 0.3
    assert fake.escalation_threshold("pgr50") == 0.3
    assert fake.escalation_threshold("pgr99", "math") is None
    assert fake.escalation_threshold("pgr99") is None


def test_escalation_threshold_of_the_artifact(classifier: Classifier) -> None:
    for label, points in classifier.escalation_thresholds_by_category.items():
        assert classifier.escalation_threshold("pgr80", label) == points["pgr80"]
    assert classifier.escalation_threshold("pgr50") == classifier.escalation_thresholds["pgr50"]


def _rewrite_artifact(tmp_path: Path, **changes: object) -> Path:
    """A copy of the committed artifact with some arrays (or meta keys) replaced."""
    from lalo_router.classify.model import load_arrays

    arrays, meta = load_arrays(DEFAULT_ARTIFACT)
    for name, value in changes.items():
        if name in arrays:
            arrays[name] = np.asarray(value)
        else:
            meta[name] = value
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = tmp_path / "variant.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_maths_prompts_use_the_gated_escalation_head(
    classifier: Classifier, tmp_path: Path
) -> None:
    from lalo_router.classify.model import load_arrays

    arrays, _ = load_arrays(DEFAULT_ARTIFACT)
    dense, sparse_w, bias = arrays["esc_dense_w"], arrays["esc_sparse_w"], arrays["esc_b"]
    # The same artifact with the maths column (3) shifted up by 2 logits.
    shifted = load_classifier(
        _rewrite_artifact(tmp_path, esc_b=bias + np.array([0, 0, 0, 2], dtype=bias.dtype))
    )
    word_problem = (
        "A baker makes 3 batches of 24 cookies, sells 5/6 of them at $2 each and gives away "
        "the rest. How much money does she make?"
    )
    question = "Which of the following is a noble gas? A. Oxygen B. Argon C. Nitrogen D. Iron"
    maths = classifier.classify(word_problem)
    assert maths.label == "math"
    assert shifted.classify(word_problem).p_escalate > maths.p_escalate + 0.1
    # a prompt with little maths probability keeps (nearly) the general head's answer
    other = classifier.classify(question)
    assert other.scores["math"] < 0.05
    assert shifted.classify(question).p_escalate == pytest.approx(other.p_escalate, abs=0.02)
    assert dense.shape[1] == sparse_w.shape[1] == bias.shape[0] == 4


def test_escalation_heads_must_match_the_gate(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="incomplete"):
        load_classifier(_rewrite_artifact(tmp_path, escalation_gate="no_such_label"))


# Everyday requests unlike the training sources (written for these tests: in neither the
# supplement nor the everyday test sets). The benchmark heads alone call most of them
# agentic (the model card's Limits say which everyday requests the classifier still misses).
EVERYDAY = [
    ("What's the difference between a list and a tuple in Python?", "code"),
    ("Write a limerick about a cat who hates Mondays.", "creative_writing"),
    ("Book a table for four at an Italian place near the office for Friday 7pm.", "agentic"),
    ("What is 18% of 250?", "math"),
    (
        "Extract every date mentioned in this note as a list: kickoff on 4 March, design "
        "review 18 March, launch 2 May.",
        "extraction",
    ),
    (
        "Summarize this in two sentences: Our office will be closed on Monday for the public "
        "holiday. Support tickets filed over the weekend will be answered on Tuesday, and "
        "urgent issues can still go to the on-call phone.",
        "summarization",
    ),
    (
        "Pull the invoice number and the total out of this: Invoice INV-2041, issued 3 May, "
        "total due EUR 480.00, payable within 30 days.",
        "extraction",
    ),
]


@pytest.mark.parametrize(("text", "label"), EVERYDAY)
def test_everyday_requests_get_their_label(classifier: Classifier, text: str, label: str) -> None:
    assert classifier.classify(text).label == label


def test_everyday_heads_mix_in_only_for_everyday_requests(classifier: Classifier) -> None:
    """The everyday heads are what get everyday requests right; on a benchmark-style prompt
    (a GSM8K word problem, a BBH puzzle) the domain weight is small and the scores barely
    move."""
    benchmark = copy.copy(classifier)
    benchmark.everyday = None
    right = [classifier.classify(t).label == label for t, label in EVERYDAY]
    alone = [benchmark.classify(t).label == label for t, label in EVERYDAY]
    assert sum(right) > sum(alone)
    word_problem = (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?"
    )
    mixed, plain = classifier.classify(word_problem), benchmark.classify(word_problem)
    assert mixed.label == plain.label == "math"
    assert mixed.scores["math"] == pytest.approx(plain.scores["math"], abs=0.05)
    # p_escalate reads the benchmark head's maths gate either way
    assert mixed.p_escalate == plain.p_escalate


def test_an_artifact_without_everyday_heads_is_the_benchmark_classifier(
    classifier: Classifier, tmp_path: Path
) -> None:
    from lalo_router.classify.model import load_arrays

    arrays, meta = load_arrays(DEFAULT_ARTIFACT)
    kept = {k: v for k, v in arrays.items() if not k.startswith(("everyday_", "domain_"))}
    kept["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = tmp_path / "benchmark.npz"
    np.savez(path, **kept)  # type: ignore[arg-type]
    plain = load_classifier(path)
    assert plain.everyday is None
    benchmark = copy.copy(classifier)
    benchmark.everyday = None
    for text, _ in EVERYDAY:
        assert plain.classify(text).scores == benchmark.classify(text).scores


def test_everyday_heads_must_match_the_features(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="incomplete"):
        load_classifier(_rewrite_artifact(tmp_path, domain_dense_w=np.zeros(3, dtype=np.float32)))


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
    easy = classifier.classify("what is 2+2").p_escalate
    hard = classifier.classify(
        "Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real x such that f(f(x)) = 0 and prove "
        "that there are no others. Options: (A) 3 (B) 5 (C) 7 (D) 9"
    ).p_escalate
    assert hard > easy


def test_greetings_stay_below_the_escalation_thresholds(classifier: Classifier) -> None:
    # p_escalate is learned from benchmark questions; for small talk it is an extrapolation,
    # which must still not send greetings to the large model at either operating point.
    for text in ("hello!", "thanks!", "hi there, how are you doing today?"):
        result = classifier.classify(text)
        threshold = classifier.escalation_threshold("pgr80", result.label)
        assert threshold is not None
        assert result.p_escalate < threshold, (text, result.p_escalate, threshold)


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
    for text in ("", "   "):
        result = classifier.classify(text)
        assert (result.label, result.note) == (OTHER, "empty")
        assert result.to_json()["note"] == "empty"
    assert "note" not in classifier.classify("What is the capital of France?").to_json()


@pytest.mark.parametrize(
    "text",
    [
        "🙂🎉🔥 " * 20,  # unknown tokens
        "今天天气怎么样我想去公园散步然后去超市买东西",  # another script
        "Какая столица Франции?",
        bytes(range(256)).decode("latin-1"),  # binary read as text
        "asdkjh qwe zxcmnb lkjqwe poiu",  # key mashing: word pieces
        "U29tZSBiYXNlNjQgZW5jb2RlZCB0ZXh0IGhlcmUgZm9yIHRlc3Rpbmc=",
        "\x01\x02\x03",
    ],
)
def test_unreadable_text_is_other(classifier: Classifier, text: str) -> None:
    """Confident-looking probabilities over noise mean nothing: such text goes to ``other``
    (the default pool); its scores are still reported."""
    result = classifier.classify(text)
    assert (result.label, result.note) == (OTHER, "unreadable text")
    assert result.p_escalate == 0.0  # noise is not sent to a bigger model
    assert result.slow_path is False
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("bonjour", "chat"),
        ("merci beaucoup", "chat"),
        ("Define loquaciousness", "factual_qa"),
        ("What is the capital of France?", "factual_qa"),
        ("Calculate 15% of $12.50 and round to the cent.", "math"),
    ],
)
def test_readable_text_keeps_its_label(classifier: Classifier, text: str, label: str) -> None:
    """Short greetings in other languages, rare words, symbols: in the training data's range."""
    assert classifier.classify(text).label == label


def test_other_is_not_for_hard_in_domain_prompts(classifier: Classifier) -> None:
    """The low-confidence fallback sits below every validation prompt's confidence."""
    assert classifier.other_threshold < 0.3
    assert classifier.meta["metrics"]["categories"]["unreadable_training_prompts"] == 0


def test_a_near_uniform_guess_is_other(classifier: Classifier) -> None:
    text = "What is the capital of France?"
    unsure = copy.copy(classifier)
    unsure.other_threshold = classifier.classify(text).confidence + 0.01
    result = unsure.classify(text)
    assert (result.label, result.note) == (OTHER, "low confidence")


def test_a_failure_inside_is_other_and_says_so(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = copy.copy(classifier)

    def fail(text: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(broken, "_probabilities", fail)
    result = broken.classify("What is the capital of France?")
    assert (result.label, result.note) == (OTHER, "classification failed")
    assert result.latency_ms >= 0.0
    assert classifier.classify("").note == "empty"  # the shared fallback was not changed


def test_long_prompts_are_truncated_head_and_tail(classifier: Classifier) -> None:
    head = "Write a python function to merge two sorted lists. " + "lorem ipsum " * 200
    tail = " dolor sit amet" * 100
    result = classifier.classify(head + "zzz " * 250_000 + tail)
    assert result.label in LABELS | {OTHER}
    # Only the first 2,000 and last 1,000 characters are read (and the length): a middle of
    # the same size with other words decides exactly the same.
    other = classifier.classify(head + "qqq " * 250_000 + tail)
    assert other.scores == result.scores
    assert other.p_escalate == result.p_escalate
    # ...while a change inside the head does count.
    assert classifier.classify("Summarize " + head + "zzz " * 250_000 + tail).scores != (
        result.scores
    )


def _fast_only(classifier: Classifier) -> Classifier:
    fast = copy.copy(classifier)
    fast.slow = None
    return fast


def test_slow_path_only_on_uncertain_prompts(classifier: Classifier) -> None:
    from lalo_router.classify.model import top2_margin

    slow = classifier.slow
    assert slow is not None
    assert 0.0 < slow.margin <= 1.0
    fast = _fast_only(classifier)
    texts = [
        "hi there, how are you doing today?",
        "set an alarm for 7 am tomorrow",
        "Write a python function to check whether a number is prime.",
        "what's the weather like",
        "tell me about the history of rome",
        "can you list the key points",
        "why is the sky blue",
        "I need help",
    ]
    taken = []
    for text in texts:
        result = classifier.classify(text)
        probs, p_escalate = fast.probabilities(text)
        uncertain = float(top2_margin(probs)) < slow.margin
        assert result.slow_path == uncertain
        if not uncertain:  # the fast head's answer, untouched
            assert result.scores == fast.classify(text).scores
        # escalation keeps the fast head's gate either way
        assert result.p_escalate == pytest.approx(p_escalate, abs=1e-6)
        taken.append(result.slow_path)
    assert taken[:3] == [False, False, False]  # clear prompts stay on the fast path
    assert any(taken)


def test_slow_path_cost_is_bounded(classifier: Classifier) -> None:
    """A megabyte prompt on the slow path: the transformer reads at most ``tokens`` ids."""
    slow = classifier.slow
    assert slow is not None
    seen: list[int] = []
    real = slow.encoder.embed

    class Spy:
        def embed(self, ids: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
            seen.append(int(ids.size))
            return real(ids)

    spied = copy.copy(classifier)
    spied.slow = dataclasses.replace(slow, margin=1.01)  # every prompt takes the slow path
    spied.slow = dataclasses.replace(spied.slow, encoder=Spy())  # type: ignore[arg-type]
    text = "tell me about the history of rome. " * 30_000  # ~1 MB
    result = spied.classify(text)
    assert result.slow_path
    assert seen == [slow.tokens]
    assert result.label in LABELS | {OTHER}
    timings = [spied.classify(text).latency_ms for _ in range(3)]
    assert min(timings) < 500  # bounded: the transformer never sees the whole prompt


def test_thread_safe_and_deterministic(classifier: Classifier) -> None:
    texts = [
        "hello",
        "what is 2+2",
        "write a haiku about rain",
        "book a taxi to the airport",
        "what's the weather like",
        "I need help",
        "why is the sky blue",
    ] * 15
    expected = [classifier.classify(t).scores for t in texts]
    assert any(classifier.classify(t).slow_path for t in texts)  # both paths, concurrently
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

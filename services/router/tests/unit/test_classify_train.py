"""Training helpers of the escalation head (``classify/train.py``) on hand-made data: what
counts as the same prompt, how folds are drawn, what the heads learn."""

from __future__ import annotations

import numpy as np
import pytest
from lalo_router.classify.features import LEXICAL_NAMES, Featurizer
from lalo_router.classify.train import (
    SHARED_OPENING,
    Outcomes,
    fit_escalation,
    hash_folds,
    prompt_keys,
    read_outcomes,
    subject_folds,
)
from scipy import sparse

pytest.importorskip("sklearn")


def test_prompt_keys_match_reformatted_copies_and_split_few_shot_prompts() -> None:
    question = "What is the capital of France? " * 8
    keys = prompt_keys([question + "\nA. Paris\nAnswer:", question.upper()])
    assert keys[0] == keys[1]  # same opening, other answer formatting: the same prompt
    demos = "Q: 2+2?\nA: 4\n\n" * 20
    few_shot = [demos + f"Q: what is {i} + {i}?\nA:" for i in range(SHARED_OPENING + 1)]
    assert len(set(prompt_keys(few_shot))) == len(few_shot)  # told apart by their end


def test_read_outcomes_pairs_and_difficulty() -> None:
    rows = [
        {"prompt": "a", "dataset": "mmlu/anatomy", "scores": {"s": 0, "l": 1},
         "small_model": "s", "large_model": "l"},
        {"prompt": "b", "dataset": "gsm8k-test", "scores": {"m1": 1, "m2": 0, "m3": 0}},
        {"prompt": "c", "dataset": "mbpp", "scores": {"s": 1, "l": 1, "x": 0},
         "small_model": "s", "large_model": "l"},
    ]  # fmt: skip
    data = read_outcomes(rows)
    assert data.pair.tolist() == [True, False, True]
    assert data.weak[0] == 0
    assert data.strong[0] == 1
    assert np.isnan(data.difficulty[0])  # only its pair: the gain target, not a difficulty
    assert data.difficulty[1] == pytest.approx(2 / 3)
    assert data.difficulty[2] == pytest.approx(1 / 3)
    assert data.subject == ["anatomy", "", ""]
    assert data.math.tolist() == [False, True, False]


def test_subject_folds_hold_subjects_out_whole() -> None:
    texts = [f"question {i}" for i in range(60)]
    subjects = [("law", "maths", "history")[i % 3] for i in range(50)] + [""] * 10
    data = Outcomes(
        texts=texts,
        keys=prompt_keys(texts),
        family=np.array(["mmlu"] * 60),
        subject=subjects,
        weak=np.zeros(60),
        strong=np.ones(60),
        difficulty=np.full(60, np.nan),
        math=np.zeros(60, bool),
    )
    folds = subject_folds(data, 5)
    for subject in ("law", "maths", "history"):
        assert len({f for f, s in zip(folds, subjects, strict=True) if s == subject}) == 1
    assert len({folds[subjects.index(s)] for s in ("law", "maths", "history")}) == 3
    rest = np.array(subjects) == ""
    assert folds[rest].tolist() == hash_folds(data.keys, 5)[rest].tolist()


def dimensions_only(vocab: int, table_dims: int) -> Featurizer:
    """A featurizer with the right dimensions and no tokenizer: fit_escalation reads no more."""
    return Featurizer(
        tokenizer=None,  # type: ignore[arg-type]
        table=np.zeros((vocab, table_dims), np.float32),
        idf=np.ones(vocab, np.float32),
        sparse_weight=1.0,
    )


def test_maths_only_signal_moves_only_the_maths_score() -> None:
    """Maths prompts with an amount in cents where the large model gains nothing: the
    signal lowers the maths score of exactly those prompts and nothing else reads it."""
    rng = np.random.default_rng(1)
    n, table_dims, vocab = 600, 4, 20
    featurizer = dimensions_only(vocab, table_dims)
    column = table_dims + LEXICAL_NAMES.index("money_with_cents")
    dense = rng.normal(size=(n, featurizer.dense_dim)).astype(np.float32)
    math = np.arange(n) % 2 == 0
    cents = math & (rng.random(n) < 0.2)
    dense[:, column] = cents
    matrix = sparse.csr_matrix(
        (np.ones(n), (np.arange(n), rng.integers(0, vocab, n))), shape=(n, vocab)
    )
    weak = (rng.random(n) < 0.6).astype(np.float64)
    # Elsewhere the large model is right; on the cents prompts no better than the small one.
    strong = np.where(cents, weak, 1.0)
    data = Outcomes(
        texts=[str(i) for i in range(n)],
        keys=[str(i) for i in range(n)],
        family=np.where(math, "gsm8k", "mmlu"),
        subject=[""] * n,
        weak=weak,
        strong=strong,
        difficulty=1.0 - (weak + strong) / 2.0,
        math=math,
    )
    heads = fit_escalation(featurizer, dense, matrix, data, np.ones(n, bool))
    assert np.all(heads.dense_w[column, :3] == 0.0)
    assert heads.dense_w[column, 3] < 0.0
    without = dense.copy()
    without[:, column] = 0.0
    gated = np.ones(n)
    lowered = heads.score(dense, matrix, gated) - heads.score(without, matrix, gated)
    assert np.all(lowered[cents] < 0.0)
    assert np.all(lowered[~cents] == 0.0)
    general = heads.score(dense, matrix, np.zeros(n))
    assert np.array_equal(general, heads.score(without, matrix, np.zeros(n)))


def test_fit_escalation_learns_gain_and_length() -> None:
    rng = np.random.default_rng(0)
    n, table_dims, vocab = 400, 4, 20
    featurizer = dimensions_only(vocab, table_dims)
    dense = rng.normal(size=(n, featurizer.dense_dim)).astype(np.float32)
    hard = rng.random(n) < 0.3  # prompts containing term 7: only the large model solves them
    terms = rng.integers(0, vocab, size=(n, 3))
    terms[hard, 0] = 7
    terms[~hard] = np.where(terms[~hard] == 7, 8, terms[~hard])
    matrix = sparse.csr_matrix(
        (np.ones(terms.size), (np.repeat(np.arange(n), 3), terms.ravel())), shape=(n, vocab)
    )
    math = np.arange(n) % 2 == 0
    both_wrong = ~hard & (rng.random(n) < 0.15)  # no gain from escalating these
    data = Outcomes(
        texts=[str(i) for i in range(n)],
        keys=[str(i) for i in range(n)],
        family=np.where(math, "gsm8k", "mmlu"),
        subject=[""] * n,
        weak=np.where(hard | both_wrong, 0.0, 1.0),
        strong=np.where(both_wrong, 0.0, 1.0),
        difficulty=np.where(hard, 0.8, 0.1),
        math=math,
    )
    heads = fit_escalation(featurizer, dense, matrix, data, np.ones(n, bool))
    general = heads.score(dense, matrix, np.zeros(n))
    assert general[hard].min() > general[~hard].max()
    assert heads.dense_w.shape[1] == heads.sparse_w.shape[1] == heads.bias.shape[0] == 4
    # The maths head adds the length prior: same prompt, longer text, higher score.
    longer = dense.copy()
    longer[:, table_dims + LEXICAL_NAMES.index("log_chars")] += 1.0
    gated = np.ones(n)
    assert np.all(heads.score(longer, matrix, gated) > heads.score(dense, matrix, gated))
    assert np.allclose(heads.score(longer, matrix, np.zeros(n)), general, atol=0.5)


def test_run_time_escalation_is_the_trained_formula() -> None:
    """``model.Classifier`` and ``train.EscalationHeads`` compute p_escalate the same way."""
    from lalo_router.classify import DEFAULT_ARTIFACT, load_classifier
    from lalo_router.classify.model import load_arrays, sparse_weights
    from lalo_router.classify.train import (
        EscalationHeads,
        category_probabilities,
        featurize,
    )

    classifier = load_classifier()
    arrays, meta = load_arrays(DEFAULT_ARTIFACT)
    texts = [
        "hello!",
        "What is 17 * 23?",
        "A train leaves at 3 pm at 60 mph; a second one leaves at 4 pm at 80 mph. When does "
        "the second catch up?",
        "Which of the following is a noble gas?\nA. Oxygen\nB. Argon\nC. Iron\nD. Tin\nAnswer:",
        "Write a python function that merges two sorted lists.",
    ]
    dense, matrix = featurize(classifier.featurizer, texts)
    gate = category_probabilities(arrays, dense, matrix)[:, classifier.labels.index("math")]
    heads = EscalationHeads(
        dense_w=arrays["esc_dense_w"].astype(np.float64),
        sparse_w=sparse_weights(arrays, "esc_sparse_w").astype(np.float64),
        bias=arrays["esc_b"].astype(np.float64),
        gain_weight=float(arrays["esc_gain_weight"]),
    )
    expected = 1.0 / (1.0 + np.exp(-heads.score(dense, matrix, gate)))
    got = [classifier.classify(t).p_escalate for t in texts]
    assert got == pytest.approx(expected, abs=1e-5)
    assert meta["escalation_gate"] == "math"


def test_run_time_cascade_is_the_trained_formula() -> None:
    """``model.Classifier`` and ``train.cascade_probabilities`` give the same category scores,
    on prompts that stay on the fast path and on prompts that take the slow one."""
    from lalo_router.classify import DEFAULT_ARTIFACT, load_classifier
    from lalo_router.classify.model import load_arrays
    from lalo_router.classify.train import (
        cascade_probabilities,
        fast_probabilities,
        featurize,
        slow_embeddings,
        slow_probabilities,
    )

    classifier = load_classifier()
    assert classifier.slow is not None
    assert classifier.everyday is not None  # the everyday heads are part of the formula
    arrays, meta = load_arrays(DEFAULT_ARTIFACT)
    texts = [
        "hello!",
        "set an alarm for 7 am tomorrow",
        "What is 17 * 23?",
        "what's the weather like",
        "tell me about the history of rome",
        "can you list the key points",
        "How many days are there in a leap year?",
        "From the passage provided, extract the names of the rivers.",
        "why is the sky blue",
        "I need help",
        "Summarize this in one sentence: the quarterly review moved to Thursday at 3pm.",
        "Regex that matches UK postcodes like 'SW1A 1AA'.",
    ]
    dense, matrix = featurize(classifier.featurizer, texts)
    fast = fast_probabilities(arrays, dense, matrix)
    slow = slow_probabilities(arrays, slow_embeddings(texts, classifier.featurizer), dense, matrix)
    expected, taken = cascade_probabilities(fast, slow, meta["slow_path"]["margin"])
    results = [classifier.classify(t) for t in texts]
    assert [r.slow_path for r in results] == taken.tolist()
    assert 0 < taken.sum() < len(texts)  # both paths are exercised
    for result, row in zip(results, expected, strict=True):
        got = [result.scores[label] for label in classifier.labels]
        assert got == pytest.approx(row, abs=1e-4)

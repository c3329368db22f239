"""Lexical signals and token ids of ``classify/features.py`` on hand-written prompts."""

from __future__ import annotations

import pytest
from lalo_router.classify import load_classifier
from lalo_router.classify.features import (
    HEAD_TOKENS,
    LEXICAL_NAMES,
    TAIL_TOKENS,
    Featurizer,
    head_tail,
    lexical_features,
)

CENTS = LEXICAL_NAMES.index("money_with_cents")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A notebook costs $2.50 and a pen $1. How much do 3 of each cost?", 1.0),
        ("Each bottle cap is worth $.25. How much money does he make in a month?", 1.0),
        ("Gum costs 75 cents a pack. How much do 4 packs cost in dollars?", 1.0),
        ("A notebook costs $2 and a pen $1. How much do 3 of each cost?", 0.0),
        ("The tank holds 2.5 litres. How many litres do 4 tanks hold?", 0.0),
        # Multiple choice: the answer is a letter, nothing to mis-grade in an amount.
        ("What is $2.50 times 4?\nA. $10.00\nB. $8.00\nC. $12.00\nD. $9.50\nAnswer:", 0.0),
    ],
)
def test_money_with_cents(text: str, expected: float) -> None:
    assert lexical_features(text, text)[CENTS] == expected


GIVEN_TEXT = LEXICAL_NAMES.index("refers_to_given_text")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("From the passage provided, extract the year the league was established.", 1.0),
        ("Given a reference text about Joseph Charlton, what team did he play for?", 1.0),
        ("Based on this paragraph, during what year was Hearst born?", 1.0),
        ("Extract the names of the teams from the text below.", 1.0),
        ("From the article, tell me why the trail has been closed.", 1.0),
        # Words that only sometimes point at a supplied text do not count.
        ("Which of the following is a prime number? A. 4 B. 6 C. 7 D. 9", 0.0),
        (
            "The following paragraphs each describe a set of three objects arranged in a "
            "fixed order. The statements are logically consistent within each paragraph.",
            0.0,
        ),
        ("Write an article about the history of the bicycle.", 0.0),
        ("What is the capital of Australia?", 0.0),
    ],
)
def test_refers_to_given_text(text: str, expected: float) -> None:
    assert lexical_features(text, text)[GIVEN_TEXT] == expected


EXTRACT = LEXICAL_NAMES.index("extract_verb")
OPTIONS = LEXICAL_NAMES.index("multiple_choice")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("EXTRACT THE NAMES AND LIST THEM", 1.0),  # ASCII: matched on the lower-cased text
        ("Li\u017ft the colours, please", 1.0),  # long s: Unicode case folding still applies
        ("\u00c9num\u00e8re: LIST the colours", 1.0),
        ("Name the colours of the flag", 0.0),
    ],
)
def test_cues_ignore_case_in_ascii_and_unicode_text(text: str, expected: float) -> None:
    assert lexical_features(text, text)[EXTRACT] == expected


def test_multiple_choice_options_in_either_case() -> None:
    assert lexical_features("Pick one. (a) red (b) blue", "Pick one. (a) red (b) blue")[OPTIONS]
    assert lexical_features("Pick one. (A) r\u00e9d (B) blue", "Pick one. (A) r\u00e9d (B) blue")[
        OPTIONS
    ]
    assert not lexical_features("Pick a colour", "Pick a colour")[OPTIONS]


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return load_classifier().featurizer


def _whole_text_ids(featurizer: Featurizer, text: str) -> list[int]:
    ids: list[int] = featurizer.tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) > HEAD_TOKENS + TAIL_TOKENS:
        ids = ids[:HEAD_TOKENS] + ids[-TAIL_TOKENS:]
    return ids


PROSE = (
    "The committee met on Tuesday to discuss the budget for next year, and after a long "
    "debate it agreed to fund the new library wing. "
)


@pytest.mark.parametrize(
    ("text", "probed"),
    [
        (PROSE * 40, True),
        # accents, precomposed and combining
        (
            "\u00c7a co\u00fbte 3,50 \u20ac \u00e0 Z\u00fcrich, n'est-ce pas? "
            "Cr\u00e8me br\u00fble\u0301e. " * 60,
            True,
        ),
        # 5 tokens in 29 characters: 1,100 characters hold fewer than 192
        ("Caf\u00e9 na\u00efve co\u00f6perate e\u0301le\u0300ve " * 200, False),
        # CJK: a token per character
        ("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \u3067\u3059\u3002 " * 300, True),
        ("if x:\n" + "        y = f(x)  # step\n" * 200, True),
        ("3.14159, 2.71828; " * 300, True),
        (" " * 1500 + PROSE * 3 + "\t" * 1500, False),  # whitespace runs: too few tokens
        ("a" * 5000, False),  # no whitespace to cut at
        (PROSE * 8, False),  # short enough to tokenize whole
    ],
)
def test_head_and_tail_tokens_equal_the_whole_texts(
    featurizer: Featurizer, text: str, probed: bool
) -> None:
    """Long texts are tokenized from their two ends only; the ids are exactly those of the
    whole text (and the shortcut is really taken where it can be)."""
    short = head_tail(text)
    assert (featurizer._probe_head_and_tail(short) is not None) == probed
    assert featurizer.token_ids(short).tolist() == _whole_text_ids(featurizer, short)

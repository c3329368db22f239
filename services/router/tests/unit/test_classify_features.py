"""Lexical signals of ``classify/features.py`` on hand-written prompts."""

from __future__ import annotations

import pytest
from lalo_router.classify.features import LEXICAL_NAMES, lexical_features

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

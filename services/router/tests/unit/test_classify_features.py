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

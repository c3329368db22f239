"""The Embed input rules both inference services apply."""

from __future__ import annotations

import pytest
from lalo_common.embedding_inputs import checked_token_lists
from lalo_common.errors import InvalidArgument


def tokenize(text: str) -> list[int]:
    return [len(word) for word in text.split()]


def test_each_input_becomes_its_token_ids_in_order() -> None:
    assert checked_token_lists(["a bb", "ccc"], tokenize, 4, "m") == [[1, 2], [3]]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "no input to embed"),
        ([""], "input is empty"),
        (["fine", " \n"], "input[1] is empty"),
        (["one two three four five"], "input has 5 tokens, over m's context length of 4"),
        (["ok", "a b c d e"], "input[1] has 5 tokens"),
    ],
)
def test_what_cannot_be_embedded_whole_is_refused_naming_the_input(
    texts: list[str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")) as caught:
        checked_token_lists(texts, tokenize, 4, "m")
    assert caught.value.param == "input"


def test_an_input_exactly_at_the_context_is_accepted() -> None:
    assert checked_token_lists(["a b c d"], tokenize, 4, "m") == [[1, 1, 1, 1]]

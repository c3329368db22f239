"""The token-id prompt rule shared by the inference services."""

from __future__ import annotations

import pytest
from lalo_common.errors import InvalidArgument
from lalo_common.prompt_inputs import checked_prompt_ids


def test_ids_in_the_vocabulary_pass_as_a_list() -> None:
    assert checked_prompt_ids((0, 5, 99), 100, "m") == [0, 5, 99]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "the prompt is empty"),
        ([1, 100], "token id 100 is not in m's vocabulary (ids 0 to 99)"),
        ([-1], "token id -1 is not in m's vocabulary"),
    ],
)
def test_what_no_model_can_read_is_refused_by_name(ids: list[int], message: str) -> None:
    with pytest.raises(
        InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as info:
        checked_prompt_ids(ids, 100, "m")
    assert info.value.param == "prompt"

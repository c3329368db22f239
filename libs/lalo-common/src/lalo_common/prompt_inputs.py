"""The contract's rule for a prompt given as token ids (``GenerateRequest.prompt_token_ids``),
the same in every inference service: not empty, and every id in the model's vocabulary (ids
are used as given; the caller must have tokenized for this model)."""

from __future__ import annotations

from collections.abc import Sequence

from lalo_common.errors import InvalidArgument


def checked_prompt_ids(ids: Sequence[int], vocab_size: int, model: str) -> list[int]:
    """``ids`` as a list, or InvalidArgument (``param="prompt"``) saying what is wrong."""
    if not ids:
        raise InvalidArgument("the prompt is empty", param="prompt")
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidArgument(
            f"token id {bad} is not in {model}'s vocabulary (ids 0 to {vocab_size - 1}): "
            "token-id prompts must be tokenized for this model",
            param="prompt",
        )
    return list(ids)

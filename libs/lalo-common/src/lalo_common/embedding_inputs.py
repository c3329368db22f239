"""The contract's rules for ``Embed`` requests, the same in every inference service: at least
one input, none empty, none over the model's context (refused, never cut, so a vector always
stands for the whole text), and ``dimensions`` only where the model can give that length."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lalo_common.errors import InvalidArgument


def checked_token_lists(
    texts: Sequence[str], tokenize: Callable[[str], list[int]], context_length: int, model: str
) -> list[list[int]]:
    """Each input's token ids, or InvalidArgument (``param="input"``) naming the input at fault."""
    if not texts:
        raise InvalidArgument("no input to embed", param="input")
    token_lists: list[list[int]] = []
    for index, text in enumerate(texts):
        where = f"input[{index}]" if len(texts) > 1 else "input"
        if not text.strip():
            raise InvalidArgument(f"{where} is empty: nothing to embed", param="input")
        ids = tokenize(text)
        if len(ids) > context_length:
            raise InvalidArgument(
                f"{where} has {len(ids)} tokens, over {model}'s context length of "
                f"{context_length} tokens per input. Shorten or split it.",
                param="input",
            )
        token_lists.append(ids)
    return token_lists


def fixed_length_refusal(model: str, length: int) -> InvalidArgument:
    """The 400 for ``dimensions`` other than the length of a model that cannot shorten its
    vectors (anything but a Matryoshka model)."""
    return InvalidArgument(
        f"The model '{model}' returns {length}-dimensional vectors and cannot shorten them: "
        f"send dimensions={length} or leave it out.",
        param="dimensions",
    )

"""Token ids of a GGUF model's vocabulary, for tests that steer generation with logit_bias.

The tiny random model says nothing meaningful, so tests that need a property of the output
(an early end, a closing brace) bias the tokens that produce it; this reads their ids from
the model file rather than assuming the tokenizer's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONTROL_TOKEN_TYPE = 3


@dataclass(frozen=True)
class Vocab:
    ids: dict[str, int]
    special: tuple[int, ...]

    @classmethod
    def from_gguf(cls, path: Path) -> Vocab:
        import gguf

        reader = gguf.GGUFReader(str(path))
        tokens_field = reader.fields["tokenizer.ggml.tokens"]
        types_field = reader.fields["tokenizer.ggml.token_type"]
        tokens = [bytes(tokens_field.parts[i]).decode("utf-8") for i in tokens_field.data]
        types = [int(types_field.parts[i][0]) for i in types_field.data]
        ids: dict[str, int] = {}
        for index, token in enumerate(tokens):
            ids.setdefault(token, index)
        special = tuple(i for i, kind in enumerate(types) if kind == CONTROL_TOKEN_TYPE)
        return cls(ids=ids, special=special)

    def no_eos(self) -> dict[str, int]:
        """An OpenAI ``logit_bias`` that keeps the model from ending (or emitting any other
        control token), so generation runs to ``max_tokens``."""
        return {str(token_id): -100 for token_id in self.special}

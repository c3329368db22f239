"""Per-token text and raw bytes for a Hugging Face tokenizer, cached by token id.

The contract carries each token's bytes (a token can be half a UTF-8 character) next to its
text. Byte-level BPE vocabularies (GPT-2, Llama 3, Qwen, DeepSeek) spell bytes with GPT-2's
printable map; SentencePiece vocabularies (Llama 2, Mistral) use ``▁`` for spaces and
``<0xNN>`` byte-fallback pieces.
"""

from __future__ import annotations

import re
from typing import Any


def _bytes_to_unicode() -> dict[int, str]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


BYTE_DECODER = {char: byte for byte, char in _bytes_to_unicode().items()}
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class TokenTable:
    """Maps token ids to (text, bytes); works with any tokenizer that has
    ``convert_ids_to_tokens`` and ``all_special_ids``."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        # "Ġ" is GPT-2's spelling of a leading space: present in every byte-level vocabulary.
        self._byte_level = "Ġ" in vocab or any(key.startswith("Ġ") for key in list(vocab)[:5000])
        self._special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        self._cache: dict[int, tuple[str, bytes]] = {}

    def bytes_of(self, token_id: int) -> bytes:
        return self.lookup(token_id)[1]

    def text_of(self, token_id: int) -> str:
        return self.lookup(token_id)[0]

    def lookup(self, token_id: int) -> tuple[str, bytes]:
        found = self._cache.get(token_id)
        if found is None:
            found = self._compute(token_id)
            self._cache[token_id] = found
        return found

    def _compute(self, token_id: int) -> tuple[str, bytes]:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return "", b""
        piece = str(piece)
        if token_id in self._special:
            data = piece.encode("utf-8")
        elif self._byte_level and all(char in BYTE_DECODER for char in piece):
            data = bytes(BYTE_DECODER[char] for char in piece)
        else:
            match = _BYTE_FALLBACK.match(piece)
            data = bytes([int(match.group(1), 16)]) if match else piece.replace("▁", " ").encode()
        return data.decode("utf-8", errors="replace"), data

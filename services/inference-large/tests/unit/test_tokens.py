"""Token text and bytes for byte-level and SentencePiece vocabularies."""

from __future__ import annotations

from lalo_inference_large.tokens import TokenTable


class FakeTokenizer:
    def __init__(self, vocab: dict[str, int], special: list[int]) -> None:
        self._vocab = vocab
        self._by_id = {v: k for k, v in vocab.items()}
        self.all_special_ids = special

    def get_vocab(self) -> dict[str, int]:
        return self._vocab

    def convert_ids_to_tokens(self, token_id: int) -> str | None:
        return self._by_id.get(token_id)


def test_byte_level_pieces_become_their_bytes() -> None:
    table = TokenTable(FakeTokenizer({"Ġhello": 0, "Ã©": 1, "Ã": 2, "<|im_end|>": 3}, [3]))
    assert table.lookup(0) == (" hello", b" hello")
    assert table.bytes_of(1) == "é".encode()
    assert table.bytes_of(2) == b"\xc3"  # half a character: bytes kept, text replaced
    assert table.text_of(2) == "\ufffd"
    assert table.lookup(3) == ("<|im_end|>", b"<|im_end|>")
    assert table.lookup(99) == ("", b"")


def test_sentencepiece_pieces() -> None:
    table = TokenTable(FakeTokenizer({"▁the": 0, "<0x0A>": 1, "é": 2}, []))
    assert table.lookup(0) == (" the", b" the")
    assert table.bytes_of(1) == b"\n"
    assert table.bytes_of(2) == "é".encode()

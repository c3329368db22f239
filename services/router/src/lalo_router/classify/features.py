"""Turning a prompt into the classifier's features, identically at training and run time.

Cost is flat in prompt length: the text is cut to its head and tail (characters, then
WordPiece tokens) before any per-token work. Features:

* ``dense``: mean of the prompt tokens' rows in the static MiniLM table (L2-normalised),
  followed by a few cheap lexical signals (length, digits, code and maths symbols...);
* ``sparse``: sublinear TF-IDF over WordPiece unigrams (their ids) and hashed bigrams, the
  bigrams including a start and an end marker (so "extract" as the first word and "?" as the
  last are features of their own), L2-normalised, scaled by ``sparse_weight``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from lalo_router.classify.encoder import CLS_ID, SEP_ID

UNK_ID = 100  # [UNK] in the all-MiniLM-L6-v2 (BERT uncased) vocabulary

HEAD_CHARS = 2000
TAIL_CHARS = 1000
HEAD_TOKENS = 192
TAIL_TOKENS = 64
# How much of each end to tokenize first (``Featurizer.token_ids``): the longest training
# prompts need at most 966 characters for their first 192 tokens and 352 for their last 64.
PROBE_HEAD_CHARS = 1100
PROBE_TAIL_CHARS = 440
_SPACES = (" ", "\n", "\t", "\r")
BIGRAM_BUCKETS = 1 << 15
_BIGRAM_MULT = np.uint64(1_000_003)
# Bigrams (start marker, first token) and (last token, end marker): the opening word of an
# instruction ("extract", "summarize", "write") says more than the same word inside it.
# Worth +0.008 grouped macro-F1 in cross-validation (accuracy 0.902 -> 0.910).
_START = np.array([CLS_ID], dtype=np.int64)
_END = np.array([SEP_ID], dtype=np.int64)

# A text the user supplies and refers to ("from the passage", "given a reference text",
# "based on this paragraph"): what extraction is about. Only the phrases that point at one:
# bare "following", "below" or "paragraph" also match "which of the following" and BBH's
# "within each paragraph" (1,526 training prompts against 170; grouped macro-F1 0.855 ->
# 0.863, extraction F1 0.19 -> 0.24, in cross-validation).
_CONTEXT_REF = re.compile(
    r"\b(passage|reference text|from the text|given text|following text|text below|this text|"
    r"(?:this|the|following|above|given) paragraph|(?:this|the) article)\b",
    re.IGNORECASE,
)
_EXTRACT_VERB = re.compile(
    r"\b(extract|list|identify|pull out|find all|separate them|comma[- ]separated|bullet)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MONEY_WITH_CENTS = re.compile(r"\$\s?[\d,]*\.\d|\bcents?\b", re.IGNORECASE)
_OPTIONS = re.compile(r"(\(A\)|\bA\)|\bA\.\s|options:)", re.IGNORECASE)


def _lower_case_twin(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """The same pattern without IGNORECASE, for ASCII text already lower-cased: on ASCII the
    two match exactly the same spans (Unicode case folding only adds non-ASCII matches such
    as the Kelvin sign for "k"), and the case-sensitive scan is about twice as fast."""
    return re.compile(re.sub(r"(?<!\\)[A-Z]", lambda m: m.group().lower(), pattern.pattern))


# Case-insensitive cues, as (for any text, for lower-cased ASCII text).
_CUES = tuple(
    (pattern, _lower_case_twin(pattern))
    for pattern in (_CONTEXT_REF, _EXTRACT_VERB, _OPTIONS, _MONEY_WITH_CENTS)
)
_CODE_START = re.compile(r"^\s*(def |from |import |class |function |#include|public |const |let )")
# Character classes by code point (the last row stands for every code point above 127).
_DIGIT, _MATH, _CODE, _UPPER, _NON_ASCII = range(5)
_ASCII_CLASS = np.zeros((5, 129), dtype=np.bool_)
_ASCII_CLASS[_DIGIT, ord("0") : ord("9") + 1] = True
_ASCII_CLASS[_MATH, [ord(c) for c in "+-*/=^$%<>\\"]] = True
_ASCII_CLASS[_CODE, [ord(c) for c in "{}()[];_#:`"]] = True
_ASCII_CLASS[_UPPER, ord("A") : ord("Z") + 1] = True
_ASCII_CLASS[_NON_ASCII, 128] = True

LEXICAL_NAMES = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_ratio",
    "math_ratio",
    "code_ratio",
    "upper_ratio",
    "non_ascii_ratio",
    "question_mark",
    "code_start",
    "refers_to_given_text",
    "extract_verb",
    "multiple_choice",
    # How many different numbers and how long the longest: questions that need computing
    # with several or large numbers are where small models fail (escalation APGR on MMLU
    # +0.009 in cross-validation, also with subjects held out).
    "distinct_numbers",
    "longest_number",
    # An amount in cents ("$12.50", "75 cents") outside multiple choice. In RouteLLM's GSM8K
    # outcomes the large model is graded right on 62 % of such prompts against 89 % of the
    # others (81 of 931 prompts; the small model 70 % / 64 %): escalating them gains nothing.
    # Read by the maths escalation column only (see MODEL_CARD.md).
    "money_with_cents",
)


# Text the classifier cannot read, whatever its probabilities say (a confident label for
# binary noise means nothing): the model labels it ``other``. Each limit is above the largest
# value among the 13,283 training prompts (in brackets), so no training prompt reaches one.
UNKNOWN_TOKEN_LIMIT = 0.25  # share of [UNK] tokens (0.14, a mojibake prompt): emoji, binary
NON_ASCII_LIMIT = 0.30  # share of non-ASCII characters (0.19): a script other than Latin
WORD_PIECE_LIMIT = 0.70  # share of "##" pieces among 6+ tokens (0.67): key mashing, base64
WORD_PIECE_MIN_TOKENS = 6  # "merci beaucoup" is 60 % pieces: short text says too little


def clean_text(text: object) -> str:
    """Any input as a valid Unicode string (lone surrogates and NULs replaced)."""
    if not isinstance(text, str):
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", "replace")
        else:
            text = "" if text is None else str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    return text.replace("\x00", " ")


def head_tail(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


def lexical_features(full_text: str, text: str) -> NDArray[np.float32]:
    """Cheap signals over the (already truncated) text; the length ones use the full text."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n = max(codes.size, 1)
    counts = np.count_nonzero(_ASCII_CLASS[:, np.minimum(codes, 128)], axis=1)
    numbers = _NUMBER.findall(text)
    if text.isascii():
        lowered = text.lower()
        context_ref, extract_verb, options, money = (
            fast.search(lowered) is not None for _, fast in _CUES
        )
    else:
        context_ref, extract_verb, options, money = (
            general.search(text) is not None for general, _ in _CUES
        )
    values = (
        np.log1p(len(full_text)) / 10.0,
        np.log1p(len(text.split()) * max(len(full_text) / max(len(text), 1), 1.0)) / 8.0,
        np.log1p(full_text.count("\n")) / 5.0,
        counts[_DIGIT] / n,
        counts[_MATH] / n,
        counts[_CODE] / n,
        counts[_UPPER] / n,
        counts[_NON_ASCII] / n,
        1.0 if "?" in text else 0.0,
        1.0 if _CODE_START.search(text) else 0.0,
        1.0 if context_ref else 0.0,
        1.0 if extract_verb else 0.0,
        1.0 if options else 0.0,
        min(len(set(numbers)), 50) / 10.0,
        min(max((len(x) for x in numbers), default=0), 20) / 10.0,
        1.0 if money and not options else 0.0,
    )
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class Featurizer:
    """Everything needed to featurise text: tokenizer, static table, IDF."""

    tokenizer: Tokenizer
    table: NDArray[np.float32]  # (vocab, dim)
    idf: NDArray[np.float32]  # (vocab + BIGRAM_BUCKETS,)
    sparse_weight: float

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    @property
    def dense_dim(self) -> int:
        return int(self.table.shape[1]) + len(LEXICAL_NAMES)

    @property
    def sparse_dim(self) -> int:
        return self.vocab_size + BIGRAM_BUCKETS

    @cached_property
    def word_pieces(self) -> NDArray[np.bool_]:
        pieces = np.zeros(self.vocab_size, dtype=np.bool_)
        for token, index in self.tokenizer.get_vocab().items():
            if token.startswith("##") and index < self.vocab_size:
                pieces[index] = True
        return pieces

    def unreadable(self, dense: NDArray[np.float32], ids: NDArray[np.int64]) -> bool:
        """Whether ``features_and_ids`` found nothing the model can read (see the limits)."""
        if ids.size == 0:
            return True
        non_ascii = dense[self.table.shape[1] + LEXICAL_NAMES.index("non_ascii_ratio")]
        return bool(
            non_ascii > NON_ASCII_LIMIT
            or np.count_nonzero(ids == UNK_ID) > UNKNOWN_TOKEN_LIMIT * ids.size
            or (
                ids.size >= WORD_PIECE_MIN_TOKENS
                and np.count_nonzero(self.word_pieces[ids]) > WORD_PIECE_LIMIT * ids.size
            )
        )

    def token_ids(self, text: str) -> NDArray[np.int64]:
        """The first HEAD_TOKENS and last TAIL_TOKENS WordPiece ids of ``text`` (all of them
        when there are no more than both)."""
        probed = self._probe_head_and_tail(text)
        if probed is not None:
            return probed
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) > HEAD_TOKENS + TAIL_TOKENS:
            ids = ids[:HEAD_TOKENS] + ids[-TAIL_TOKENS:]
        return np.asarray(ids, dtype=np.int64)

    def _probe_head_and_tail(self, text: str) -> NDArray[np.int64] | None:
        """``token_ids`` of a long text from its two ends only, or None to tokenize it whole.

        Tokenizing costs ~0.3 µs a character, and a 3,000-character head and tail holds
        three times the 256 tokens kept. BERT's normaliser works character by character and
        its pre-tokenizer splits at whitespace, so the tokens of a prefix (or suffix) cut at
        whitespace are exactly the first (last) tokens of the whole text; when the prefix
        has HEAD_TOKENS of them, the suffix TAIL_TOKENS, and the two do not overlap, they are
        the answer."""
        if len(text) <= PROBE_HEAD_CHARS + PROBE_TAIL_CHARS:
            return None
        head_end = max(text.rfind(space, 0, PROBE_HEAD_CHARS) for space in _SPACES)
        tail_starts = [text.find(space, len(text) - PROBE_TAIL_CHARS) for space in _SPACES]
        tail_start = min((i for i in tail_starts if i >= 0), default=-1)
        if head_end <= 0 or tail_start < 0:
            return None
        head = self.tokenizer.encode(text[:head_end], add_special_tokens=False).ids
        if len(head) < HEAD_TOKENS:
            return None
        tail = self.tokenizer.encode(text[tail_start:], add_special_tokens=False).ids
        if len(tail) < TAIL_TOKENS:
            return None
        return np.asarray(head[:HEAD_TOKENS] + tail[len(tail) - TAIL_TOKENS :], dtype=np.int64)

    def sparse_terms(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Column indices and TF-IDF values (unigram ids, then hashed bigrams), L2-normalised."""
        if ids.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        marked = np.concatenate([_START, ids, _END]).astype(np.uint64)
        bigrams = ((marked[:-1] * _BIGRAM_MULT + marked[1:]) % np.uint64(BIGRAM_BUCKETS)).astype(
            np.int64
        ) + self.vocab_size
        terms, counts = np.unique(np.concatenate([ids, bigrams]), return_counts=True)
        values = (np.float32(1.0) + np.log(counts.astype(np.float32))) * self.idf[terms]
        norm = np.float32(np.sqrt(np.dot(values, values)))
        if norm > 0:
            values = values / norm
        return terms, (values * np.float32(self.sparse_weight)).astype(np.float32)

    def features(
        self, text: str
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
        """(dense vector, sparse indices, sparse values) for one cleaned text."""
        dense, terms, values, _ = self.features_and_ids(text)
        return dense, terms, values

    def features_and_ids(
        self, text: str
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
        """``features`` and the token ids they were computed from (head and tail, cut)."""
        short = head_tail(text)
        ids = self.token_ids(short)
        dense = np.zeros(self.dense_dim, dtype=np.float32)
        if ids.size:
            mean = self.table[ids].mean(0)
            norm = np.float32(np.sqrt(np.dot(mean, mean)))
            if norm > 0:
                dense[: self.table.shape[1]] = mean / norm
        dense[self.table.shape[1] :] = lexical_features(text, short)
        terms, values = self.sparse_terms(ids)
        return dense, terms, values, ids


def load_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer

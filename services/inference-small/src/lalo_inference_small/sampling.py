"""Sampling parameters and the llama.cpp sampler chain built from them (one per sequence)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
from lalo_common.errors import InvalidArgument
from llama_cpp import llama_grammar

MAX_STOP_SEQUENCES = 16


@dataclass(frozen=True)
class SamplingConfig:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0
    grammar: str | None = None
    # Send the prompt back first (text completions' echo); then max_tokens may be 0.
    echo: bool = False

    def validate(self, n_vocab: int) -> None:
        if self.max_tokens is not None and self.max_tokens < (0 if self.echo else 1):
            raise InvalidArgument(
                "max_tokens must be at least 1 (0 only with echo)", param="max_tokens"
            )
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidArgument("temperature must be between 0 and 2", param="temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidArgument("top_p must be in (0, 1]", param="top_p")
        if self.top_k < 0:
            raise InvalidArgument("top_k must be 0 (disabled) or positive", param="top_k")
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidArgument("min_p must be between 0 and 1", param="min_p")
        for name, value in (
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ):
            if not -2.0 <= value <= 2.0:
                raise InvalidArgument(f"{name} must be between -2 and 2", param=name)
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise InvalidArgument(
                f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed", param="stop"
            )
        if any(not s for s in self.stop):
            raise InvalidArgument("stop sequences must not be empty", param="stop")
        for token, bias in self.logit_bias.items():
            if not 0 <= token < n_vocab:
                raise InvalidArgument(
                    f"logit_bias names token {token}, outside the vocabulary (0..{n_vocab - 1})",
                    param="logit_bias",
                )
            if not -100.0 <= bias <= 100.0:
                raise InvalidArgument(
                    "logit_bias values must be between -100 and 100", param="logit_bias"
                )
        if not 0 <= self.top_logprobs <= 20:
            raise InvalidArgument("top_logprobs must be between 0 and 20", param="top_logprobs")


# The converter in llama-cpp-python lets raw control characters into JSON strings; JSON
# forbids them, so the string-character rule is tightened after conversion.
_CHAR_RULE = re.compile(r"^char ::= .*$", re.MULTILINE)
_STRICT_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def grammar_for_json_schema(schema_text: str) -> str:
    try:
        schema = json.loads(schema_text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"response_format json_schema is not valid JSON: {exc.msg}", param="response_format"
        ) from exc
    if not isinstance(schema, dict):
        raise InvalidArgument(
            "response_format json_schema must be a JSON object", param="response_format"
        )
    try:
        grammar = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare exceptions on unsupported schemas
        raise InvalidArgument(f"unsupported JSON schema: {exc}", param="response_format") from exc
    return _CHAR_RULE.sub(lambda _match: _STRICT_CHAR_RULE, grammar)


def grammar_for_json_object() -> str:
    # Its string rule already excludes control characters.
    return str(llama_grammar.JSON_GBNF)


def check_grammar(vocab: Any, grammar: str) -> None:
    """Raises InvalidArgument when llama.cpp cannot parse ``grammar`` (rule ``root``).

    Checked when a request is prepared, so a bad grammar is the caller's INVALID_ARGUMENT
    status rather than an in-band failure from the engine thread.
    """
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise InvalidArgument(
            "the grammar could not be parsed (it needs a 'root' rule)", param="response_format"
        )
    llama_cpp.llama_sampler_free(sampler)


def _resolve_seed(seed: int | None) -> int:
    if seed is None:
        return int.from_bytes(os.urandom(4), "little") & 0xFFFFFFFE
    # llama.cpp takes a uint32; LLAMA_DEFAULT_SEED (0xFFFFFFFF) would mean "random".
    return (seed & 0xFFFFFFFF) % 0xFFFFFFFF


class SamplerChain:
    """Owns a llama.cpp sampler chain; free() must be called (the engine does)."""

    def __init__(
        self, config: SamplingConfig, vocab: Any, n_vocab: int, penalty_window: int
    ) -> None:
        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = llama_cpp.llama_sampler_chain_init(params)
        if not chain:
            raise RuntimeError("llama.cpp could not create a sampler chain")
        self.chain = chain
        self._keepalive: list[Any] = []
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if config.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(config.logit_bias))()
            for i, (token, bias) in enumerate(sorted(config.logit_bias.items())):
                biases[i].token = token  # type: ignore[assignment]
                biases[i].bias = bias
            self._keepalive.append(biases)
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(config.logit_bias), biases))
        if config.presence_penalty or config.frequency_penalty:
            # The window covers every token the request may generate, so penalties apply to
            # everything generated so far, as OpenAI's do (llama.cpp clamps a negative window
            # to 0, which disables the sampler). Repeat penalty 1.0 is off.
            add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    max(1, penalty_window),
                    1.0,
                    config.frequency_penalty,
                    config.presence_penalty,
                )
            )
        if config.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, config.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise InvalidArgument("the grammar could not be parsed", param="response_format")
            add(grammar)
        if config.temperature == 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            if config.top_k > 0:
                add(llama_cpp.llama_sampler_init_top_k(config.top_k))
            if config.top_p < 1.0:
                add(llama_cpp.llama_sampler_init_top_p(config.top_p, 1))
            if config.min_p > 0.0:
                add(llama_cpp.llama_sampler_init_min_p(config.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(config.temperature))
            add(llama_cpp.llama_sampler_init_dist(_resolve_seed(config.seed)))

    def sample(self, ctx: Any, batch_index: int) -> int:
        # llama_sampler_sample applies the chain and accepts the token (grammar advances).
        return int(llama_cpp.llama_sampler_sample(self.chain, ctx, batch_index))

    def free(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None

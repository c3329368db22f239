"""Checks and maps the contract's sampling fields onto vLLM's SamplingParams keywords.

Pure functions (no vLLM import), so the mapping is unit-tested in the default install; the
vLLM backend turns the keywords into ``SamplingParams`` and ``StructuredOutputsParams``.
"""

from __future__ import annotations

import math
from typing import Any

from lalo_common.errors import InvalidArgument

from lalo_inference_large.domain import SamplingOptions

# OpenAI's documented ranges; vLLM accepts wider ones but callers come through the
# OpenAI-compatible gateway.
PENALTY_RANGE = (-2.0, 2.0)
LOGIT_BIAS_RANGE = (-100.0, 100.0)


def _check_finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value}", param=name)


def validate(options: SamplingOptions, *, vocab_size: int, max_logprobs: int) -> None:
    """Refuse values vLLM would reject later, with messages that name the field."""
    for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty"):
        _check_finite(name, getattr(options, name))
    if options.temperature is not None and options.temperature < 0:
        raise InvalidArgument(
            f"temperature must be >= 0, got {options.temperature}", param="temperature"
        )
    if options.top_p is not None and not 0 < options.top_p <= 1:
        raise InvalidArgument(f"top_p must be in (0, 1], got {options.top_p}", param="top_p")
    if options.min_p is not None and not 0 <= options.min_p <= 1:
        raise InvalidArgument(f"min_p must be in [0, 1], got {options.min_p}", param="min_p")
    if options.top_k is not None and options.top_k < 0:
        raise InvalidArgument(
            f"top_k must be >= 0 (0 disables it), got {options.top_k}", param="top_k"
        )
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(options, name)
        if not PENALTY_RANGE[0] <= value <= PENALTY_RANGE[1]:
            raise InvalidArgument(f"{name} must be in [-2, 2], got {value}", param=name)
    if options.max_tokens is not None and options.max_tokens < (0 if options.echo else 1):
        raise InvalidArgument(
            f"max_tokens must be >= 1 (0 only with echo), got {options.max_tokens}",
            param="max_tokens",
        )
    if options.top_logprobs and not options.logprobs:
        raise InvalidArgument("top_logprobs needs logprobs to be true", param="top_logprobs")
    if options.top_logprobs > max_logprobs:
        raise InvalidArgument(
            f"top_logprobs is {options.top_logprobs}; this server returns at most {max_logprobs}",
            param="top_logprobs",
        )
    for token_id, bias in options.logit_bias.items():
        if not 0 <= token_id < vocab_size:
            raise InvalidArgument(
                f"logit_bias names token {token_id}, outside the vocabulary (0..{vocab_size - 1})",
                param="logit_bias",
            )
        if not math.isfinite(bias) or not LOGIT_BIAS_RANGE[0] <= bias <= LOGIT_BIAS_RANGE[1]:
            raise InvalidArgument(
                f"logit_bias for token {token_id} must be in [-100, 100]", param="logit_bias"
            )
    if any(not stop for stop in options.stop):
        raise InvalidArgument("stop strings must not be empty", param="stop")


def sampling_kwargs(
    options: SamplingOptions, *, max_tokens: int, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` (without structured outputs).

    ``defaults`` are the model's own generation defaults (its generation_config), used for
    fields the caller left unset, as vLLM's OpenAI server does.
    """
    defaults = defaults or {}
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": max_tokens,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
        "skip_special_tokens": True,
    }
    for name in ("temperature", "top_p", "top_k", "min_p"):
        value = getattr(options, name)
        if value is None:
            value = defaults.get(name)
        if value is not None:
            kwargs[name] = value
    if "repetition_penalty" in defaults:
        kwargs["repetition_penalty"] = defaults["repetition_penalty"]
    if options.seed is not None:
        kwargs["seed"] = options.seed
    if options.stop:
        kwargs["stop"] = list(options.stop)
    if options.logit_bias:
        kwargs["logit_bias"] = dict(options.logit_bias)
    if options.logprobs:
        # vLLM returns the sampled token's logprob plus the top N alternatives.
        kwargs["logprobs"] = options.top_logprobs
    return kwargs


def structured_output_kwargs(options: SamplingOptions) -> dict[str, Any] | None:
    """Keyword arguments for ``vllm.sampling_params.StructuredOutputsParams``, or None."""
    fmt = options.response_format
    if fmt.kind == "json_schema":
        return {"json": fmt.json_schema}
    if fmt.kind == "json_object":
        return {"json_object": True}
    if fmt.kind == "grammar":
        return {"grammar": fmt.grammar}
    return None


def completion_budget(
    prompt_tokens: int, requested: int | None, *, context_length: int, model: str
) -> int:
    """Tokens the completion may use; refuses a prompt that leaves no room to answer.

    A requested max_tokens beyond the context is clamped to what is left (the stream then
    ends with finish reason "length"), as llama.cpp does when its context fills.
    """
    if prompt_tokens >= context_length:
        raise InvalidArgument(
            f"the prompt is {prompt_tokens} tokens but model {model!r} has a context of "
            f"{context_length} tokens (max_model_len), prompt and completion together"
        )
    room = context_length - prompt_tokens
    return room if requested is None else min(requested, room)

"""Mapping and checking of the contract's sampling fields (no engine needed)."""

from __future__ import annotations

import pytest
from lalo_common.errors import InvalidArgument
from lalo_inference_large import sampling
from lalo_inference_large.domain import ResponseFormat, SamplingOptions


def _validate(**fields: object) -> None:
    sampling.validate(SamplingOptions(**fields), vocab_size=100, max_logprobs=20)  # type: ignore[arg-type]


def test_every_field_is_mapped() -> None:
    options = SamplingOptions(
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=11,
        stop=("END",),
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={3: -100.0},
        logprobs=True,
        top_logprobs=4,
    )
    kwargs = sampling.sampling_kwargs(options, max_tokens=7)
    assert kwargs == {
        "n": 1,
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 11,
        "stop": ["END"],
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {3: -100.0},
        "logprobs": 4,
        "skip_special_tokens": True,
    }


def test_unset_fields_take_the_model_defaults() -> None:
    defaults = {"temperature": 0.6, "top_p": 0.95, "repetition_penalty": 1.1}
    kwargs = sampling.sampling_kwargs(SamplingOptions(top_p=0.5), max_tokens=3, defaults=defaults)
    assert kwargs["temperature"] == 0.6
    assert kwargs["top_p"] == 0.5
    assert kwargs["repetition_penalty"] == 1.1
    assert "seed" not in kwargs
    assert "logprobs" not in kwargs


def test_logprobs_without_alternatives_asks_for_the_sampled_token_only() -> None:
    kwargs = sampling.sampling_kwargs(SamplingOptions(logprobs=True), max_tokens=3)
    assert kwargs["logprobs"] == 0


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (ResponseFormat("text"), None),
        (ResponseFormat("json_object"), {"json_object": True}),
        (
            ResponseFormat("json_schema", json_schema={"type": "object"}),
            {"json": {"type": "object"}},
        ),
        (ResponseFormat("grammar", grammar='root ::= "a"'), {"grammar": 'root ::= "a"'}),
    ],
)
def test_structured_outputs(fmt: ResponseFormat, expected: object) -> None:
    assert sampling.structured_output_kwargs(SamplingOptions(response_format=fmt)) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_logprobs": 2}, "top_logprobs needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "at most 20"),
        ({"logit_bias": {100: 1.0}}, "outside the vocabulary"),
        ({"logit_bias": {1: 101.0}}, "[-100, 100]"),
        ({"stop": ("",)}, "stop strings"),
    ],
)
def test_bad_values_are_refused_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        _validate(**fields)


def test_good_values_pass() -> None:
    _validate(temperature=0.0, top_p=1.0, min_p=0.0, top_k=0, logprobs=True, top_logprobs=20)
    _validate(max_tokens=0, echo=True)  # an echo may score the prompt alone


def test_prompt_over_the_context_names_the_limit() -> None:
    with pytest.raises(InvalidArgument, match=r"context of 512 tokens \(max_model_len\)"):
        sampling.completion_budget(512, None, context_length=512, model="m")


def test_completion_budget_is_clamped_to_the_room_left() -> None:
    assert sampling.completion_budget(500, None, context_length=512, model="m") == 12
    assert sampling.completion_budget(500, 100, context_length=512, model="m") == 12
    assert sampling.completion_budget(10, 100, context_length=512, model="m") == 100

"""Sampling parameters: validation, JSON-schema grammars and the wire conversion."""

from __future__ import annotations

import json
import re

import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import InvalidArgument
from lalo_inference_small.convert import event_to_pb, sampling_from_pb, turns_from_pb
from lalo_inference_small.engine import Failed, Finished, TextDelta, TokenOut, TopToken
from lalo_inference_small.sampling import (
    SamplingConfig,
    _resolve_seed,
    grammar_for_json_object,
    grammar_for_json_schema,
)

N_VOCAB = 1000


def test_defaults_are_valid() -> None:
    SamplingConfig().validate(N_VOCAB)
    SamplingConfig(
        max_tokens=1,
        temperature=0.0,
        top_p=1.0,
        top_k=40,
        min_p=0.05,
        stop=("\n",),
        presence_penalty=-2.0,
        frequency_penalty=2.0,
        logit_bias={0: -100.0, N_VOCAB - 1: 100.0},
        logprobs=True,
        top_logprobs=20,
    ).validate(N_VOCAB)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (SamplingConfig(max_tokens=0), "max_tokens"),
        (SamplingConfig(temperature=5.0), "temperature"),
        (SamplingConfig(temperature=-0.1), "temperature"),
        (SamplingConfig(top_p=0.0), "top_p"),
        (SamplingConfig(top_p=1.5), "top_p"),
        (SamplingConfig(top_k=-1), "top_k"),
        (SamplingConfig(min_p=1.5), "min_p"),
        (SamplingConfig(presence_penalty=2.5), "presence_penalty"),
        (SamplingConfig(frequency_penalty=-3.0), "frequency_penalty"),
        (SamplingConfig(stop=tuple(str(i) for i in range(17))), "stop sequences"),
        (SamplingConfig(stop=("",)), "must not be empty"),
        (SamplingConfig(logit_bias={N_VOCAB: 1.0}), "outside the vocabulary"),
        (SamplingConfig(logit_bias={-1: 1.0}), "outside the vocabulary"),
        (SamplingConfig(logit_bias={5: 101.0}), "between -100 and 100"),
        (SamplingConfig(top_logprobs=21), "top_logprobs"),
    ],
)
def test_invalid_values_are_rejected(config: SamplingConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        config.validate(N_VOCAB)


def test_seed_maps_into_llama_cpp_range() -> None:
    assert _resolve_seed(42) == 42
    # 0xFFFFFFFF means "random" to llama.cpp: a caller's seed must never become it.
    assert _resolve_seed(0xFFFFFFFF) != 0xFFFFFFFF
    assert _resolve_seed(-1) != 0xFFFFFFFF
    assert _resolve_seed(2**40 + 7) == _resolve_seed(2**40 + 7)
    assert 0 <= _resolve_seed(None) < 0xFFFFFFFF


def test_json_schema_grammar_bounds_and_forbids_control_characters() -> None:
    schema = {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green"]},
            "name": {"type": "string", "maxLength": 4},
        },
        "required": ["color", "name"],
        "additionalProperties": False,
    }
    grammar = grammar_for_json_schema(json.dumps(schema))
    assert re.search(r"^root ::=", grammar, re.MULTILINE)
    assert '"\\"red\\""' in grammar
    (char_rule,) = re.findall(r"^char ::= .*$", grammar, re.MULTILINE)
    # Raw control characters are not valid inside JSON strings.
    assert "\\x00-\\x1F" in char_rule
    assert "\\x7F" in char_rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"string"', "must be a JSON object"),
    ],
)
def test_json_schema_grammar_rejects_bad_schemas(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        grammar_for_json_schema(text)


def test_json_object_grammar_is_a_gbnf_root() -> None:
    assert re.search(r"^root\s*::=", grammar_for_json_object(), re.MULTILINE)


def test_sampling_from_pb_defaults() -> None:
    config = sampling_from_pb(pb.SamplingParams())
    assert config == SamplingConfig()


def test_sampling_from_pb_copies_every_field() -> None:
    params = pb.SamplingParams(
        max_tokens=12,
        temperature=0.0,
        top_p=0.5,
        top_k=7,
        min_p=0.1,
        seed=99,
        stop=["a", "bc"],
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={3: 5.0},
        top_logprobs=2,
    )
    config = sampling_from_pb(params)
    assert config.max_tokens == 12
    assert config.temperature == 0.0  # an explicit zero is not the default
    assert config.top_p == pytest.approx(0.5)
    assert config.top_k == 7
    assert config.min_p == pytest.approx(0.1)
    assert config.seed == 99
    assert config.stop == ("a", "bc")
    assert config.presence_penalty == pytest.approx(0.5)
    assert config.frequency_penalty == pytest.approx(-0.5)
    assert config.logit_bias == {3: 5.0}
    assert config.logprobs  # top_logprobs implies logprobs
    assert config.top_logprobs == 2
    assert config.grammar is None


def test_sampling_from_pb_response_formats() -> None:
    fmt = pb.ResponseFormat
    json_object = sampling_from_pb(pb.SamplingParams(response_format=fmt(type=fmt.JSON_OBJECT)))
    assert json_object.grammar == grammar_for_json_object()
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}})
    with_schema = sampling_from_pb(
        pb.SamplingParams(response_format=fmt(type=fmt.JSON_SCHEMA, json_schema=schema))
    )
    assert with_schema.grammar == grammar_for_json_schema(schema)
    grammar = sampling_from_pb(
        pb.SamplingParams(response_format=fmt(type=fmt.GRAMMAR, grammar='root ::= "x"'))
    )
    assert grammar.grammar == 'root ::= "x"'
    text = sampling_from_pb(pb.SamplingParams(response_format=fmt(type=fmt.TEXT)))
    assert text.grammar is None


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        (pb.ResponseFormat(type=pb.ResponseFormat.JSON_SCHEMA), "needs a schema"),
        (pb.ResponseFormat(type=pb.ResponseFormat.GRAMMAR, grammar="  "), "grammar is empty"),
        (
            pb.ResponseFormat(type=pb.ResponseFormat.JSON_SCHEMA, json_schema="[]"),
            "JSON object",
        ),
    ],
)
def test_sampling_from_pb_bad_formats(response_format: pb.ResponseFormat, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        sampling_from_pb(pb.SamplingParams(response_format=response_format))


def test_turns_from_pb_converts_messages_and_their_calls() -> None:
    chat = pb.ChatInput(
        messages=[
            pb.ChatMessage(role="system", content="be brief"),
            pb.ChatMessage(
                role="assistant",
                tool_calls=[pb.ToolCall(id="t1", name="calc", arguments_json='{"a": 1}')],
            ),
            pb.ChatMessage(role="tool", content="42", name="calc", tool_call_id="t1"),
        ],
    )
    turns = turns_from_pb(chat)
    assert [(t.role, t.content, t.name, t.tool_call_id) for t in turns] == [
        ("system", "be brief", "", ""),
        ("assistant", "", "", ""),
        ("tool", "42", "calc", "t1"),
    ]
    assert turns[1].tool_calls == (("t1", "calc", '{"a": 1}'),)


def test_event_to_pb() -> None:
    token = TokenOut(5, "hi", -0.5, b"hi", (TopToken(5, "hi", -0.5, b"hi"),))
    chunk = event_to_pb(TextDelta("hi", (token,)), "m").chunk
    assert chunk.text == "hi"
    assert chunk.tokens[0].token_id == 5
    assert chunk.tokens[0].token_bytes == b"hi"
    assert chunk.tokens[0].logprob == pytest.approx(-0.5)
    assert chunk.tokens[0].top_logprobs[0].token == "hi"
    complete = event_to_pb(Finished("length", 3, 4), "m").complete
    assert complete.finish_reason == pb.FINISH_REASON_LENGTH
    assert (complete.usage.prompt_tokens, complete.usage.completion_tokens) == (3, 4)
    assert complete.model == "m"
    error = event_to_pb(Failed("boom"), "m").error
    assert (error.code, error.message) == (13, "boom")

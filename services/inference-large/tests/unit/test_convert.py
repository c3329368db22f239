"""Contract messages ↔ domain types."""

from __future__ import annotations

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import InvalidArgument
from lalo_inference_large import convert
from lalo_inference_large.domain import Chunk, Complete, StreamError, TokenInfo, TopLogprob


def test_chat_request_with_every_sampling_field() -> None:
    message = pb.GenerateRequest(
        request_id="r1",
        model="m",
        chat=pb.ChatInput(
            messages=[pb.ChatMessage(role="user", content="hi", name="ann")],
            tools=[
                pb.ToolDefinition(name="f", description="d", parameters_json='{"type": "object"}')
            ],
        ),
        sampling=pb.SamplingParams(
            max_tokens=5,
            temperature=0.0,
            seed=-3,
            stop=["x"],
            logit_bias={4: -100.0},
            logprobs=True,
            top_logprobs=2,
            response_format=pb.ResponseFormat(
                type=pb.ResponseFormat.JSON_SCHEMA, json_schema='{"type": "object"}'
            ),
        ),
    )
    request = convert.generation_request(message)
    assert request.is_chat
    assert request.messages[0].name == "ann"
    assert request.tools[0].parameters == {"type": "object"}
    options = request.sampling
    assert options.max_tokens == 5
    assert options.temperature == 0.0  # explicitly zero is not "unset"
    assert options.top_p is None
    assert options.seed == -3
    assert options.logit_bias == {4: -100.0}
    assert options.response_format.kind == "json_schema"
    assert options.response_format.json_schema == {"type": "object"}


def test_request_id_falls_back_to_the_metadata_one() -> None:
    request = convert.generation_request(pb.GenerateRequest(prompt="p"), "from-metadata")
    assert request.request_id == "from-metadata"
    assert not request.is_chat


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (pb.GenerateRequest(), "needs an input"),
        (
            pb.GenerateRequest(
                prompt="p",
                sampling=pb.SamplingParams(
                    response_format=pb.ResponseFormat(
                        type=pb.ResponseFormat.JSON_SCHEMA, json_schema="{nope"
                    )
                ),
            ),
            "json_schema is not valid JSON",
        ),
        (
            pb.GenerateRequest(
                prompt="p",
                sampling=pb.SamplingParams(
                    response_format=pb.ResponseFormat(type=pb.ResponseFormat.JSON_SCHEMA)
                ),
            ),
            "needs json_schema",
        ),
        (
            pb.GenerateRequest(
                prompt="p",
                sampling=pb.SamplingParams(
                    response_format=pb.ResponseFormat(type=pb.ResponseFormat.GRAMMAR)
                ),
            ),
            "needs a grammar",
        ),
        (
            pb.GenerateRequest(
                chat=pb.ChatInput(tools=[pb.ToolDefinition(name="f", parameters_json="[1]")])
            ),
            "parameters of tool 'f' must be a JSON object",
        ),
    ],
)
def test_malformed_requests_are_invalid_arguments(message: pb.GenerateRequest, error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        convert.generation_request(message)


def test_echo_is_for_raw_prompts() -> None:
    echoed = convert.generation_request(
        pb.GenerateRequest(prompt="p", sampling=pb.SamplingParams(echo=True, max_tokens=0))
    )
    assert (echoed.sampling.echo, echoed.sampling.max_tokens) == (True, 0)
    with pytest.raises(InvalidArgument, match="not chat messages") as info:
        convert.generation_request(
            pb.GenerateRequest(
                chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content="x")]),
                sampling=pb.SamplingParams(echo=True),
            )
        )
    assert info.value.param == "echo"


def test_an_echoed_prompt_chunk_keeps_its_mark_and_a_missing_logprob() -> None:
    message = convert.event_message(
        Chunk(
            "ab",
            (TokenInfo(1, "a", None, b"a"), TokenInfo(2, "b", -1.5, b"b")),
            echo=True,
        )
    )
    assert message.chunk.echo
    first, second = message.chunk.tokens
    assert not first.HasField("logprob")
    assert second.logprob == pytest.approx(-1.5)


def test_events_to_messages() -> None:
    token = TokenInfo(5, "a", -0.5, b"a", (TopLogprob(6, "b", -1.0, b"b"),))
    chunk = convert.event_message(Chunk("a", (token,)))
    assert chunk.chunk.text == "a"
    assert chunk.chunk.tokens[0].top_logprobs[0].token_id == 6
    done = convert.event_message(Complete("length", 3, 4, "m"))
    assert done.complete.finish_reason == pb.FINISH_REASON_LENGTH
    assert done.complete.usage.completion_tokens == 4
    error = convert.event_message(StreamError(grpc.StatusCode.UNAVAILABLE, "gone"))
    assert error.error.code == grpc.StatusCode.UNAVAILABLE.value[0]

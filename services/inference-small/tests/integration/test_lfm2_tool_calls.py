"""Tool calling with an LFM2-style model (Liquid's Nanos): its call markers are control
tokens of its vocabulary and its chat template renders only each message's content. The
tiny model here has both (write_model(tools="lfm2")); reading LFM2's Python call syntax is
unit-tested in lalo_common."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.tool_calls import HERMES, LFM2
from lalo_inference_small.llama_model import ChatTurn, LlamaModel
from lalo_testing.tiny_model import write_model

from .conftest import MODEL_ID, Served

WEATHER = pb.ToolDefinition(
    name="get_weather",
    description="The weather in a city now",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        }
    ),
)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("models") / "tiny-lfm2.gguf", "tiny", tools="lfm2")


@pytest.fixture(scope="module")
def engine_options() -> dict[str, Any]:
    return {"n_ctx": 2048, "parallel": 2, "threads": 1, "n_batch": 512}


def test_the_call_format_is_told_by_the_vocabulary(served: Served, tmp_path: Path) -> None:
    assert served.engine.model.call_format is LFM2
    hermes = LlamaModel(write_model(tmp_path / "hermes.gguf", "tiny", tools="hermes"))
    try:
        # "<tool_call>" is ordinary text to that tokenizer, as to Qwen's.
        assert hermes.call_format is HERMES
    finally:
        hermes.close()


def test_the_call_markers_come_out_as_text_and_other_control_tokens_do_not(
    served: Served,
) -> None:
    model = served.engine.model
    for marker in ("<|tool_call_start|>", "<|tool_call_end|>"):
        (token,) = model.tokenize(marker, add_special=False, parse_special=True)
        assert model.token_text(token) == marker
    (listed,) = model.tokenize("<|tool_list_start|>", add_special=False, parse_special=True)
    assert model.token_text(listed) == ""


def test_earlier_calls_are_written_into_the_content_the_template_shows(served: Served) -> None:
    model = served.engine.model
    assert not model.renders_tool_calls
    turns = [
        ChatTurn("user", "Weather in Paris?"),
        ChatTurn(
            "assistant",
            "Checking.",
            tool_calls=(("call_1", "get_weather", '{"city": "Paris", "metric": true}'),),
        ),
        ChatTurn("tool", "18 C and sunny", tool_call_id="call_1"),
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    text = model.render_chat(turns, tools)
    assert (
        "<|im_start|>assistant\n"
        '<|tool_call_start|>[get_weather(city="Paris", metric=True)]<|tool_call_end|>'
        "Checking.<|im_end|>"
    ) in text
    assert "<|tool_response_start|>18 C and sunny<|tool_response_end|>" in text
    assert 'List of tools: <|tool_list_start|>[{"type": "function"' in text


async def test_history_calls_reach_the_model_over_grpc(served: Served) -> None:
    def chat(*extra: pb.ChatMessage) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            model=MODEL_ID,
            chat=pb.ChatInput(
                messages=[pb.ChatMessage(role="user", content="Weather in Paris?"), *extra],
                tools=[WEATHER],
            ),
            sampling=pb.SamplingParams(max_tokens=1, temperature=0.0),
        )

    call = pb.ToolCall(id="call_1", name="get_weather", arguments_json='{"city": "Paris"}')
    plain = await served.generate(chat(pb.ChatMessage(role="assistant", content="")))
    with_call = await served.generate(
        chat(pb.ChatMessage(role="assistant", content="", tool_calls=[call]))
    )
    assert plain.complete is not None
    assert with_call.complete is not None
    # The call's text is in the prompt: without it the model would not know what it asked.
    assert with_call.complete.usage.prompt_tokens > plain.complete.usage.prompt_tokens + 5


async def test_a_forced_call_works_whatever_the_format(served: Served) -> None:
    result = await served.generate(
        pb.GenerateRequest(
            model=MODEL_ID,
            chat=pb.ChatInput(
                messages=[pb.ChatMessage(role="user", content="Weather in Paris?")],
                tools=[WEATHER],
                tool_choice=pb.ToolChoice(mode=pb.ToolChoice.MODE_REQUIRED),
            ),
            sampling=pb.SamplingParams(max_tokens=200, temperature=0.0),
        )
    )
    calls = [call for chunk in result.chunks for call in chunk.tool_calls]
    assert [c.name for c in calls] == ["get_weather"]
    assert set(json.loads(calls[0].arguments_json)) == {"city"}
    assert result.finish_reason == pb.FINISH_REASON_TOOL_CALLS

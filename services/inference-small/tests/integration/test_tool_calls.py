"""Tool calling on a real llama.cpp model (the tiny model with a ChatML template that offers
tools, as Qwen 2.5's does). A random-weight model never decides to call a tool by itself, so
"auto" is checked by what the model is shown (and the reading of calls by the unit tests of
tool_use); "required" and a named function make a call whatever the weights: the answer is
decoded under the call's JSON schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import error_param
from lalo_inference_small.llama_model import ChatTurn, LlamaModel
from lalo_testing.tiny_model import write_model

from .conftest import MODEL_ID, Served

WEATHER = pb.ToolDefinition(
    name="get_weather",
    description="The weather in a city now",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        }
    ),
)
TIME = pb.ToolDefinition(
    name="get_time",
    description="The time in a timezone",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {"offset_hours": {"type": "integer"}},
            "required": ["offset_hours"],
        }
    ),
)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(
        tmp_path_factory.mktemp("models") / "tiny-tools.gguf", "tiny", tools="hermes"
    )


def request(
    mode: int = pb.ToolChoice.MODE_AUTO,
    function: str = "",
    tools: tuple[pb.ToolDefinition, ...] = (WEATHER, TIME),
    **sampling: Any,
) -> pb.GenerateRequest:
    sampling.setdefault("max_tokens", 48)
    sampling.setdefault("temperature", 0.0)
    return pb.GenerateRequest(
        model=MODEL_ID,
        chat=pb.ChatInput(
            messages=[pb.ChatMessage(role="user", content="What is the weather in Paris?")],
            tools=list(tools),
            tool_choice=pb.ToolChoice(mode=mode, function=function),
        ),
        sampling=pb.SamplingParams(**sampling),
    )


async def test_the_model_is_said_to_support_tools(served: Served) -> None:
    models = await served.stub.ListModels(pb.ListModelsRequest())
    assert [m.supports_tools for m in models.models] == [True]


def test_a_template_without_tools_is_not_said_to_support_them(tmp_path: Path) -> None:
    plain = LlamaModel(write_model(tmp_path / "plain.gguf", "tiny"))
    try:
        assert not plain.renders_tools
    finally:
        plain.close()


async def test_required_makes_one_call_that_fits_its_tools_schema(served: Served) -> None:
    result = await served.generate(request(pb.ToolChoice.MODE_REQUIRED, max_tokens=200))
    calls = [call for chunk in result.chunks for call in chunk.tool_calls]
    assert len(calls) == 1, result
    call = calls[0]
    assert call.id.startswith("call_")
    assert len(call.id) > 10
    arguments = json.loads(call.arguments_json)
    if call.name == "get_weather":
        assert set(arguments) == {"city", "unit"}
        assert arguments["unit"] in ("celsius", "fahrenheit")
    else:
        assert call.name == "get_time"
        assert isinstance(arguments["offset_hours"], int)
    assert result.text == ""  # the call's JSON is not also sent as text
    assert result.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert result.complete is not None
    assert result.complete.usage.completion_tokens > 0


async def test_a_named_function_is_the_one_called(served: Served) -> None:
    for name in ("get_weather", "get_time"):
        result = await served.generate(
            request(pb.ToolChoice.MODE_FUNCTION, name, max_tokens=200, seed=3, temperature=1.0)
        )
        assert [c.name for chunk in result.chunks for c in chunk.tool_calls] == [name]


async def test_a_call_cut_off_by_max_tokens_comes_back_as_text(served: Served) -> None:
    result = await served.generate(
        request(pb.ToolChoice.MODE_FUNCTION, "get_weather", max_tokens=3)
    )
    assert not [c for chunk in result.chunks for c in chunk.tool_calls]
    assert result.text.startswith("{")  # what was generated is not lost
    assert result.finish_reason == pb.FINISH_REASON_LENGTH


async def test_auto_shows_the_tools_and_none_hides_them(served: Served) -> None:
    async def prompt_tokens(req: pb.GenerateRequest) -> int:
        result = await served.generate(req)
        assert result.complete is not None
        return int(result.complete.usage.prompt_tokens)

    without = await prompt_tokens(request(tools=(), max_tokens=1))
    auto = await prompt_tokens(request(max_tokens=1))
    none = await prompt_tokens(request(pb.ToolChoice.MODE_NONE, max_tokens=1))
    assert auto > without + 40  # the tools' signatures are in the prompt
    assert none == without


async def test_a_conversation_with_calls_and_their_results_is_rendered(served: Served) -> None:
    turns = [
        ChatTurn("user", "Weather in Paris?"),
        ChatTurn("assistant", "", tool_calls=(("call_1", "get_weather", '{"city": "Paris"}'),)),
        ChatTurn("tool", "18 C and sunny", tool_call_id="call_1"),
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    text = served.engine.model.render_chat(turns, tools)
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    )
    assert "<tool_response>\n18 C and sunny\n</tool_response>" in text
    # And over gRPC: the history's call reaches the template (the prompt grows by it).
    history = request(max_tokens=1)
    history.chat.messages.add(
        role="assistant",
        tool_calls=[
            pb.ToolCall(id="call_1", name="get_weather", arguments_json='{"city":"Paris"}')
        ],
    )
    history.chat.messages.add(role="tool", content="18 C and sunny", tool_call_id="call_1")
    result = await served.generate(history)
    assert result.complete is not None
    assert result.error is None


async def _refusal(served: Served, req: pb.GenerateRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.generate(req)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


@pytest.mark.parametrize(
    ("req", "param", "words"),
    [
        (request(pb.ToolChoice.MODE_REQUIRED, tools=()), "tools", "no tools were given"),
        (request(pb.ToolChoice.MODE_FUNCTION, "get_stock"), "tool_choice", "'get_stock'"),
        (request(pb.ToolChoice.MODE_FUNCTION, ""), "tool_choice", "names no function"),
        (
            request(
                pb.ToolChoice.MODE_REQUIRED,
                response_format=pb.ResponseFormat(type=pb.ResponseFormat.JSON_OBJECT),
            ),
            "response_format",
            "cannot be combined",
        ),
        (
            request(tools=(pb.ToolDefinition(name="f", parameters_json="[1, 2]"),)),
            "tools",
            "JSON Schema object",
        ),
        (request(tools=(WEATHER, WEATHER)), "tools", "defined twice"),
        (
            # A forced call's grammar comes from the tools' schemas: the error names tools.
            request(
                pb.ToolChoice.MODE_REQUIRED,
                tools=(pb.ToolDefinition(name="f", parameters_json='{"type": "nonsense"}'),),
            ),
            "tools",
            "tool parameters",
        ),
    ],
)
async def test_bad_tool_requests_are_refused_by_name(
    served: Served, req: pb.GenerateRequest, param: str, words: str
) -> None:
    error = await _refusal(served, req)
    assert error_param(error) == param
    assert words in (error.details() or "")


@pytest.fixture(scope="module")
def engine_options() -> dict[str, Any]:
    # The tools' signatures take a few hundred of the tiny tokenizer's tokens.
    return {"n_ctx": 2048, "parallel": 2, "threads": 1, "n_batch": 512}

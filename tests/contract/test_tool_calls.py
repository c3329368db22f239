"""Function calling with the official SDK, through gateway + router + inference-small on a
tiny model whose chat template offers tools (Qwen 2.5's way). The weights are random, so the
model never chooses a call by itself: "required" and a named function make it call (the answer
is decoded under the call's JSON schema), and the full round trip — call, tool result, next
answer — is checked; what it says is not."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from lalo_testing.stack import Stack, start_stack
from lalo_testing.tiny_model import write_model

from .conftest import TIMEOUT_S

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 16},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tools_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    model = write_model(
        tmp_path_factory.mktemp("models") / "tiny-tools.gguf", "tiny", tools="hermes"
    )
    stack = start_stack(
        model,
        api_key=f"sk-test-{secrets.token_hex(16)}",
        log_dir=tmp_path_factory.mktemp("tools-stack-logs"),
        threads=1,
        parallel=2,
        n_ctx=2048,
        service_token=secrets.token_hex(16),
    )
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def sdk(tools_stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=tools_stack.base_url,
        api_key=tools_stack.api_key,
        max_retries=0,
        timeout=TIMEOUT_S,
    ) as client:
        yield client


def test_the_model_lists_as_taking_tools_and_auto_answers(
    sdk: openai.OpenAI, tools_stack: Stack
) -> None:
    reply = sdk.chat.completions.create(
        model=tools_stack.model_id, messages=ASK, tools=TOOLS, max_tokens=8, temperature=0
    )
    # Random weights write text, not a call: it comes back as text, finishing as usual.
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.choices[0].message.tool_calls is None


def test_required_returns_a_call_the_sdk_reads(sdk: openai.OpenAI, tools_stack: Stack) -> None:
    reply = sdk.chat.completions.create(
        model=tools_stack.model_id,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=200,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert set(arguments) == {"city", "unit"}
        assert arguments["unit"] in ("celsius", "fahrenheit")
    else:
        assert call.function.name == "add"
        assert isinstance(arguments["a"], int)
        assert isinstance(arguments["b"], int)
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0


def test_a_named_function_round_trip(sdk: openai.OpenAI, tools_stack: Stack) -> None:
    reply = sdk.chat.completions.create(
        model=tools_stack.model_id,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=200,
        temperature=0,
    )
    message = reply.choices[0].message
    calls = message.tool_calls or []
    assert [c.function.name for c in calls] == ["add"]
    # The caller runs the tool and sends the call and its result back, as the SDK docs show.
    follow_up = sdk.chat.completions.create(
        model=tools_stack.model_id,
        messages=[
            *ASK,
            message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": calls[0].id, "content": "42"},
        ],
        tools=TOOLS,
        max_tokens=8,
        temperature=0,
    )
    assert follow_up.choices[0].message.tool_calls is None
    assert follow_up.usage is not None
    assert follow_up.usage.prompt_tokens > reply.usage.prompt_tokens  # type: ignore[union-attr]


def test_a_streamed_call_accumulates_as_the_sdk_expects(
    sdk: openai.OpenAI, tools_stack: Stack
) -> None:
    stream = sdk.chat.completions.create(
        model=tools_stack.model_id,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        temperature=0,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                slot = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += delta.id or ""
                slot["name"] += (delta.function.name if delta.function else None) or ""
                slot["arguments"] += (delta.function.arguments if delta.function else None) or ""
            finish = choice.finish_reason or finish
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["id"].startswith("call_")
    assert set(json.loads(calls[0]["arguments"])) == {"city", "unit"}
    assert finish == "tool_calls"


def test_none_answers_in_text(sdk: openai.OpenAI, tools_stack: Stack) -> None:
    reply = sdk.chat.completions.create(
        model=tools_stack.model_id,
        messages=ASK,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=4,
        temperature=0,
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),  # no tools
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object"}},
                    }
                ]
                * 2
            },
            "tools",
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": 'a b"<c>', "parameters": {}}}],
            },
            "tools",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "x"}}}
                ],
                "tool_choice": "required",
            },
            "tools",
        ),
        ({"tools": TOOLS, "tool_choice": {"type": "custom", "name": "f"}}, "tool_choice"),
    ],
)
def test_bad_tool_requests_are_400_naming_the_field(
    sdk: openai.OpenAI, tools_stack: Stack, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model=tools_stack.model_id, messages=ASK, max_tokens=4, **fields
        )
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"] or "").startswith(param), error


RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"]}
    for t in TOOLS
]


def test_responses_function_call_round_trip(sdk: openai.OpenAI, tools_stack: Stack) -> None:
    """The Responses API's form: a function_call output item, then the caller's
    function_call_output sent back with it in input."""
    response = sdk.responses.create(
        model=tools_stack.model_id,
        input="What is the weather in Paris?",
        tools=RESPONSES_TOOLS,
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=200,
        temperature=0,
    )
    assert response.status == "completed"
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    call = calls[0]
    assert call.call_id.startswith("call_")
    assert call.id.startswith("fc_")
    assert set(json.loads(call.arguments)) == {"city", "unit"}
    follow_up = sdk.responses.create(
        model=tools_stack.model_id,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
        ],
        tools=RESPONSES_TOOLS,
        max_output_tokens=4,
        temperature=0,
    )
    assert [item.type for item in follow_up.output] == ["message"]
    assert follow_up.usage is not None
    assert response.usage is not None
    assert follow_up.usage.input_tokens > response.usage.input_tokens


def test_responses_streams_a_function_call(sdk: openai.OpenAI, tools_stack: Stack) -> None:
    with sdk.responses.stream(
        model=tools_stack.model_id,
        input="What is 2 + 3?",
        tools=RESPONSES_TOOLS,
        tool_choice="required",
        max_output_tokens=200,
        temperature=0,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed"
    assert "response.function_call_arguments.done" in kinds
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name in ("get_weather", "add")
    json.loads(calls[0].arguments)

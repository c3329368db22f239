"""Tool calling through the gateway: the request's tools, tool_choice and history reach the
router; calls the model made come back as OpenAI's tool_calls, whole or streamed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_gateway.protocol import ChatCompletionRequest
from lalo_gateway.serving import ServingChat
from pydantic import ValidationError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = ipb.ToolCall(id="call_abc", name="get_weather", arguments_json='{"city": "Paris"}')


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "weather?"}], **fields}
    )


class RecordingRouter:
    """Stands in for RouterClient: keeps the request, replays fixed events."""

    def __init__(self, events: list[rpb.ChatResponse]) -> None:
        self.events = events
        self.requests: list[rpb.ChatRequest] = []

    async def chat(self, request: rpb.ChatRequest) -> Any:
        self.requests.append(request)
        for event in self.events:
            yield event


def answer(*chunks: ipb.GenerateChunk) -> list[rpb.ChatResponse]:
    return [
        rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny")),
        *(rpb.ChatResponse(chunk=c) for c in chunks),
        rpb.ChatResponse(
            complete=ipb.GenerateComplete(
                finish_reason=ipb.FINISH_REASON_TOOL_CALLS,
                usage=ipb.Usage(prompt_tokens=30, completion_tokens=12),
            )
        ),
    ]


@pytest.mark.parametrize(
    ("choice", "mode", "function"),
    [
        (None, ipb.ToolChoice.MODE_AUTO, ""),
        ("auto", ipb.ToolChoice.MODE_AUTO, ""),
        ("none", ipb.ToolChoice.MODE_NONE, ""),
        ("required", ipb.ToolChoice.MODE_REQUIRED, ""),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            ipb.ToolChoice.MODE_FUNCTION,
            "get_weather",
        ),
    ],
)
async def test_tools_and_tool_choice_reach_the_router(
    choice: Any, mode: int, function: str
) -> None:
    router = RecordingRouter(answer(ipb.GenerateChunk(text="ok")))
    fields: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        fields["tool_choice"] = choice
    await ServingChat(router).create(chat(**fields), "req-1")  # type: ignore[arg-type]
    sent = router.requests[0].chat
    assert [t.name for t in sent.tools] == ["get_weather"]
    assert json.loads(sent.tools[0].parameters_json)["properties"] == {"city": {"type": "string"}}
    assert (sent.tool_choice.mode, sent.tool_choice.function) == (mode, function)


async def test_a_conversation_with_calls_reaches_the_router_whole() -> None:
    router = RecordingRouter(answer(ipb.GenerateChunk(text="It is sunny.")))
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
            ],
        }
    )
    await ServingChat(router).create(body, "req-1")  # type: ignore[arg-type]
    messages = router.requests[0].chat.messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert [(c.id, c.name, c.arguments_json) for c in messages[1].tool_calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}')
    ]
    assert (messages[2].tool_call_id, messages[2].content) == ("call_1", "18 C")


async def test_calls_come_back_as_tool_calls_with_null_content() -> None:
    router = RecordingRouter(answer(ipb.GenerateChunk(tool_calls=[CALL])))
    response = await ServingChat(router).create(chat(tools=[WEATHER]), "req-1")  # type: ignore[arg-type]
    body = json.loads(bytes(response.body))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }


async def test_text_before_a_call_is_kept_beside_it() -> None:
    router = RecordingRouter(
        answer(ipb.GenerateChunk(text="Let me check. "), ipb.GenerateChunk(tool_calls=[CALL]))
    )
    response = await ServingChat(router).create(chat(tools=[WEATHER]), "req-1")  # type: ignore[arg-type]
    message = json.loads(bytes(response.body))["choices"][0]["message"]
    assert message["content"] == "Let me check. "
    assert [c["id"] for c in message["tool_calls"]] == ["call_abc"]


async def test_streamed_calls_are_deltas_indexed_per_choice() -> None:
    second = ipb.ToolCall(id="call_def", name="get_weather", arguments_json='{"city": "Oslo"}')
    router = RecordingRouter(
        answer(
            ipb.GenerateChunk(tool_calls=[CALL]),
            # Text and a call in one chunk (a held stream merges them): neither is dropped.
            ipb.GenerateChunk(text="and ", tool_calls=[second]),
        )
    )
    response = await ServingChat(router).create(chat(tools=[WEATHER], stream=True), "req-1")
    text = "".join([str(w) async for w in response.body_iterator])  # type: ignore[union-attr]
    chunks = [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [(c["index"], c["id"], c["function"]["arguments"]) for c in calls] == [
        (0, "call_abc", '{"city": "Paris"}'),
        (1, "call_def", '{"city": "Oslo"}'),
    ]
    assert all(c["type"] == "function" and c["function"]["name"] == "get_weather" for c in calls)
    assert "".join(d.get("content") or "" for d in deltas) == "and "
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("fields", "where", "words"),
    [
        ({"tool_choice": "required"}, "tool_choice", "only allowed when tools are specified"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
            "'x', which is not among the tools",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", ""),
        (
            {"messages": [{"role": "tool", "content": "18 C"}]},
            "messages",
            "needs the tool_call_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "x",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    }
                ]
            },
            "messages",
            "only an 'assistant' message has tool_calls",
        ),
    ],
)
def test_bad_tool_fields_are_refused(fields: dict[str, Any], where: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        chat(**fields)
    error = caught.value.errors()[0]
    assert error["loc"][0] == where
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"functions": [WEATHER["function"]]},
        {"function_call": "auto"},
    ],
)
def test_the_deprecated_functions_form_is_refused_by_name(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        chat(**fields)
    assert caught.value.errors()[0]["loc"][0] == next(iter(fields))
    assert "send tools" in str(caught.value)


async def test_a_developer_message_reaches_the_model_as_system() -> None:
    router = RecordingRouter(answer(ipb.GenerateChunk(text="ok")))
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    await ServingChat(router).create(body, "req-1")  # type: ignore[arg-type]
    assert [m.role for m in router.requests[0].chat.messages] == ["system", "user"]

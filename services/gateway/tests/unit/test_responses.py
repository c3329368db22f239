"""Responses API input items → the router's chat request, and its answer → output items
(streamed events included), without a router: the wire is tested in the contract suite."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_gateway.protocol import ResponsesRequest
from lalo_gateway.serving_responses import ServingResponses, router_request
from pydantic import ValidationError

TOOL = {"type": "function", "name": "add", "parameters": {"type": "object"}}


def body(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


def test_input_items_become_the_conversation() -> None:
    request = router_request(
        body(
            instructions="Be brief.",
            input=[
                {"role": "user", "content": "2+3 and 4+4?"},
                {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "add", "arguments": '{"a":4}'},
                {"type": "function_call_output", "call_id": "c1", "output": "5"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "8"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "5 and 8."}],
                },
                {"role": "developer", "content": "Now in words."},
            ],
            tools=[TOOL],
            tool_choice={"type": "function", "name": "add"},
            max_output_tokens=12,
            temperature=0.5,
            text={"format": {"type": "json_object"}},
        ),
        "req-1",
    )
    messages = request.chat.messages
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "2+3 and 4+4?"),
        ("assistant", ""),  # the two calls, made together: one turn
        ("tool", "5"),
        ("tool", "8"),
        ("assistant", "5 and 8."),
        ("system", "Now in words."),  # "developer" is "system" to open models' templates
    ]
    assert [(c.id, c.arguments_json) for c in messages[2].tool_calls] == [
        ("c1", "{}"),
        ("c2", '{"a":4}'),
    ]
    assert [m.tool_call_id for m in messages[3:5]] == ["c1", "c2"]
    assert [t.name for t in request.chat.tools] == ["add"]
    assert request.chat.tool_choice.mode == ipb.ToolChoice.MODE_FUNCTION
    assert request.chat.tool_choice.function == "add"
    assert request.sampling.max_tokens == 12
    assert request.sampling.temperature == pytest.approx(0.5)
    assert request.sampling.response_format.type == ipb.ResponseFormat.JSON_OBJECT


class ScriptedRouter:
    def __init__(self, events: list[rpb.ChatResponse]) -> None:
        self.events = events

    async def chat(self, request: rpb.ChatRequest) -> Any:
        for event in self.events:
            yield event


def answer(*chunks: ipb.GenerateChunk, finish: int = ipb.FINISH_REASON_STOP) -> list[Any]:
    return [
        rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny")),
        *(rpb.ChatResponse(chunk=c) for c in chunks),
        rpb.ChatResponse(
            complete=ipb.GenerateComplete(
                finish_reason=finish, usage=ipb.Usage(prompt_tokens=7, completion_tokens=5)
            )
        ),
    ]


CALL = ipb.ToolCall(id="call_1", name="add", arguments_json='{"a": 2}')


async def test_text_and_a_call_become_two_output_items() -> None:
    serving = ServingResponses(
        ScriptedRouter(
            answer(
                ipb.GenerateChunk(text="Adding. "),
                ipb.GenerateChunk(tool_calls=[CALL]),
                finish=ipb.FINISH_REASON_TOOL_CALLS,
            )
        )
    )
    response = await serving.create(body(tools=[TOOL]), "req-1")
    payload = json.loads(bytes(response.body))  # type: ignore[union-attr]
    assert payload["status"] == "completed"
    assert payload["model"] == "tiny"
    assert payload["store"] is False
    message, call = payload["output"]
    assert message["content"][0]["text"] == "Adding. "
    assert (call["type"], call["call_id"], call["name"], call["arguments"]) == (
        "function_call",
        "call_1",
        "add",
        '{"a": 2}',
    )
    assert payload["usage"]["total_tokens"] == 12


async def test_a_streamed_answer_opens_and_closes_each_item() -> None:
    serving = ServingResponses(
        ScriptedRouter(
            answer(
                ipb.GenerateChunk(text="Add"),
                ipb.GenerateChunk(text="ing."),
                ipb.GenerateChunk(tool_calls=[CALL]),
                finish=ipb.FINISH_REASON_LENGTH,
            )
        )
    )
    response = await serving.create(body(tools=[TOOL], stream=True), "req-1")
    text = "".join([str(w) async for w in response.body_iterator])  # type: ignore[union-attr]
    events = [json.loads(b.split("data: ", 1)[1]) for b in text.split("\n\n") if b]
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.incomplete",  # max_output_tokens cut it
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[6]["text"] == "Adding."
    assert [e["output_index"] for e in events[2:13]] == [0] * 7 + [1] * 4
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]


async def test_an_error_after_the_stream_began_fails_the_response() -> None:
    events = [
        rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny")),
        rpb.ChatResponse(chunk=ipb.GenerateChunk(text="Hel")),
        rpb.ChatResponse(error=ipb.GenerateError(code=14, message="replica died")),
    ]
    response = await ServingResponses(ScriptedRouter(events)).create(body(stream=True), "r")
    text = "".join([str(w) async for w in response.body_iterator])  # type: ignore[union-attr]
    last = json.loads(text.strip().split("\n\n")[-1].split("data: ", 1)[1])
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert "replica died" in last["response"]["error"]["message"]
    item = last["response"]["output"][0]
    assert (item["status"], item["content"][0]["text"]) == ("incomplete", "Hel")  # kept


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"previous_response_id": ""}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": []}, "input"),
        ({"input": [{"type": "web_search_call"}]}, "input"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tool_choice": {"type": "function", "name": "x"}, "tools": [TOOL]}, "tool_choice"),
    ],
)
def test_what_cannot_be_honoured_is_refused(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        body(**fields)
    assert caught.value.errors()[0]["loc"][0] == where


def test_an_answers_text_and_calls_sent_back_are_one_assistant_turn() -> None:
    """A response's output (a message, then its calls) goes back in input as one turn, as
    chat completions sends an assistant message with content and tool_calls."""
    request = router_request(
        body(
            input=[
                {"role": "user", "content": "2+3?"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Adding."}]},
                {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "5"},
            ],
            tools=[TOOL],
        ),
        "req-1",
    )
    messages = request.chat.messages
    assert [(m.role, m.content, len(m.tool_calls)) for m in messages] == [
        ("user", "2+3?", 0),
        ("assistant", "Adding.", 1),
        ("tool", "5", 0),
    ]


def test_a_function_named_like_a_mode_is_still_the_one_forced() -> None:
    tool = {"type": "function", "name": "required", "parameters": {"type": "object"}}
    request = router_request(
        body(tools=[tool], tool_choice={"type": "function", "name": "required"}), "r"
    )
    assert request.chat.tool_choice.mode == ipb.ToolChoice.MODE_FUNCTION
    assert request.chat.tool_choice.function == "required"

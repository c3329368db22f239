"""Tool calls in inference-large, whatever the backend: the plan for a request, calls read
out of streamed text, and an upstream's own streamed tool_calls put together."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lalo_common.errors import InvalidArgument
from lalo_common.tool_calls import DEEPSEEK, HERMES, LFM2
from lalo_inference_large.domain import (
    ChatMessage,
    Chunk,
    Complete,
    Event,
    GenerationRequest,
    ResponseFormat,
    SamplingOptions,
    ToolCall,
    ToolChoice,
    ToolDefinition,
)
from lalo_inference_large.tool_use import ToolUse, plan_tools, read_tool_calls
from lalo_inference_large.upstream_backend import StreamedCalls, request_body

ADD = ToolDefinition("add", "", {"type": "object", "properties": {"a": {"type": "integer"}}})


def request(mode: str = "auto", function: str = "", **fields: object) -> GenerationRequest:
    return GenerationRequest(
        "r",
        "m",
        messages=(ChatMessage("user", "2+3?"),),
        tools=(ADD,),
        tool_choice=ToolChoice(mode, function),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def test_the_plan_reads_calls_in_the_backend_s_format() -> None:
    assert plan_tools(request())[1] == ToolUse(frozenset({"add"}), False, HERMES)
    assert plan_tools(request(), DEEPSEEK)[1] == ToolUse(frozenset({"add"}), False, DEEPSEEK)


async def test_auto_reads_calls_in_lfm2_s_and_deepseek_s_formats() -> None:
    begin, end = DEEPSEEK.opening, DEEPSEEK.closing
    call_begin, sep, call_end = DEEPSEEK.inner_markers
    written = {
        LFM2: ["<|tool_call_start|>[add(a=", "2)]<|tool_call_end|>", "Adding."],
        DEEPSEEK: [
            f"Adding.{begin}{call_begin}function{sep}add\n```json\n",
            f'{{"a": 2}}\n```{call_end}{end}',
        ],
    }
    for call_format, pieces in written.items():
        out = [
            e
            async for e in read_tool_calls(
                events(*(Chunk(piece) for piece in pieces), Complete("stop", 5, 9, "m")),
                ToolUse(frozenset({"add"}), False, call_format),
            )
        ]
        calls = [c for e in out if isinstance(e, Chunk) for c in e.tool_calls]
        assert [(c.name, c.arguments_json) for c in calls] == [("add", '{"a": 2}')]
        assert "".join(e.text for e in out if isinstance(e, Chunk)) == "Adding."
        assert isinstance(out[-1], Complete)
        assert out[-1].finish_reason == "tool_calls"


def test_the_plan_for_each_tool_choice() -> None:
    auto, use = plan_tools(request())
    assert auto.tools == (ADD,)
    assert use == ToolUse(frozenset({"add"}), forced=False)
    hidden, use = plan_tools(request("none"))
    assert hidden.tools == ()
    assert use is None
    forced, use = plan_tools(request("function", "add"))
    assert use is not None
    assert use.forced
    schema = forced.sampling.response_format.json_schema
    assert forced.sampling.response_format.kind == "json_schema"
    assert schema is not None
    assert schema["properties"]["name"] == {"const": "add"}  # type: ignore[index]
    raw, use = plan_tools(GenerationRequest("r", "m", prompt="hi"))
    assert use is None
    assert raw.prompt == "hi"


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (request("function", "sub"), "tool_choice"),
        (request("function"), "tool_choice"),
        (
            request(
                "required", sampling=SamplingOptions(response_format=ResponseFormat("json_object"))
            ),
            "response_format",
        ),
        (
            GenerationRequest("r", "m", tools=(ADD, ADD), messages=(ChatMessage("user", "x"),)),
            "tools",
        ),
        (
            GenerationRequest(
                "r",
                "m",
                tools=(ToolDefinition("a b", "", {}),),
                messages=(ChatMessage("user", "x"),),
            ),
            "tools",
        ),
    ],
)
def test_bad_plans_are_refused_by_name(req: GenerationRequest, param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        plan_tools(req)
    assert caught.value.param == param


async def events(*items: Event) -> AsyncIterator[Event]:
    for item in items:
        yield item


async def test_auto_reads_a_hermes_call_and_passes_an_upstreams_own_calls() -> None:
    native = ToolCall("call_up", "add", '{"a": 1}')
    out = [
        e
        async for e in read_tool_calls(
            events(
                Chunk("Sure. <tool_"),
                Chunk('call>{"name": "add", "arguments": {"a": 2}}</tool_call>'),
                Chunk("", tool_calls=(native,)),
                Complete("stop", 5, 9, "m"),
            ),
            ToolUse(frozenset({"add"}), forced=False),
        )
    ]
    texts = "".join(e.text for e in out if isinstance(e, Chunk))
    calls = [c for e in out if isinstance(e, Chunk) for c in e.tool_calls]
    assert texts == "Sure. "
    assert [(c.name, c.arguments_json) for c in calls] == [("add", '{"a": 2}'), ("add", '{"a": 1}')]
    assert isinstance(out[-1], Complete)
    assert out[-1].finish_reason == "tool_calls"


def test_streamed_upstream_calls_are_put_together_by_index() -> None:
    calls = StreamedCalls()
    calls.add({"index": 0, "id": "call_a", "function": {"name": "add", "arguments": ""}})
    calls.add({"index": 1, "id": "call_b", "function": {"name": "add", "arguments": '{"a"'}})
    calls.add({"index": 0, "function": {"arguments": '{"a": 1}'}})
    calls.add({"index": 1, "function": {"arguments": ": 2}"}})
    assert calls.take() == (
        ToolCall("call_a", "add", '{"a": 1}'),
        ToolCall("call_b", "add", '{"a": 2}'),
    )
    assert not calls


def test_an_upstream_gets_the_historys_calls_in_openais_shape() -> None:
    history = GenerationRequest(
        "r",
        "m",
        messages=(
            ChatMessage("user", "2+3?"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "add", '{"a": 2}'),)),
            ChatMessage("tool", "5", tool_call_id="call_1"),
        ),
    )
    _, body = request_body(history, "m")
    assert body["messages"][1]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
    ]

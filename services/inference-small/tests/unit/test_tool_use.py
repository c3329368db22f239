"""How an answer's events become text and calls (read_tool_calls), on made-up event streams:
a random-weight model never writes a call by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import InvalidArgument
from lalo_common.tool_calls import LFM2
from lalo_inference_small.engine import Event, Finished, TextDelta, TokenOut
from lalo_inference_small.sampling import SamplingConfig
from lalo_inference_small.tool_use import (
    ToolCalls,
    ToolUse,
    plan_tools,
    read_tool_calls,
    shown_tools,
)

AUTO = ToolUse(frozenset({"get_weather"}), forced=False)
FORCED = ToolUse(frozenset({"get_weather"}), forced=True)


async def stream(*pieces: str, reason: str = "stop") -> AsyncIterator[Event]:
    for piece in pieces:
        yield TextDelta(piece, (TokenOut(1, piece, -0.5, piece.encode()),))
    yield Finished(reason, 10, len(pieces))


async def read(use: ToolUse, *pieces: str, reason: str = "stop") -> list[Event | ToolCalls]:
    return [event async for event in read_tool_calls(stream(*pieces, reason=reason), use)]


async def test_auto_streams_text_and_reads_a_call_written_in_pieces() -> None:
    events = await read(
        AUTO,
        "Checking.",
        "\n<tool",
        '_call>\n{"name": "get_weather", ',
        '"arguments": {}}\n</tool_call>',
    )
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(t.text for t in texts) == "Checking.\n"
    assert texts[0].tokens  # text that passed through as it came keeps its token details
    calls = [c for e in events if isinstance(e, ToolCalls) for c in e.calls]
    assert [(c.name, c.arguments_json) for c in calls] == [("get_weather", "{}")]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.reason == "tool_calls"
    assert finished.completion_tokens == 4


async def test_an_lfm2_model_s_calls_are_read_in_its_own_format() -> None:
    lfm2 = ToolUse(frozenset({"get_weather", "get_time"}), forced=False, call_format=LFM2)
    events = await read(
        lfm2,
        "<|tool_call_start|>",
        '[get_weather(city="Oslo"), get_time()]',
        "<|tool_call_end|>",
        "Checking both.",
    )
    calls = [c for e in events if isinstance(e, ToolCalls) for c in e.calls]
    assert [(c.name, c.arguments_json) for c in calls] == [
        ("get_weather", '{"city": "Oslo"}'),
        ("get_time", "{}"),
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Checking both."
    assert isinstance(events[-1], Finished)
    assert events[-1].reason == "tool_calls"


def test_the_plan_reads_calls_in_the_model_s_format() -> None:
    chat = pb.ChatInput(tools=[pb.ToolDefinition(name="get_weather")])
    _, use, _ = plan_tools(chat, SamplingConfig(), LFM2)
    assert use is not None
    assert use.call_format is LFM2


async def test_auto_without_a_call_is_plain_text_finishing_as_it_did() -> None:
    events = await read(AUTO, "Just ", "text <b>")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Just text <b>"
    assert isinstance(events[-1], Finished)
    assert events[-1].reason == "stop"


async def test_a_forced_answer_is_one_call_and_no_text() -> None:
    events = await read(FORCED, '{"name": "get_weather",', ' "arguments": {"city": "Oslo"}}')
    assert [type(e) for e in events] == [ToolCalls, Finished]
    assert isinstance(events[-1], Finished)
    assert events[-1].reason == "tool_calls"


async def test_a_forced_answer_cut_short_is_returned_as_text() -> None:
    events = await read(FORCED, '{"name": "get_wea', reason="length")
    assert [type(e) for e in events] == [TextDelta, Finished]
    assert isinstance(events[0], TextDelta)
    assert events[0].text == '{"name": "get_wea'
    assert isinstance(events[-1], Finished)
    assert events[-1].reason == "length"


def test_the_tools_shown_to_the_template() -> None:
    chat = pb.ChatInput(
        tools=[
            pb.ToolDefinition(
                name="calc", description="adds", parameters_json='{"type": "object"}'
            ),
            pb.ToolDefinition(name="noargs"),
        ],
    )
    tools = shown_tools(chat)
    assert tools is not None
    assert tools[0] == {
        "type": "function",
        "function": {"name": "calc", "description": "adds", "parameters": {"type": "object"}},
    }
    assert tools[1]["function"]["parameters"] == {}
    chat.tool_choice.mode = pb.ToolChoice.MODE_NONE
    assert shown_tools(chat) is None
    assert shown_tools(pb.ChatInput()) is None


def test_a_bad_tool_schema_is_named() -> None:
    chat = pb.ChatInput(tools=[pb.ToolDefinition(name="t", parameters_json="{nope")])
    with pytest.raises(InvalidArgument, match="'t' parameters are not valid JSON"):
        shown_tools(chat)


async def test_closing_the_reader_closes_the_engine_stream() -> None:
    closed: list[bool] = []

    async def engine_stream() -> AsyncIterator[Event]:
        try:
            yield TextDelta("Hello", ())
            yield TextDelta(" there", ())
        finally:
            closed.append(True)  # where the engine request would be aborted

    reader = read_tool_calls(engine_stream(), AUTO)
    assert isinstance(await anext(reader), TextDelta)
    await reader.aclose()  # type: ignore[attr-defined]
    assert closed == [True]

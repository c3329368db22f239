"""Tool calling for one chat request: what the model is shown, how it must answer, and how
its answer is read back as calls (the rules themselves are lalo_common.tool_calls')."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.aio import aclose
from lalo_common.errors import InvalidArgument
from lalo_common.tool_calls import (
    HERMES,
    CallFormat,
    CallReader,
    ParsedCall,
    forced_call_schema,
    tool_parameters,
)

from lalo_inference_small.engine import Event, Finished, TextDelta
from lalo_inference_small.sampling import SamplingConfig, grammar_for_json_schema

MODES = {
    pb.ToolChoice.MODE_AUTO: "auto",
    pb.ToolChoice.MODE_NONE: "none",
    pb.ToolChoice.MODE_REQUIRED: "required",
    pb.ToolChoice.MODE_FUNCTION: "function",
}


@dataclass(frozen=True)
class ToolCalls:
    """Calls the model made (an event beside the engine's own)."""

    calls: tuple[ParsedCall, ...]


@dataclass(frozen=True)
class ToolUse:
    names: frozenset[str]
    # "required" or a named function: the whole answer is one call's JSON.
    forced: bool
    # How the model writes calls when it decides to (the model's: LlamaModel.call_format).
    call_format: CallFormat = HERMES


def shown_tools(
    chat: pb.ChatInput, parameters: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]] | None:
    """The tools as the chat template takes them (None: none shown, as for "none");
    ``parameters``: the tools' schemas if already read (tool_parameters). InvalidArgument
    names a tool whose parameters are not a JSON Schema object."""
    if parameters is None:
        parameters = tool_parameters(chat.tools)
    if not parameters or chat.tool_choice.mode == pb.ToolChoice.MODE_NONE:
        return None
    return [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": schema},
        }
        for tool, schema in zip(chat.tools, parameters.values(), strict=True)
    ]


def plan_tools(
    chat: pb.ChatInput, config: SamplingConfig, call_format: CallFormat = HERMES
) -> tuple[list[dict[str, Any]] | None, ToolUse | None, SamplingConfig]:
    """The tools to show the model (None: none), how to read its answer (None: as text),
    and the sampling config (a forced call is decoded under its JSON schema)."""
    parameters = tool_parameters(chat.tools)
    tools = shown_tools(chat, parameters)
    choice = chat.tool_choice
    schema = forced_call_schema(
        parameters,
        MODES[choice.mode],
        choice.function,
        response_format_set=config.grammar is not None,
    )
    if schema is not None:
        try:
            grammar = grammar_for_json_schema(json.dumps(schema))
        except InvalidArgument as exc:  # the schema is the tools' parameters, not a format
            raise InvalidArgument(f"tool parameters: {exc.message}", param="tools") from None
        config = dataclasses.replace(config, grammar=grammar)
    if tools is None:
        return None, None, config
    return tools, ToolUse(frozenset(parameters), schema is not None, call_format), config


async def read_tool_calls(
    events: AsyncIterator[Event], use: ToolUse
) -> AsyncIterator[Event | ToolCalls]:
    """The engine's events with the model's calls taken out of its text (CallReader). An
    answer that ends with calls finishes "tool_calls"."""
    reader = CallReader(use.names, forced=use.forced, call_format=use.call_format)
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                pieces = reader.feed(event.text)
                # Token details stay with text that passed through as it came.
                for out in _events(pieces, event.tokens if pieces == [event.text] else ()):
                    yield out
                continue
            if isinstance(event, Finished):
                for out in _events(reader.finish(), ()):
                    yield out
                if reader.calls and event.reason == "stop":
                    event = dataclasses.replace(event, reason="tool_calls")
            yield event
    finally:
        # The engine request ends even when our consumer stops early without an
        # exception reaching it.
        await aclose(events)


def _events(pieces: list[str | ParsedCall], tokens: tuple[Any, ...]) -> list[Event | ToolCalls]:
    return [
        ToolCalls((piece,)) if isinstance(piece, ParsedCall) else TextDelta(piece, tokens)
        for piece in pieces
        if piece
    ]

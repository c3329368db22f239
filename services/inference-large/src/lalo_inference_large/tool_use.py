"""Tool calling for one chat request, whatever the backend: what the model is shown, how it
must answer, and its answer read back as calls (the rules are lalo_common.tool_calls')."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lalo_common.aio import aclose
from lalo_common.tool_calls import (
    HERMES,
    CallFormat,
    CallReader,
    ParsedCall,
    checked_tool_names,
    forced_call_schema,
)

from lalo_inference_large.domain import (
    Chunk,
    Complete,
    Event,
    GenerationRequest,
    ResponseFormat,
    ToolCall,
)


@dataclass(frozen=True)
class ToolUse:
    names: frozenset[str]
    forced: bool  # "required" or a named function: the whole answer is one call's JSON
    call_format: CallFormat = HERMES  # how the model writes calls when it decides to


def plan_tools(
    request: GenerationRequest, call_format: CallFormat = HERMES
) -> tuple[GenerationRequest, ToolUse | None]:
    """The request as the backend should run it (tools hidden for "none"; a forced call
    decoded under its JSON schema), and how to read the answer (None: as text)."""
    if not request.is_chat:
        return request, None
    choice = request.tool_choice
    names = [tool.name for tool in request.tools]
    # The same checks as inference-small's (names, duplicates), on the parsed schemas.
    checked_tool_names(names)
    schema = forced_call_schema(
        {t.name: t.parameters for t in request.tools},
        choice.mode,
        choice.function,
        response_format_set=request.sampling.response_format.kind != "text",
    )
    if schema is not None:
        sampling = dataclasses.replace(
            request.sampling, response_format=ResponseFormat("json_schema", json_schema=schema)
        )
        request = dataclasses.replace(request, sampling=sampling)
    if not request.tools or choice.mode == "none":
        return dataclasses.replace(request, tools=()), None
    return request, ToolUse(frozenset(names), schema is not None, call_format)


async def read_tool_calls(events: AsyncIterator[Event], use: ToolUse) -> AsyncIterator[Event]:
    """The backend's events with the model's calls taken out of its text. Calls the
    backend already made structured (an upstream's own tool_calls) pass through; an answer
    that ends with calls finishes "tool_calls"."""
    reader = CallReader(use.names, forced=use.forced, call_format=use.call_format)
    made = 0
    try:
        async for event in events:
            if isinstance(event, Chunk) and not event.echo:
                made += len(event.tool_calls)
                pieces = reader.feed(event.text) if event.text else []
                if event.tool_calls:
                    yield Chunk("", tool_calls=event.tool_calls)
                for out in _chunks(pieces, event.tokens if pieces == [event.text] else ()):
                    yield out
                continue
            if isinstance(event, Complete):
                for out in _chunks(reader.finish(), ()):
                    yield out
                if (made or reader.calls) and event.finish_reason == "stop":
                    event = dataclasses.replace(event, finish_reason="tool_calls")
            yield event
    finally:
        # The engine request ends even when our consumer stops early without an
        # exception reaching it.
        await aclose(events)


def _chunks(pieces: list[str | ParsedCall], tokens: tuple[object, ...]) -> list[Chunk]:
    return [
        Chunk("", tool_calls=(ToolCall(p.id, p.name, p.arguments_json),))
        if isinstance(p, ParsedCall)
        else Chunk(p, tokens)  # type: ignore[arg-type]
        for p in pieces
        if p
    ]

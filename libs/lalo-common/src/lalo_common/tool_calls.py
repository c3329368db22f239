"""Tool calls (OpenAI function calling) the same way in every inference service.

Two ways a model's answer becomes tool calls:

- ``tool_choice`` "required" or a named function: the answer is decoded under the JSON
  schema of one call (``call_schema``), so it *is* a call, whatever the model; it is read
  with ``call_from_json``.
- "auto": the model decides, writing calls in the format its chat template taught it. The
  format read here is Hermes' — ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
  one block per call — which Qwen 2.5/3, Hermes 2/3 and most tool-tuned GGUF models use.
  ``ToolCallScanner`` splits streamed text into plain text and calls as it arrives; text
  that only looks like a call (an unknown function, JSON that does not parse, a block cut
  off by max_tokens) is passed on as text: nothing the model wrote is dropped.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lalo_common.errors import InvalidArgument

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
# OpenAI's rule for a function's name (it is written into prompts and grammars as is); the
# gateway checks requests against the same pattern.
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments_json: str
    id: str = field(default_factory=lambda: new_call_id())


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def tool_parameters(tools: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Each tool's parameter schema by name, from ``lalo.inference.v1.ToolDefinition``s; a
    tool without one takes any object. InvalidArgument (param ``tools``) names a tool whose
    schema is not a JSON object, or a name checked_tool_names refuses."""
    checked_tool_names([tool.name for tool in tools])
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        try:
            schema = json.loads(tool.parameters_json) if tool.parameters_json else {}
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"tool {tool.name!r} parameters are not valid JSON: {exc.msg}", param="tools"
            ) from None
        if not isinstance(schema, dict):
            raise InvalidArgument(
                f"tool {tool.name!r} parameters must be a JSON Schema object", param="tools"
            )
        out[tool.name] = schema
    return out


def checked_tool_names(names: Sequence[str]) -> None:
    """InvalidArgument (param ``tools``) for a name that is not OpenAI's kind (it is
    written into prompts and grammars as is) or one given twice."""
    seen: set[str] = set()
    for name in names:
        if not FUNCTION_NAME.fullmatch(name):
            raise InvalidArgument(
                f"tool name {name!r} must be 1 to 64 letters, digits, '_' or '-'",
                param="tools",
            )
        if name in seen:
            raise InvalidArgument(f"tool {name!r} is defined twice", param="tools")
        seen.add(name)


def call_schema(parameters: Mapping[str, Mapping[str, Any]], only: str = "") -> dict[str, Any]:
    """The JSON schema of one call to one of the tools (``only``: that one), as
    ``{"name": <the tool>, "arguments": <its parameters>}``."""
    if only and only not in parameters:
        raise InvalidArgument(
            f"tool_choice names {only!r}, which is not among the tools "
            f"({', '.join(sorted(parameters)) or 'none'})",
            param="tool_choice",
        )
    names = [only] if only else list(parameters)
    if not names:
        raise InvalidArgument(
            "tool_choice requires a tool call but no tools were given", param="tools"
        )
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": name},
                "arguments": dict(parameters[name]) or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for name in names
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_call_schema(
    parameters: Mapping[str, Mapping[str, Any]],
    mode: str,
    function: str = "",
    *,
    response_format_set: bool = False,
) -> dict[str, Any] | None:
    """The schema the answer is decoded under when ``mode`` ("auto", "none", "required",
    "function") requires a call; None when the model may answer in text. A response
    format cannot also apply: the answer is then the call's JSON."""
    if mode not in ("required", "function"):
        return None
    if mode == "function" and not function:
        raise InvalidArgument("tool_choice names no function", param="tool_choice")
    schema = call_schema(parameters, function if mode == "function" else "")
    if response_format_set:
        raise InvalidArgument(
            "response_format cannot be combined with a tool_choice that requires a call "
            "(the answer is then the call's JSON)",
            param="response_format",
        )
    return schema


def call_from_json(text: str, names: Collection[str]) -> ParsedCall | None:
    """A call written as ``{"name": ..., "arguments": {...}}`` (Llama 3's ``parameters``
    also read), or None when ``text`` is not one to a known tool."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    arguments = value.get("arguments", value.get("parameters", {}))
    if not isinstance(name, str) or name not in names:
        return None
    if isinstance(arguments, str):
        # Some models write the arguments as a JSON string, as OpenAI's wire format does.
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(name, json.dumps(arguments, ensure_ascii=False))


class ToolCallScanner:
    """Streamed model text in, plain text and ``ParsedCall``s out, in order.

    Text is passed on as soon as it cannot be the start of a call block; a block is held
    until it closes. Whitespace between blocks is dropped (it separates calls)."""

    def __init__(self, names: Collection[str]) -> None:
        self.names = set(names)
        self._pending = ""
        self._in_call = False
        self.calls = 0

    def feed(self, text: str) -> list[str | ParsedCall]:
        self._pending += text
        out: list[str | ParsedCall] = []
        while True:
            if self._in_call:
                end = self._pending.find(CALL_CLOSE)
                if end < 0:
                    return out
                body = self._pending[:end]
                self._pending = self._pending[end + len(CALL_CLOSE) :]
                self._in_call = False
                self._emit_call(body, closed=True, out=out)
                continue
            start = self._pending.find(CALL_OPEN)
            if start >= 0:
                self._text(self._pending[:start], out)
                self._pending = self._pending[start + len(CALL_OPEN) :]
                self._in_call = True
                continue
            # Keep back what could be the beginning of "<tool_call>".
            keep = _partial_suffix(self._pending, CALL_OPEN)
            self._text(self._pending[: len(self._pending) - keep], out)
            self._pending = self._pending[len(self._pending) - keep :]
            return out

    def finish(self) -> list[str | ParsedCall]:
        """What is left when the model stops: a block it did not close is a call if its
        JSON is whole (models may end on EOS right after it), text otherwise."""
        out: list[str | ParsedCall] = []
        rest, self._pending = self._pending, ""
        if self._in_call:
            self._in_call = False
            self._emit_call(rest, closed=False, out=out)
        else:
            self._text(rest, out)
        return out

    def _emit_call(self, body: str, *, closed: bool, out: list[str | ParsedCall]) -> None:
        call = call_from_json(body.strip(), self.names)
        if call is None:
            self._text(CALL_OPEN + body + (CALL_CLOSE if closed else ""), out, raw=True)
            return
        self.calls += 1
        out.append(call)

    def _text(self, text: str, out: list[str | ParsedCall], raw: bool = False) -> None:
        if not text:
            return
        if self.calls and not raw and not text.strip():
            return  # the line breaks between two calls
        if out and isinstance(out[-1], str):
            out[-1] += text
        else:
            out.append(text)


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that ``marker`` starts with."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class CallReader:
    """One answer's text in, text and calls out, for either way of calling: ``forced``
    (tool_choice "required" or a function) holds the whole answer and reads it at the end
    as one call's JSON (text if it is not one: cut off by max_tokens, say); otherwise calls
    are scanned out of the text as it streams (ToolCallScanner)."""

    def __init__(self, names: Collection[str], *, forced: bool) -> None:
        self.names = set(names)
        self.forced = forced
        self._scanner = ToolCallScanner(self.names)
        self._held: list[str] = []
        self.calls = 0

    def feed(self, text: str) -> list[str | ParsedCall]:
        if self.forced:
            self._held.append(text)
            return []
        return self._counted(self._scanner.feed(text))

    def finish(self) -> list[str | ParsedCall]:
        if not self.forced:
            return self._counted(self._scanner.finish())
        text, self._held = "".join(self._held), []
        call = call_from_json(text, self.names)
        return self._counted([call] if call else [text] if text else [])

    def _counted(self, pieces: list[str | ParsedCall]) -> list[str | ParsedCall]:
        self.calls += sum(isinstance(p, ParsedCall) for p in pieces)
        return pieces


def json_arguments(arguments_json: str) -> Any:
    """A call's arguments as chat templates render them: the object (they apply tojson to
    it); text that is not JSON as it is."""
    try:
        return json.loads(arguments_json)
    except json.JSONDecodeError:
        return arguments_json

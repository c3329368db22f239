"""Tool calls (OpenAI function calling) the same way in every inference service.

Two ways a model's answer becomes tool calls:

- ``tool_choice`` "required" or a named function: the answer is decoded under the JSON
  schema of one call (``call_schema``), so it *is* a call, whatever the model; it is read
  with ``call_from_json``.
- "auto": the model decides, writing calls in the format it was trained on (a
  ``CallFormat``, chosen per model by ``choose_call_format``): Hermes' —
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call — which
  Qwen 2.5/3, Hermes 2/3 and most tool-tuned models use; Liquid's LFM2 —
  ``<|tool_call_start|>[get_weather(city="Paris"), ...]<|tool_call_end|>``, Python call
  syntax, several calls per block; or DeepSeek's (V3 and V3.1) — one "tool calls" block
  of "tool call" items between its own marker tokens (written with fullwidth bars).
  ``ToolCallScanner`` splits streamed text into plain text and calls as it arrives; text
  that only looks like a call (an unknown function, a body that does not parse, a block cut
  off by max_tokens) is passed on as text: nothing the model wrote is dropped.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lalo_common.errors import InvalidArgument

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
    return _call_from_value(value, names)


def _call_from_value(value: Any, names: Collection[str]) -> ParsedCall | None:
    """``call_from_json`` on an already parsed value."""
    if not isinstance(value, dict):
        return None
    return _call(value.get("name"), value.get("arguments", value.get("parameters", {})), names)


def _call(name: Any, arguments: Any, names: Collection[str]) -> ParsedCall | None:
    """A call to a known tool with an object of arguments (or the JSON text of one: some
    models write them as a string, as OpenAI's wire format does); None otherwise."""
    if not isinstance(name, str) or name not in names:
        return None
    if isinstance(arguments, str):
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

    def __init__(self, names: Collection[str], call_format: CallFormat | None = None) -> None:
        self.names = set(names)
        self.format = call_format or HERMES
        self._pending = ""
        self._in_call = False
        self._gap = ""
        self.calls = 0

    def feed(self, text: str) -> list[str | ParsedCall]:
        self._pending += text
        out: list[str | ParsedCall] = []
        opening, closing = self.format.opening, self.format.closing
        while True:
            if self._in_call:
                end = self._pending.find(closing)
                if end < 0:
                    return out
                body = self._pending[:end]
                self._pending = self._pending[end + len(closing) :]
                self._in_call = False
                self._emit_call(body, closed=True, out=out)
                continue
            start = self._pending.find(opening)
            if start >= 0:
                self._text(self._pending[:start], out)
                self._pending = self._pending[start + len(opening) :]
                self._in_call = True
                continue
            # Keep back what could be the beginning of the opening marker.
            keep = _partial_suffix(self._pending, opening)
            self._text(self._pending[: len(self._pending) - keep], out)
            self._pending = self._pending[len(self._pending) - keep :]
            return out

    def finish(self) -> list[str | ParsedCall]:
        """What is left when the model stops: a block it did not close is a call if its
        body is whole (models may end on EOS right after it), text otherwise."""
        out: list[str | ParsedCall] = []
        rest, self._pending = self._pending, ""
        if self._in_call:
            self._in_call = False
            self._emit_call(rest, closed=False, out=out)
        else:
            self._text(rest, out)
        return out

    def _emit_call(self, body: str, *, closed: bool, out: list[str | ParsedCall]) -> None:
        calls = self.format.read(body.strip(), self.names)
        if not calls:
            closing = self.format.closing if closed else ""
            self._text(self.format.opening + body + closing, out, raw=True)
            return
        self._gap = ""
        self.calls += len(calls)
        out.extend(calls)

    def _text(self, text: str, out: list[str | ParsedCall], raw: bool = False) -> None:
        if not text:
            return
        if self.calls:
            # Whitespace after a call is held: dropped if another call (or the end) follows
            # (the line breaks between calls), kept if more text does.
            text, self._gap = self._gap + text, ""
            if not raw and not text.strip():
                self._gap = text
                return
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

    def __init__(
        self, names: Collection[str], *, forced: bool, call_format: CallFormat | None = None
    ) -> None:
        self.names = set(names)
        self.forced = forced
        self._scanner = ToolCallScanner(self.names, call_format)
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


def template_calls(calls: Iterable[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """An assistant turn's calls ((id, name, arguments JSON) each) as chat templates take
    them: OpenAI's shape with the arguments as the object (templates apply tojson)."""
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json_arguments(arguments)},
        }
        for call_id, name, arguments in calls
    ]


# A made-up call no real conversation has: a template that renders an assistant turn's
# tool_calls writes its name.
_PROBE_CALL = "lalo_probe_call_5c1e"


def renders_tool_calls(render: Callable[[list[dict[str, Any]]], str]) -> bool:
    """Whether a chat template (``render``: messages to text) shows an assistant turn's
    ``tool_calls``; LFM2's shows only content. A template that refuses the probe is taken
    not to: its calls are then written into the content, which every template shows."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": template_calls([("call_0", _PROBE_CALL, "{}")]),
        },
    ]
    try:
        return _PROBE_CALL in render(messages)
    except Exception:  # the template's own error (Jinja's, a tokenizer's): not rendered
        return False


def json_arguments(arguments_json: str) -> Any:
    """A call's arguments as chat templates render them: the object (they apply tojson to
    it); text that is not JSON as it is."""
    try:
        return json.loads(arguments_json)
    except json.JSONDecodeError:
        return arguments_json


# --- The formats models write calls in ------------------------------------------------------


@dataclass(frozen=True)
class CallFormat:
    """How one family of models writes calls in its text: a block between two markers whose
    body ``read`` turns into calls (None: not a call after all), and how a conversation's
    earlier calls are written back (``write``) for chat templates that only render
    ``content``."""

    name: str
    opening: str
    closing: str
    read: Callable[[str, Collection[str]], list[ParsedCall] | None]
    write: Callable[[Sequence[tuple[str, str]]], str]
    # Where earlier calls go beside an answer's text: LFM2 writes them first.
    calls_first: bool
    # Markers inside a block (DeepSeek's), which a tokenizer must also render as text.
    inner_markers: tuple[str, ...] = ()

    @property
    def markers(self) -> tuple[str, ...]:
        return (self.opening, self.closing, *self.inner_markers)


def _read_hermes(body: str, names: Collection[str]) -> list[ParsedCall] | None:
    call = call_from_json(body, names)
    return [call] if call else None


def _write_hermes(calls: Sequence[tuple[str, str]]) -> str:
    return "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": name, "arguments": json_arguments(arguments)}, ensure_ascii=False)
        + "\n</tool_call>"
        for name, arguments in calls
    )


_JSON_CALLS = re.compile(r"^(\{|\[\s*\{)")


def _read_pythonic(body: str, names: Collection[str]) -> list[ParsedCall] | None:
    """``[f(a=1, b="x"), g()]`` (a lone ``f(...)`` too), each a keyword-argument call to a
    known tool with literal values; JSON calls (LFM2 writes them when asked to) also read.
    The body is parsed, never evaluated."""
    if _JSON_CALLS.match(body):
        return _read_json_calls(body, names)
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    nodes = tree.elts if isinstance(tree, ast.List) else [tree]
    calls: list[ParsedCall] = []
    for node in nodes:
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in names
            and not node.args
        ):
            return None
        arguments: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg is None:  # **kwargs
                return None
            try:
                arguments[keyword.arg] = _literal(keyword.value)
            except (ValueError, RecursionError):
                return None
        try:
            arguments_json = json.dumps(arguments, ensure_ascii=False, allow_nan=False)
        except ValueError:  # inf or nan: not JSON
            return None
        calls.append(ParsedCall(node.func.id, arguments_json))
    return calls or None


def _read_json_calls(body: str, names: Collection[str]) -> list[ParsedCall] | None:
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    calls = [
        _call_from_value(item, names) for item in (value if isinstance(value, list) else [value])
    ]
    if not calls or None in calls:
        return None
    return [call for call in calls if call is not None]


# The names a model may write for JSON's constants in Python call syntax.
_NAMED_CONSTANTS: dict[str, Any] = {
    "True": True,
    "False": False,
    "None": None,
    "true": True,
    "false": False,
    "null": None,
}


def _literal(node: ast.expr) -> Any:
    """A JSON value from a literal in Python syntax; ValueError for anything else (a name,
    a call, an operation): nothing is evaluated."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        number = node.operand.value
        assert isinstance(number, (int, float))
        return -number if isinstance(node.op, ast.USub) else number
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for key, item in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ValueError("object keys must be strings")
            out[key.value] = _literal(item)
        return out
    raise ValueError(f"not a literal: {type(node).__name__}")


def _python_literal(value: Any) -> str:
    """A JSON value written in Python syntax (``True``, ``None``; strings as JSON writes
    them, which Python reads alike)."""
    if value is True:
        return "True"
    if value is False:
        return "False"
    if value is None:
        return "None"
    if isinstance(value, list):
        return "[" + ", ".join(_python_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(k), ensure_ascii=False)}: {_python_literal(v)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    return json.dumps(value, ensure_ascii=False)


def _write_pythonic(calls: Sequence[tuple[str, str]]) -> str:
    written = []
    for name, arguments_json in calls:
        arguments = json_arguments(arguments_json)
        if isinstance(arguments, dict):
            args = ", ".join(f"{key}={_python_literal(value)}" for key, value in arguments.items())
        else:  # not an object: shown as the model would see a mistaken call, as text
            args = repr(arguments)
        written.append(f"{name}({args})")
    return "<|tool_call_start|>[" + ", ".join(written) + "]<|tool_call_end|>"


_DS_CALLS_BEGIN = "<\uff5ctool\u2581calls\u2581begin\uff5c>"
_DS_CALLS_END = "<\uff5ctool\u2581calls\u2581end\uff5c>"
_DS_CALL_BEGIN = "<\uff5ctool\u2581call\u2581begin\uff5c>"
_DS_CALL_END = "<\uff5ctool\u2581call\u2581end\uff5c>"
_DS_SEP = "<\uff5ctool\u2581sep\uff5c>"
_DS_CALL = re.compile(
    re.escape(_DS_CALL_BEGIN) + "(.*?)" + re.escape(_DS_SEP) + "(.*?)" + re.escape(_DS_CALL_END),
    re.DOTALL,
)
_JSON_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.DOTALL)


def _read_deepseek(body: str, names: Collection[str]) -> list[ParsedCall] | None:
    """DeepSeek-V3's calls (``function<sep>name`` then the arguments in a json code fence)
    or V3.1's (``name<sep>`` then the arguments); anything else in the block: not calls."""
    calls: list[ParsedCall] = []
    position = 0
    for match in _DS_CALL.finditer(body):
        if body[position : match.start()].strip():
            return None
        position = match.end()
        head, tail = match.group(1).strip(), match.group(2).strip()
        if head == "function":  # V3: the name on the first line, then the fenced JSON
            name, _, arguments = tail.partition("\n")
            fenced = _JSON_FENCE.match(arguments.strip())
            arguments = fenced.group(1) if fenced else arguments
        else:  # V3.1
            name, arguments = head, tail
        call = _call(name.strip(), arguments.strip() or "{}", names)
        if call is None:
            return None
        calls.append(call)
    if body[position:].strip():
        return None
    return calls or None


def _write_deepseek(calls: Sequence[tuple[str, str]]) -> str:
    written = "".join(
        f"{_DS_CALL_BEGIN}function{_DS_SEP}{name}\n```json\n{arguments}\n```{_DS_CALL_END}"
        for name, arguments in calls
    )
    return _DS_CALLS_BEGIN + written + _DS_CALLS_END


HERMES = CallFormat(
    name="hermes",
    opening="<tool_call>",
    closing="</tool_call>",
    read=_read_hermes,
    write=_write_hermes,
    calls_first=False,
)
LFM2 = CallFormat(
    name="lfm2",
    opening="<|tool_call_start|>",
    closing="<|tool_call_end|>",
    read=_read_pythonic,
    write=_write_pythonic,
    calls_first=True,
)
DEEPSEEK = CallFormat(
    name="deepseek",
    opening=_DS_CALLS_BEGIN,
    closing=_DS_CALLS_END,
    read=_read_deepseek,
    write=_write_deepseek,
    calls_first=False,
    inner_markers=(_DS_CALL_BEGIN, _DS_SEP, _DS_CALL_END),
)
# The formats a model is checked for, most distinctive first; Hermes' is the default.
CALL_FORMATS = (LFM2, DEEPSEEK, HERMES)


def choose_call_format(template: str, is_one_token: Callable[[str], bool]) -> CallFormat:
    """The format a model writes calls in: the first whose block markers are each one token
    of its vocabulary (tool-tuned models learn their markers as tokens) or whose opening
    marker its chat template writes (to render earlier calls); Hermes' otherwise."""
    for fmt in CALL_FORMATS:
        if fmt.opening in template or (is_one_token(fmt.opening) and is_one_token(fmt.closing)):
            return fmt
    return HERMES


def with_calls_written(content: str, calls: Sequence[tuple[str, str]], fmt: CallFormat) -> str:
    """An assistant turn's text with its calls written in the model's format, for chat
    templates that render only ``content`` (LFM2's: the model must see what it called)."""
    if not calls:
        return content
    written = fmt.write(calls)
    if not content:
        return written
    return written + content if fmt.calls_first else content + "\n" + written

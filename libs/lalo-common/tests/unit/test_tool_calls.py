"""Reading tool calls out of model text, and the schema a forced call is decoded under."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from lalo_common.errors import InvalidArgument
from lalo_common.tool_calls import (
    ParsedCall,
    ToolCallScanner,
    call_from_json,
    call_schema,
    forced_call_schema,
    tool_parameters,
)

NAMES = {"get_weather", "get_time"}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def scan(pieces: list[str]) -> list[str | tuple[str, dict[str, object]]]:
    scanner = ToolCallScanner(NAMES)
    out: list[str | ParsedCall] = []
    for piece in pieces:
        out.extend(scanner.feed(piece))
    out.extend(scanner.finish())
    merged: list[str | tuple[str, dict[str, object]]] = []
    for item in out:
        if isinstance(item, ParsedCall):
            merged.append((item.name, json.loads(item.arguments_json)))
        elif merged and isinstance(merged[-1], str):
            merged[-1] += item
        else:
            merged.append(item)
    return merged


def every_split(text: str) -> list[list[str]]:
    return [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]


@pytest.mark.parametrize("pieces", every_split("Let me look.\n" + CALL))
def test_a_call_is_read_however_the_text_is_split(pieces: list[str]) -> None:
    assert scan(pieces) == ["Let me look.\n", ("get_weather", {"city": "Paris"})]


def test_plain_text_passes_through_and_is_not_held_longer_than_needed() -> None:
    scanner = ToolCallScanner(NAMES)
    assert scanner.feed("The answer is 4 <") == ["The answer is 4 "]  # "<" may start a call
    assert scanner.feed("b>bold</b>") == ["<b>bold</b>"]
    assert scanner.finish() == []


def test_several_calls_and_the_whitespace_between_them() -> None:
    two = CALL + "\n" + CALL.replace("get_weather", "get_time").replace('"city": "Paris"', "")
    assert scan([two]) == [("get_weather", {"city": "Paris"}), ("get_time", {})]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_stock", "arguments": {}}\n</tool_call>',  # unknown tool
        "<tool_call>\n{not json}\n</tool_call>",
        '<tool_call>\n{"name": "get_weather", "arguments": [1]}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',  # cut off
        "a stray <tool_call",
    ],
)
def test_what_only_looks_like_a_call_is_kept_as_text(text: str) -> None:
    assert scan([text]) == [text]


def test_an_unclosed_but_whole_call_at_the_end_is_a_call() -> None:
    assert scan([CALL.removesuffix("</tool_call>")]) == [("get_weather", {"city": "Paris"})]


def test_call_from_json_reads_the_usual_spellings() -> None:
    as_string = call_from_json('{"name": "get_time", "arguments": "{\\"h\\": 1}"}', NAMES)
    assert as_string is not None
    assert json.loads(as_string.arguments_json) == {"h": 1}
    llama = call_from_json('{"name": "get_time", "parameters": {"h": 2}}', NAMES)
    assert llama is not None
    assert json.loads(llama.arguments_json) == {"h": 2}
    assert call_from_json('{"name": "get_time"}', NAMES) is not None  # no arguments: {}
    assert call_from_json("[]", NAMES) is None
    assert call_from_json('{"name": 3}', NAMES) is None


def test_call_ids_are_unique() -> None:
    assert len({ParsedCall("f", "{}").id for _ in range(100)}) == 100


def tool(name: str, parameters: str = "") -> SimpleNamespace:
    return SimpleNamespace(name=name, parameters_json=parameters)


def test_call_schema_for_one_tool_or_any_of_several() -> None:
    parameters = tool_parameters([tool("a", '{"type": "object"}'), tool("b")])
    assert parameters == {"a": {"type": "object"}, "b": {}}
    one = call_schema(parameters, "b")
    assert one["properties"]["name"] == {"const": "b"}
    assert one["properties"]["arguments"] == {"type": "object"}  # none given: any object
    assert [o["properties"]["name"]["const"] for o in call_schema(parameters)["anyOf"]] == [
        "a",
        "b",
    ]


@pytest.mark.parametrize(
    ("tools", "only", "param"),
    [
        ([], "", "tools"),
        ([tool("a")], "z", "tool_choice"),
        ([tool("a", "{bad")], "", "tools"),
        ([tool("a", '"string"')], "", "tools"),
        ([tool("a"), tool("a")], "", "tools"),
        ([tool('a b"<c>')], "", "tools"),  # a name is written into prompts and grammars
        ([tool("x" * 65)], "", "tools"),
    ],
)
def test_bad_tools_are_named(tools: list[SimpleNamespace], only: str, param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        call_schema(tool_parameters(tools), only)
    assert caught.value.param == param


def test_forced_call_schema_only_when_a_call_is_required() -> None:
    parameters = {"a": {"type": "object"}, "b": {}}
    assert forced_call_schema(parameters, "auto") is None
    assert forced_call_schema(parameters, "none") is None
    required = forced_call_schema(parameters, "required")
    assert required is not None
    assert len(required["anyOf"]) == 2
    named = forced_call_schema(parameters, "function", "b")
    assert named is not None
    assert named["properties"]["name"] == {"const": "b"}
    for mode, function, with_format, param in [
        ("function", "", False, "tool_choice"),
        ("function", "z", False, "tool_choice"),
        ("required", "", True, "response_format"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            forced_call_schema(parameters, mode, function, response_format_set=with_format)
        assert caught.value.param == param

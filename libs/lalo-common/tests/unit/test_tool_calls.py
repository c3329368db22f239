"""Reading tool calls out of model text, and the schema a forced call is decoded under."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from lalo_common.errors import InvalidArgument
from lalo_common.tool_calls import (
    DEEPSEEK,
    HERMES,
    LFM2,
    CallFormat,
    ParsedCall,
    ToolCallScanner,
    call_from_json,
    call_schema,
    choose_call_format,
    forced_call_schema,
    renders_tool_calls,
    template_calls,
    tool_parameters,
    with_calls_written,
)

NAMES = {"get_weather", "get_time"}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def scan(
    pieces: list[str], call_format: CallFormat = HERMES
) -> list[str | tuple[str, dict[str, object]]]:
    scanner = ToolCallScanner(NAMES, call_format)
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


# --- LFM2's Python call syntax ----------------------------------------------------------------

LFM2_CALL = '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>'


@pytest.mark.parametrize("pieces", every_split(LFM2_CALL + "Checking the weather."))
def test_an_lfm2_call_is_read_however_the_text_is_split(pieces: list[str]) -> None:
    # LFM2 writes its calls first, then says what it is doing.
    assert scan(pieces, LFM2) == [("get_weather", {"city": "Paris"}), "Checking the weather."]


def test_one_lfm2_block_holds_several_calls() -> None:
    text = '<|tool_call_start|>[get_weather(city="Oslo"), get_time(zone="CET")]<|tool_call_end|>'
    assert scan([text], LFM2) == [("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "CET"})]


def test_lfm2_argument_values_become_json() -> None:
    body = (
        'get_weather(city="Q\\"uote\\u00e9", n=-3, x=2.5, flags=[True, false, None, null],'
        ' nested={\'a\': (1, 2), "b": {"c": +1}})'
    )
    assert scan([f"<|tool_call_start|>[{body}]<|tool_call_end|>"], LFM2) == [
        (
            "get_weather",
            {
                "city": 'Q"uote\u00e9',
                "n": -3,
                "x": 2.5,
                "flags": [True, False, None, None],
                "nested": {"a": [1, 2], "b": {"c": 1}},
            },
        )
    ]


def test_lfm2_json_calls_are_read_too() -> None:
    # Asked for JSON in the system prompt, LFM2 writes the calls as JSON in the same block.
    one = '<|tool_call_start|>{"name": "get_time", "arguments": {"zone": "UTC"}}<|tool_call_end|>'
    many = (
        '<|tool_call_start|>[{"name": "get_time", "arguments": {}}, {"name": "get_weather"}]'
        "<|tool_call_end|>"
    )
    assert scan([one], LFM2) == [("get_time", {"zone": "UTC"})]
    assert scan([many], LFM2) == [("get_time", {}), ("get_weather", {})]


@pytest.mark.parametrize(
    "body",
    [
        'get_stock(symbol="X")',  # unknown tool
        '[get_weather(city="Oslo"), get_stock()]',  # one unknown tool spoils the block
        '[get_weather("Oslo")]',  # positional: which parameter is it?
        "[get_weather(**{'city': 'Oslo'})]",
        '[get_weather(city=__import__("os").system("id"))]',  # never evaluated
        "[get_weather(city=city_name)]",
        "[get_weather(n=1 + 2)]",
        "[get_weather(n=float('nan'))]",
        "[get_weather(n=1e999)]",  # inf is not JSON
        "[get_weather(d={1: 2})]",  # JSON object keys are strings
        "[get_weather(d={'a', 'b'})]",  # a set
        "[os.system('id')]",
        '[get_weather(city="Pa',  # cut off
        "[" * 5000,  # deeper than the parser goes
        '[{"name": "get_stock"}]',
        "{not json",
        "",
    ],
)
def test_what_only_looks_like_an_lfm2_call_is_kept_as_text(body: str) -> None:
    text = f"<|tool_call_start|>{body}<|tool_call_end|>"
    assert scan([text], LFM2) == [text]


def test_an_unclosed_lfm2_block_is_a_call_only_when_whole() -> None:
    whole = '<|tool_call_start|>[get_time(zone="UTC")]'
    assert scan([whole], LFM2) == [("get_time", {"zone": "UTC"})]
    assert scan([whole[:-3]], LFM2) == [whole[:-3]]


def test_the_hermes_marker_means_nothing_to_an_lfm2_model() -> None:
    assert scan([CALL], LFM2) == [CALL]
    assert scan([LFM2_CALL], HERMES) == [LFM2_CALL]


ARGUMENTS = [
    {},
    {"city": "Paris"},
    {"q": 'say "hi"\n\\ é ✓', "n": -1, "x": 0.25, "ok": True, "none": None},
    {"items": [1, [2, {"deep": False}]], "map": {"k": "v", "with space": 1}},
]


@pytest.mark.parametrize("call_format", [HERMES, LFM2, DEEPSEEK], ids=lambda f: f.name)
@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_written_calls_read_back_as_the_same_calls(
    call_format: CallFormat, arguments: dict[str, object]
) -> None:
    calls = [("get_weather", json.dumps(arguments)), ("get_time", "{}")]
    written = call_format.write(calls)
    assert scan([written], call_format) == [("get_weather", arguments), ("get_time", {})]


def test_calls_are_written_beside_the_text_where_the_model_puts_them() -> None:
    calls = [("get_time", '{"zone": "UTC"}')]
    assert with_calls_written("Checking.", calls, LFM2) == (
        '<|tool_call_start|>[get_time(zone="UTC")]<|tool_call_end|>Checking.'
    )
    assert with_calls_written("Checking.", calls, HERMES) == (
        'Checking.\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
    )
    assert with_calls_written("Just text.", [], LFM2) == "Just text."
    assert with_calls_written("", calls, HERMES).startswith("<tool_call>")


@pytest.mark.parametrize("pieces", every_split(CALL + "\nDone, it is sunny."))
def test_text_after_a_call_keeps_its_spaces_however_it_streams(pieces: list[str]) -> None:
    # Whitespace alone after a call may be the gap before another call; it is held, not
    # dropped, until the text that follows shows it was part of the answer.
    assert scan(pieces) == [("get_weather", {"city": "Paris"}), "\nDone, it is sunny."]


# --- DeepSeek's markers --------------------------------------------------------------------

CALLS_BEGIN, CALLS_END = DEEPSEEK.opening, DEEPSEEK.closing
CALL_BEGIN, SEP, CALL_END = DEEPSEEK.inner_markers
V3_CALL = f'{CALL_BEGIN}function{SEP}get_weather\n```json\n{{"city": "Paris"}}\n```{CALL_END}'
V31_CALL = f'{CALL_BEGIN}get_time{SEP}{{"zone": "UTC"}}{CALL_END}'


def test_deepseek_markers_are_its_own_tokens() -> None:
    assert CALLS_BEGIN == "<\uff5ctool\u2581calls\u2581begin\uff5c>"
    assert SEP == "<\uff5ctool\u2581sep\uff5c>"


@pytest.mark.parametrize("pieces", every_split(f"Let me check.{CALLS_BEGIN}{V3_CALL}{CALLS_END}"))
def test_a_deepseek_v3_call_is_read_however_the_text_is_split(pieces: list[str]) -> None:
    assert scan(pieces, DEEPSEEK) == ["Let me check.", ("get_weather", {"city": "Paris"})]


def test_deepseek_v3_and_v31_calls_in_one_block() -> None:
    text = f"{CALLS_BEGIN}{V3_CALL}\n{V31_CALL}{CALLS_END}"
    assert scan([text], DEEPSEEK) == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "UTC"}),
    ]
    # The model may stop (EOS) before closing the block.
    assert scan([f"{CALLS_BEGIN}{V31_CALL}"], DEEPSEEK) == [("get_time", {"zone": "UTC"})]


@pytest.mark.parametrize(
    "body",
    [
        f"{CALL_BEGIN}get_stock{SEP}{{}}{CALL_END}",  # unknown tool
        f"{CALL_BEGIN}get_time{SEP}{{not json}}{CALL_END}",
        f"{CALL_BEGIN}get_time{SEP}[1]{CALL_END}",
        f"stray words {V31_CALL}",
        f"{V31_CALL} and more",
        f"{CALL_BEGIN}get_time{SEP}{{}}",  # a call cut off
        # Arguments that are not one JSON object cannot smuggle in another call's name.
        f'{CALL_BEGIN}get_weather{SEP}{{}}, "name": "get_time"{CALL_END}',
        "",
    ],
)
def test_what_only_looks_like_a_deepseek_call_is_kept_as_text(body: str) -> None:
    text = f"{CALLS_BEGIN}{body}{CALLS_END}"
    assert scan([text], DEEPSEEK) == [text]


@pytest.mark.parametrize(
    ("template", "tokens", "expected"),
    [
        ("{{ messages }}", set(), HERMES),  # nothing known: Hermes' format, the commonest
        ("... <tool_call> ...", {"<tool_call>", "</tool_call>"}, HERMES),  # Qwen's
        ("List of tools: <|tool_list_start|>", {"<|tool_call_start|>", "<|tool_call_end|>"}, LFM2),
        (f"{{{{ '{CALLS_BEGIN}' }}}}", set(), DEEPSEEK),  # DeepSeek's template writes its calls
        ("", {CALLS_BEGIN, CALLS_END}, DEEPSEEK),
        ("", {"<|tool_call_start|>"}, HERMES),  # one marker is not enough
    ],
)
def test_the_call_format_is_chosen_from_the_template_and_vocabulary(
    template: str, tokens: set[str], expected: CallFormat
) -> None:
    assert choose_call_format(template, tokens.__contains__) is expected


def test_a_false_block_after_a_call_keeps_the_space_before_it() -> None:
    bogus = "<tool_call>\n{not json}\n</tool_call>"
    assert scan([CALL, "\n", bogus]) == [("get_weather", {"city": "Paris"}), "\n" + bogus]


def test_history_calls_in_the_shape_templates_take() -> None:
    assert template_calls([("call_1", "get_time", '{"zone": "UTC"}'), ("call_2", "f", "oops")]) == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_time", "arguments": {"zone": "UTC"}},
        },
        {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "oops"}},
    ]


def test_whether_a_template_renders_history_calls_is_probed() -> None:
    def shows_calls(messages: list[dict[str, object]]) -> str:
        return json.dumps(messages)

    def content_only(messages: list[dict[str, object]]) -> str:
        return "".join(str(m["content"]) for m in messages)

    def refuses(messages: list[dict[str, object]]) -> str:
        raise RuntimeError("Conversation roles must alternate")

    assert renders_tool_calls(shows_calls)
    assert not renders_tool_calls(content_only)
    # Refused: its calls go into the content, which every template shows.
    assert not renders_tool_calls(refuses)

"""The registry: schema validation with JSON paths, allowlists, limits, timeouts, truncation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from lalo_tools.core import ErrorCode, Limits, ToolFailure, ToolResult
from lalo_tools.registry import RequestedLimits, ToolRegistry
from lalo_tools.tools.calculator import Calculator


class Echo:
    name = "echo"
    description = "returns its arguments"
    limits = Limits(timeout_s=1.0, max_output_bytes=1000, max_rows=50)
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": 5000},
            "items": {"type": "array", "items": {"type": "integer"}},
            "nested": {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 0}},
                "additionalProperties": False,
            },
            "sleep": {"type": "number"},
        },
        "required": ["text"],
        "additionalProperties": False,
    }

    def __init__(self) -> None:
        self.seen_limits: list[Limits] = []

    async def run(self, arguments: dict[str, Any], limits: Limits) -> ToolResult:
        self.seen_limits.append(limits)
        if arguments.get("sleep"):
            await asyncio.sleep(arguments["sleep"])
        if arguments["text"] == "fail":
            raise ToolFailure(ErrorCode.UPSTREAM_ERROR, "upstream down", retryable=True)
        return ToolResult(content=arguments, text=arguments["text"])


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def registry(echo: Echo) -> ToolRegistry:
    calc = Calculator(limits=Limits(2.0, 1000, 0))
    return ToolRegistry([echo, calc], max_arguments_bytes=2000)


async def test_ok_result(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", json.dumps({"text": "hi"}))
    assert outcome.error is None
    assert outcome.result is not None
    assert outcome.result.text == "hi"
    assert json.loads(outcome.result.content_json()) == {"text": "hi"}
    assert outcome.duration_ms >= 0


async def test_unknown_tool(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("keyboard", "{}")
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.UNKNOWN_TOOL
    assert "calculator" in outcome.error.message


async def test_allowlist(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", '{"text": "x"}', allowed_tools=["calculator"])
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.NOT_ALLOWED
    ok = await registry.invoke("echo", '{"text": "x"}', allowed_tools=["echo"])
    assert ok.error is None


@pytest.mark.parametrize(
    ("arguments", "path", "fragment"),
    [
        ("not json", "$", "not valid JSON"),
        ("[1, 2]", "$", "not of type 'object'"),
        ("{}", "$", "'text' is a required property"),
        ('{"text": 5}', "$.text", "not of type 'string'"),
        ('{"text": "a", "items": [1, "two"]}', "$.items[1]", "not of type 'integer'"),
        ('{"text": "a", "nested": {"n": -1}}', "$.nested.n", "minimum"),
        ('{"text": "a", "extra": 1}', "$", "Additional properties"),
    ],
)
async def test_schema_errors_are_structured(
    registry: ToolRegistry, arguments: str, path: str, fragment: str
) -> None:
    outcome = await registry.invoke("echo", arguments)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.INVALID_ARGUMENTS
    assert outcome.error.path == path
    assert fragment in outcome.error.message


async def test_empty_arguments_mean_empty_object(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", "")
    assert outcome.error is not None
    assert "'text' is a required property" in outcome.error.message


async def test_oversized_arguments(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", json.dumps({"text": "x" * 3000}))
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.LIMIT_EXCEEDED


async def test_deeply_nested_json_is_refused_cleanly(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", "[" * 900 + "]" * 900)
    assert outcome.error is not None
    assert outcome.error.code in (ErrorCode.INVALID_ARGUMENTS, ErrorCode.LIMIT_EXCEEDED)


async def test_tool_failure_passes_through(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", '{"text": "fail"}')
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.UPSTREAM_ERROR
    assert outcome.error.retryable


async def test_timeout_is_a_tool_error(registry: ToolRegistry) -> None:
    outcome = await registry.invoke(
        "echo", '{"text": "slow", "sleep": 5}', limits=RequestedLimits(timeout_s=0.05)
    )
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.TIMEOUT
    assert outcome.error.retryable


async def test_limits_can_only_be_lowered(registry: ToolRegistry, echo: Echo) -> None:
    await registry.invoke(
        "echo", '{"text": "a"}', limits=RequestedLimits(timeout_s=100, max_output_bytes=10**9)
    )
    await registry.invoke(
        "echo",
        '{"text": "a"}',
        limits=RequestedLimits(timeout_s=0.5, max_output_bytes=10, max_rows=3),
    )
    assert echo.seen_limits[0] == Limits(timeout_s=1.0, max_output_bytes=1000, max_rows=50)
    assert echo.seen_limits[1] == Limits(timeout_s=0.5, max_output_bytes=10, max_rows=3)


async def test_text_is_truncated_to_the_output_limit(registry: ToolRegistry) -> None:
    outcome = await registry.invoke(
        "echo", json.dumps({"text": "é" * 100}), limits=RequestedLimits(max_output_bytes=11)
    )
    assert outcome.result is not None
    assert outcome.result.truncated
    assert outcome.result.text == "é" * 5


def test_listing_and_duplicate_names(echo: Echo) -> None:
    registry = ToolRegistry([echo, Calculator(limits=Limits(1, 1, 0))])
    assert registry.names == ["calculator", "echo"]
    assert [t.name for t in registry.list(["echo", "nope"])] == ["echo"]
    with pytest.raises(ValueError, match="duplicate"):
        ToolRegistry([echo, echo])


def test_invalid_schema_is_refused_at_start_up() -> None:
    bad = Echo()
    bad.parameters = {"type": "no-such-type"}
    with pytest.raises(Exception, match="no-such-type"):
        ToolRegistry([bad])

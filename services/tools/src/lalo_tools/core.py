"""Domain types every tool shares: limits, results, structured tool errors, the Tool protocol.

A tool is a plain object with a name, a description, a JSON Schema for its arguments and an
async ``run``. It raises :class:`ToolFailure` for anything the planner should read (bad input,
a refused URL, a timeout); any other exception is a bug and becomes a gRPC INTERNAL status.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Protocol


class ErrorCode(enum.Enum):
    """Mirrors ``lalo.tools.v1.ToolError.Code`` (values are the wire numbers)."""

    INVALID_ARGUMENTS = 1
    NOT_ALLOWED = 2
    TIMEOUT = 3
    LIMIT_EXCEEDED = 4
    UPSTREAM_ERROR = 5
    EXECUTION_ERROR = 6
    UNKNOWN_TOOL = 7


class ToolFailure(Exception):
    """A tool call that failed in a way the caller (a planner) should read and act on."""

    def __init__(
        self, code: ErrorCode, message: str, *, path: str = "", retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"ToolFailure({self.code.name}, {self.message!r}, path={self.path!r})"


@dataclass(frozen=True)
class Limits:
    """Effective limits for one call (the server's ceiling, possibly lowered by the caller)."""

    timeout_s: float
    max_output_bytes: int
    max_rows: int

    def tightened(
        self,
        *,
        timeout_s: float | None = None,
        max_output_bytes: int | None = None,
        max_rows: int | None = None,
    ) -> Limits:
        """Lower limits to what the caller asked; a request above the ceiling is clamped."""

        def pick(ceiling: float, asked: float | None) -> float:
            if asked is None or asked <= 0:
                return ceiling
            return min(ceiling, asked)

        return Limits(
            timeout_s=pick(self.timeout_s, timeout_s),
            max_output_bytes=int(pick(self.max_output_bytes, max_output_bytes)),
            max_rows=int(pick(self.max_rows, max_rows)),
        )


@dataclass(frozen=True)
class ToolResult:
    content: Any
    text: str
    truncated: bool = False

    def content_json(self) -> str:
        return json.dumps(self.content, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class InvokeOutcome:
    """Exactly one of ``result`` and ``error`` is set."""

    result: ToolResult | None = None
    error: ToolFailure | None = None
    duration_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]
    # The ceiling for each call; callers may only lower it.
    limits: Limits

    async def run(self, arguments: dict[str, Any], limits: Limits) -> ToolResult: ...


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8 without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", errors="ignore"), True

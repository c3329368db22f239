"""The tool registry: lists tools and runs one call with validation, limits and error mapping.

Everything a planner can get wrong comes back as a :class:`ToolFailure` inside the outcome:
an unknown tool, arguments that are not JSON or fail the schema (with the JSON path of the
first error), a tool outside the workflow's allowlist, a timeout. Only bugs escape as
exceptions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.exceptions import best_match as best_schema_error

from lalo_tools.core import ErrorCode, InvokeOutcome, Limits, Tool, ToolFailure, truncate_utf8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallContext:
    """Correlation ids carried for logging only (the service keeps no state)."""

    request_id: str = ""
    workflow_id: str = ""
    step_id: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True)
class RequestedLimits:
    timeout_s: float | None = None
    max_output_bytes: int | None = None
    max_rows: int | None = None


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool], *, max_arguments_bytes: int = 64 * 1024) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        self._max_arguments_bytes = max_arguments_bytes
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"duplicate tool name {tool.name!r}")
            Draft202012Validator.check_schema(tool.parameters)
            self._tools[tool.name] = tool
            self._validators[tool.name] = Draft202012Validator(tool.parameters)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def list(self, names: Sequence[str] = ()) -> list[Tool]:
        wanted = set(names)
        return [self._tools[n] for n in self.names if not wanted or n in wanted]

    def parse_arguments(self, tool: Tool, arguments_json: str) -> dict[str, Any]:
        if len(arguments_json.encode("utf-8")) > self._max_arguments_bytes:
            raise ToolFailure(
                ErrorCode.LIMIT_EXCEEDED,
                f"arguments are larger than {self._max_arguments_bytes} bytes",
                path="$",
            )
        text = arguments_json.strip() or "{}"
        try:
            arguments = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ToolFailure(
                ErrorCode.INVALID_ARGUMENTS, f"arguments are not valid JSON: {exc}", path="$"
            ) from None
        error: ValidationError | None = best_schema_error(
            self._validators[tool.name].iter_errors(arguments)
        )
        if error is not None:
            raise ToolFailure(
                ErrorCode.INVALID_ARGUMENTS,
                f"arguments do not match the schema of {tool.name}: {error.message}",
                path=error.json_path,
            )
        if not isinstance(arguments, dict):  # the schemas all say "object"; belt and braces
            raise ToolFailure(ErrorCode.INVALID_ARGUMENTS, "arguments must be an object", path="$")
        return arguments

    async def invoke(
        self,
        name: str,
        arguments_json: str,
        *,
        limits: RequestedLimits = RequestedLimits(),
        allowed_tools: Sequence[str] = (),
        context: CallContext = CallContext(),
    ) -> InvokeOutcome:
        started = time.perf_counter()
        outcome = await self._invoke(name, arguments_json, limits, allowed_tools)
        duration_ms = (time.perf_counter() - started) * 1000
        log.info(
            "tool call %s: %s in %.1f ms (request=%s workflow=%s step=%s key=%s)",
            name,
            "ok" if outcome.error is None else outcome.error.code.name,
            duration_ms,
            context.request_id,
            context.workflow_id,
            context.step_id,
            context.idempotency_key,
        )
        return InvokeOutcome(result=outcome.result, error=outcome.error, duration_ms=duration_ms)

    async def _invoke(
        self,
        name: str,
        arguments_json: str,
        requested: RequestedLimits,
        allowed_tools: Sequence[str],
    ) -> InvokeOutcome:
        tool = self._tools.get(name)
        if tool is None:
            return InvokeOutcome(
                error=ToolFailure(
                    ErrorCode.UNKNOWN_TOOL, f"no tool named {name!r}; available: {self.names}"
                )
            )
        if allowed_tools and name not in allowed_tools:
            return InvokeOutcome(
                error=ToolFailure(
                    ErrorCode.NOT_ALLOWED, f"tool {name!r} is not in this workflow's allowlist"
                )
            )
        limits: Limits = tool.limits.tightened(
            timeout_s=requested.timeout_s,
            max_output_bytes=requested.max_output_bytes,
            max_rows=requested.max_rows,
        )
        try:
            arguments = self.parse_arguments(tool, arguments_json)
            async with asyncio.timeout(limits.timeout_s):
                result = await tool.run(arguments, limits)
        except ToolFailure as failure:
            return InvokeOutcome(error=failure)
        except TimeoutError:
            return InvokeOutcome(
                error=ToolFailure(
                    ErrorCode.TIMEOUT,
                    f"{name} did not finish within {limits.timeout_s:g} s",
                    retryable=True,
                )
            )
        # A tool that ignores max_output_bytes for its text still cannot exceed it.
        text, cut = truncate_utf8(result.text, limits.max_output_bytes)
        if cut:
            result = type(result)(content=result.content, text=text, truncated=True)
        return InvokeOutcome(result=result)

"""Checks of OpenAI's wire format, shared by the gateway's unit tests and the contract suite.

OpenAI clients depend on exact shapes: errors are ``{"error": {"message", "type", "param",
"code"}}`` with exactly those keys, and a stream is ``data: {json}`` events separated by
blank lines that end with ``data: [DONE]``. These helpers assert those shapes and hand back
the parsed payloads so tests can check the content.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

ERROR_KEYS = frozenset({"message", "type", "param", "code"})
_UNSET: Any = object()


class HTTPResponse(Protocol):
    """What httpx's and Starlette's TestClient responses both offer."""

    status_code: int

    @property
    def headers(self) -> Any: ...

    def json(self) -> Any: ...


def assert_openai_error(
    response: HTTPResponse,
    status: int,
    *,
    code: str | None = _UNSET,
    param: str | None = _UNSET,
    type_: str = _UNSET,
) -> dict[str, Any]:
    """Asserts the status and OpenAI's error shape; returns the inner ``error`` object.

    ``code``, ``param`` and ``type_`` are compared only when given (``None`` means the field
    must be JSON null)."""
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/json"), content_type
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str), error
    assert error["message"].strip(), error
    assert isinstance(error["type"], str), error
    assert error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    if code is not _UNSET:
        assert error["code"] == code, error
    if param is not _UNSET:
        assert error["param"] == param, error
    if type_ is not _UNSET:
        assert error["type"] == type_, error
    return dict(error)


def parse_sse(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Parses an OpenAI SSE body given as lines (without line endings).

    Asserts that every non-blank line is ``data: …``, that events are separated by a blank
    line, that the stream ends with ``data: [DONE]`` and that nothing follows it. Returns
    the JSON payloads before ``[DONE]``, in order."""
    payloads: list[dict[str, Any]] = []
    done = False
    previous_blank = True
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            previous_blank = True
            continue
        assert not done, f"data after [DONE]: {line!r}"
        assert previous_blank, f"events must be separated by a blank line: {line!r}"
        previous_blank = False
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        data = line[len("data: ") :]
        if data == "[DONE]":
            done = True
            continue
        payload = json.loads(data)
        assert isinstance(payload, dict), payload
        payloads.append(payload)
    assert done, "the stream did not end with data: [DONE]"
    return payloads


def split_sse_text(text: str) -> list[str]:
    """``parse_sse`` input from a whole response body."""
    return text.split("\n")

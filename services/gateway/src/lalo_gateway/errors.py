"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` for every failure."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from lalo_common.errors import LaloError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# gRPC statuses from the router → what an OpenAI client expects.
_GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str, str | None]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", None),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error", None),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error", None),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "overloaded"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable", "backend_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout", "timeout"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error", "permission_denied"),
    # A workflow (complex path) that ended without an answer: its reason is the caller's to
    # see, and 422 rather than a 5xx because clients retry those (and each retry would run,
    # and pay for, a whole new workflow).
    grpc.StatusCode.ABORTED: (422, "workflow_error", "workflow_failed"),
}


def from_grpc(code: grpc.StatusCode, details: str, param: str | None = None) -> APIError:
    """``param``: the request field at fault, as the service that found it named it
    (``lalo_common.errors.error_param`` reads it from a failed call)."""
    status, type_, error_code = _GRPC_TO_HTTP.get(code, (500, "server_error", "internal_error"))
    if status == 500 or code == grpc.StatusCode.UNAUTHENTICATED:
        # Internal credential problems and bugs are the operator's business, not the caller's.
        log.error("router call failed: %s %s", code.name, details)
        return APIError(
            500,
            "The server had an error while processing your request.",
            type_="server_error",
            code="internal_error",
        )
    if error_code == "model_not_found":
        param = "model"
    if code == grpc.StatusCode.INVALID_ARGUMENT and "context length" in details:
        error_code = "context_length_exceeded"
        # The field the service named ("input" for embeddings), else a chat's messages.
        param = param or "messages"
    return APIError(status, details or code.name, type_=type_, param=param, code=error_code)


def from_lalo_error(exc: LaloError) -> APIError:
    # Raised by the gateway's own checks (not relayed from the router).
    if exc.code == grpc.StatusCode.UNAUTHENTICATED:
        return APIError(
            401,
            exc.message,
            type_="invalid_request_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if exc.code == grpc.StatusCode.PERMISSION_DENIED:
        return APIError(403, exc.message, type_="permission_error", code="permission_denied")
    return from_grpc(exc.code, exc.message, exc.param)


_LOCATIONS = ("body", "query", "path", "header")
# Parts of a pydantic error location that name a member of a union (``str``,
# ``list[TextPart]``, ``function-after[...]``, a model class such as ``NamedToolChoice``, a
# discriminated union's tag such as ``type=message``), not a field of the request (OpenAI's
# fields are lower-case).
_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _is_union_member(part: Any) -> bool:
    return isinstance(part, str) and (
        part in _UNION_MEMBERS or any(c in part for c in "[]()=") or part[:1].isupper()
    )


def _field_path(loc: tuple[Any, ...]) -> tuple[list[Any], bool]:
    """The request field a location points at, and whether a union member was skipped."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    fields = [part for part in parts if not _is_union_member(part)]
    return fields, len(fields) != len(parts)


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    fields, _ = _field_path(loc)
    if not fields:
        return None
    out = str(fields[0])
    for part in fields[1:]:
        out += f"[{part}]" if isinstance(part, int) or str(part).isdigit() else f".{part}"
    return out


def _most_specific(errors: list[Any]) -> dict[str, Any]:
    """The error to report. When the first one failed on a union (``content`` may be a
    string or a list of parts), pydantic reports one error per member; the deepest of them
    names what is actually wrong ("messages[0].content[0].type"), not "should be a string"."""
    first: dict[str, Any] = errors[0] if errors else {}
    fields, union = _field_path(tuple(first.get("loc", ())))
    if not union:
        return first
    same_field = [
        e for e in errors if _field_path(tuple(e.get("loc", ())))[0][: len(fields)] == fields
    ]
    return max(same_field, key=lambda e: len(_field_path(tuple(e.get("loc", ())))[0]))


def _reason(error: dict[str, Any]) -> str:
    # Validators raise ValueError; pydantic prefixes its text with "Value error, ".
    return str(error.get("msg", "invalid request")).removeprefix("Value error, ").rstrip(".")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(LaloError)
    async def _lalo_error(_request: Request, exc: LaloError) -> JSONResponse:
        api = from_lalo_error(exc)
        return JSONResponse(api.body(), status_code=api.status, headers=api.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        error = _most_specific(list(exc.errors()))
        param = _param_from_loc(tuple(error.get("loc", ())))
        reason = _reason(error)
        if error.get("type") == "json_invalid":
            message = "We could not parse the JSON body of your request."
            param = None
        elif error.get("type") == "missing" and param is None:
            message = (
                "The request body is empty: send a JSON object with the request's parameters "
                "(Content-Type: application/json)."
            )
        elif error.get("type") == "missing":
            message = f"Missing required parameter: '{param}'."
        elif param is None and error.get("type") == "model_attributes_type":
            message = "The request body must be a JSON object (Content-Type: application/json)."
        else:
            message = f"Invalid value for '{param}': {reason}." if param else f"{reason}."
        return JSONResponse(
            error_body(message, "invalid_request_error", param, "invalid_value"),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = str(exc.detail)
        if exc.status_code == 404:
            message = "Unknown request URL. Please check the URL and method."
        elif exc.status_code == 405:
            message = "Method not allowed for this URL."
        return JSONResponse(
            error_body(message, type_, None, None),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body(
                "The server had an error while processing your request.",
                "server_error",
                None,
                "internal_error",
            ),
            status_code=500,
        )

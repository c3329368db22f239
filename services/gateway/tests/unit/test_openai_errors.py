"""OpenAI error objects: the gRPC → HTTP mapping and the parameter names in messages."""

from __future__ import annotations

import grpc
import pytest
from lalo_common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from lalo_gateway.errors import APIError, _param_from_loc, from_grpc, from_lalo_error

ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("code", "status", "type_", "error_code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error", None),
        (grpc.StatusCode.OUT_OF_RANGE, 400, "invalid_request_error", None),
        (grpc.StatusCode.FAILED_PRECONDITION, 400, "invalid_request_error", None),
        (grpc.StatusCode.NOT_FOUND, 404, "invalid_request_error", "model_not_found"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error", "overloaded"),
        (grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable", "backend_unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout", "timeout"),
        (grpc.StatusCode.PERMISSION_DENIED, 403, "permission_error", "permission_denied"),
    ],
)
def test_from_grpc(code: grpc.StatusCode, status: int, type_: str, error_code: str | None) -> None:
    error = from_grpc(code, "details for the caller")
    assert error.status == status
    body = error.body()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == error_code
    assert body["error"]["message"] == "details for the caller"
    assert body["error"]["param"] == ("model" if code == grpc.StatusCode.NOT_FOUND else None)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
        # The gateway's own service token was refused: the operator's problem, not the caller's.
        grpc.StatusCode.UNAUTHENTICATED,
    ],
)
def test_server_side_failures_hide_their_details(code: grpc.StatusCode) -> None:
    error = from_grpc(code, "stack trace with /etc/secret")
    assert error.status == 500
    assert error.type == "server_error"
    assert error.code == "internal_error"
    assert "secret" not in error.message


def test_context_length() -> None:
    error = from_grpc(
        grpc.StatusCode.INVALID_ARGUMENT,
        "This model's maximum context length is 1024 tokens, but the prompt has 2000 tokens.",
    )
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    # A service that names the field keeps it (an embedding input over the context).
    named = from_grpc(
        grpc.StatusCode.INVALID_ARGUMENT,
        "input[1] has 600 tokens, over all-minilm-l6-v2's context length of 512 tokens",
        "input",
    )
    assert (named.code, named.param) == ("context_length_exceeded", "input")


def test_backend_validation_errors_keep_the_param_their_service_named() -> None:
    named = from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "logit_bias names token 9", "logit_bias")
    assert (named.status, named.param, named.message) == (
        400,
        "logit_bias",
        "logit_bias names token 9",
    )
    # Nothing named: null, never a guess from the wording.
    assert from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "top_p must be in (0, 1]").param is None


def test_gateway_errors_keep_their_param() -> None:
    assert from_lalo_error(InvalidArgument("bad stop", param="stop")).param == "stop"


def test_empty_details_fall_back_to_the_status_name() -> None:
    assert from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "").message == "INVALID_ARGUMENT"


def test_gateway_errors() -> None:
    unauthenticated = from_lalo_error(Unauthenticated("no key"))
    assert unauthenticated.status == 401
    assert unauthenticated.code == "invalid_api_key"
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
    assert from_lalo_error(PermissionDenied("no")).status == 403
    assert from_lalo_error(NotFound("no model")).status == 404
    assert from_lalo_error(InvalidArgument("bad")).status == 400


def test_api_error_body() -> None:
    error = APIError(400, "bad n", param="n", code="unsupported_parameter")
    assert error.body() == {
        "error": {
            "message": "bad n",
            "type": "invalid_request_error",
            "param": "n",
            "code": "unsupported_parameter",
        }
    }


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "temperature"), "temperature"),
        (("body", "messages", 0, "role"), "messages[0].role"),
        (("body", "response_format", "json_schema", "name"), "response_format.json_schema.name"),
        # Union members in the location are pydantic's, not the request's.
        (("body", "messages", 0, "content", "str"), "messages[0].content"),
        (
            ("body", "messages", 0, "content", "list[TextPart]", 0, "type"),
            "messages[0].content[0].type",
        ),
        (("body", "prompt", "list[str]", 1), "prompt[1]"),
        (("body",), None),
        ((), None),
    ],
)
def test_param_from_loc(loc: tuple[object, ...], param: str | None) -> None:
    assert _param_from_loc(loc) == param

"""Domain errors that carry their gRPC status, so cores raise meaning and edges map it."""

from __future__ import annotations

from typing import Any

import grpc

# Trailing metadata naming the request field an error is about (OpenAI's ``param``): set by
# GrpcServer from LaloError.param, read back by error_param at the next hop.
PARAM_METADATA = "lalo-error-param"


class LaloError(Exception):
    """Base of errors a caller is meant to see; the message is safe to return.

    ``param`` names the request field at fault when there is one ("logit_bias", "top_p"),
    so the gateway can fill OpenAI's ``param`` however many hops away it was found.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidArgument(LaloError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LaloError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(LaloError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(LaloError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(LaloError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(LaloError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(LaloError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LaloError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Cancelled(LaloError):
    code = grpc.StatusCode.CANCELLED


_BY_CODE: dict[grpc.StatusCode, type[LaloError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Unavailable,
        ResourceExhausted,
        DeadlineExceeded,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        Cancelled,
    )
}


def error_param(call: Any) -> str | None:
    """The ``param`` a failed call's trailing metadata carries (see PARAM_METADATA)."""
    try:
        metadata = call.trailing_metadata() or ()
    except Exception:  # a call that never reached the server has none
        return None
    for item in metadata:
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key == PARAM_METADATA:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def error_for_code(code: grpc.StatusCode, message: str, param: str | None = None) -> LaloError:
    """Rebuild a domain error from a status received over the wire."""
    error = _BY_CODE.get(code, LaloError)(message, param=param)
    if type(error) is LaloError:
        error.code = code
    return error


def status_code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN

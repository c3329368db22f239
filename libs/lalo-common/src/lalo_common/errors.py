"""Domain errors that carry their gRPC status, so cores raise meaning and edges map it."""

from __future__ import annotations

import grpc


class LaloError(Exception):
    """Base of errors a caller is meant to see; the message is safe to return."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


def error_for_code(code: grpc.StatusCode, message: str) -> LaloError:
    """Rebuild a domain error from a status received over the wire."""
    error = _BY_CODE.get(code, LaloError)(message)
    if type(error) is LaloError:
        error.code = code
    return error


def status_code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN

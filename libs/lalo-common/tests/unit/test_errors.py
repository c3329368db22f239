"""Domain errors carry their gRPC status and survive a round trip over the wire."""

from __future__ import annotations

import grpc
import pytest
from lalo_common.errors import (
    PARAM_METADATA,
    InvalidArgument,
    LaloError,
    NotFound,
    Unavailable,
    error_for_code,
    error_param,
    status_code_from_int,
)


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_status_code_from_int_inverts_every_code(code: grpc.StatusCode) -> None:
    assert status_code_from_int(code.value[0]) is code


@pytest.mark.parametrize("value", [-1, 17, 999])
def test_status_code_from_int_unknown_values_are_unknown(value: int) -> None:
    assert status_code_from_int(value) is grpc.StatusCode.UNKNOWN


def test_error_for_code_rebuilds_the_domain_class() -> None:
    error = error_for_code(grpc.StatusCode.NOT_FOUND, "no such model")
    assert isinstance(error, NotFound)
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.message == "no such model"
    assert isinstance(error_for_code(grpc.StatusCode.UNAVAILABLE, "x"), Unavailable)


def test_error_for_code_keeps_codes_without_a_class() -> None:
    error = error_for_code(grpc.StatusCode.ABORTED, "conflict")
    assert type(error) is LaloError
    assert error.code is grpc.StatusCode.ABORTED
    # The instance override must not leak into the class default.
    assert LaloError("x").code is grpc.StatusCode.INTERNAL


def test_errors_carry_code_and_message() -> None:
    error = InvalidArgument("temperature must be between 0 and 2")
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert str(error) == error.message == "temperature must be between 0 and 2"


def test_error_for_code_keeps_the_param() -> None:
    error = error_for_code(grpc.StatusCode.INVALID_ARGUMENT, "top_p must be in (0, 1]", "top_p")
    assert isinstance(error, InvalidArgument)
    assert error.param == "top_p"
    assert error_for_code(grpc.StatusCode.NOT_FOUND, "no model").param is None


class _Call:
    def __init__(self, metadata: object = None, broken: bool = False) -> None:
        self.metadata, self.broken = metadata, broken

    def trailing_metadata(self) -> object:
        if self.broken:
            raise RuntimeError("the call never reached a server")
        return self.metadata


def test_error_param_reads_trailing_metadata() -> None:
    assert error_param(_Call(((PARAM_METADATA, "stop"), ("other", "x")))) == "stop"
    assert error_param(_Call((("other", "x"),))) is None
    assert error_param(_Call(None)) is None
    assert error_param(_Call(broken=True)) is None

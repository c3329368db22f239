"""Credentials in gRPC metadata get the same checks as the REST API."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from lalo_gateway.security.errors import AuthenticationFailed, Forbidden, RateLimited
from lalo_gateway.security.grpc_auth import authorize_call
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.ratelimit import InProcessRateLimiter
from lalo_gateway.security.rbac import Permission, Role


class FakeAuthenticator:
    async def authenticate_header(self, header: str | None) -> Principal:
        if header == "Bearer dev":
            return Principal(subject="d", role=Role.DEVELOPER, kind="api_key", key_id="d", rpm=1)
        raise AuthenticationFailed("Incorrect API key provided.")


class Context:
    def __init__(self, metadata: list[tuple[str, Any]]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, Any]]:
        return self._metadata


RUNTIME: Any = SimpleNamespace(authenticator=FakeAuthenticator(), limiter=InProcessRateLimiter())


async def test_metadata_credentials_are_checked() -> None:
    with pytest.raises(AuthenticationFailed):
        await authorize_call(RUNTIME, Context([]), Permission.INFERENCE)
    with pytest.raises(AuthenticationFailed):
        await authorize_call(
            RUNTIME, Context([("authorization", "Bearer x")]), Permission.INFERENCE
        )
    principal = await authorize_call(
        RUNTIME, Context([("authorization", b"Bearer dev")]), Permission.INFERENCE
    )
    assert principal.subject == "d"
    with pytest.raises(RateLimited):
        await authorize_call(
            RUNTIME, Context([("authorization", "Bearer dev")]), Permission.INFERENCE
        )


async def test_permissions_apply() -> None:
    with pytest.raises(Forbidden, match="admin:keys"):
        await authorize_call(
            RUNTIME, Context([("authorization", "Bearer dev")]), Permission.KEYS_ADMIN
        )

"""Client channels for internal calls: service credential, request id and sane options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from lalo_common.auth import REQUEST_ID_METADATA, SERVICE_TOKEN_METADATA

CLIENT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
]


class _CredentialDetails:
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata()
        given = details.metadata
        if isinstance(given, grpc.aio.Metadata):
            # A Metadata iterates over its keys; copy every value of every key.
            for key in dict.fromkeys(given.keys()):
                for value in given.get_all(key):
                    metadata.add(key, value)
        elif given:
            for key, value in given:
                metadata.add(key, value)
        metadata.add(SERVICE_TOKEN_METADATA, self._token)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under its first matching kind only, so each call kind gets
# its own class.
class _UnaryUnaryCredential(_CredentialDetails, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStreamCredential(_CredentialDetails, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def create_channel(
    target: str,
    *,
    service_token: str = "",
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    interceptors: list[grpc.aio.ClientInterceptor] | None = (
        [_UnaryUnaryCredential(service_token), _UnaryStreamCredential(service_token)]
        if service_token
        else None
    )
    return grpc.aio.insecure_channel(
        target, options=[*CLIENT_OPTIONS, *options], interceptors=interceptors
    )


def request_metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_METADATA, request_id),) if request_id else ()

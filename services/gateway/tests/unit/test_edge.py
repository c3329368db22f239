"""Internal headers are stripped; oversized bodies get 413; generation limits give 400."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from lalo_gateway.security.edge import (
    EdgeMiddleware,
    check_generation_limits,
    internal_metadata,
    is_internal_header,
)
from lalo_gateway.security.errors import RequestLimitExceeded
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Role


async def echo(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = json.dumps(
        {"headers": [k.decode() for k, _ in scope["headers"]], "size": len(body)}
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def client(limit: int = 1024) -> httpx.AsyncClient:
    app = EdgeMiddleware(echo, max_body_bytes=limit)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_internal_headers_are_stripped() -> None:
    async with client() as c:
        response = await c.post(
            "/v1/chat/completions",
            content=b"{}",
            headers={
                "X-Lalo-Tenant": "other-tenant",
                "x-lalo-priority": "high",
                "x-lalo-route": "large",
                "x-lalo-service-token": "guess",
                "authorization": "Bearer k",
            },
        )
    headers = response.json()["headers"]
    assert not [h for h in headers if h.startswith("x-lalo-")]
    assert "authorization" in headers


async def test_body_limit_by_content_length() -> None:
    async with client(limit=1024) as c:
        response = await c.post("/v1/chat/completions", content=b"x" * 2000)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "1024 bytes" in error["message"]


async def test_body_limit_for_chunked_uploads() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 200

    async with client(limit=1024) as c:
        response = await c.post("/v1/chat/completions", content=chunks())
    assert response.status_code == 413


async def test_bodies_within_the_limit_pass_whole() -> None:
    async with client(limit=1024) as c:
        response = await c.post("/v1/chat/completions", content=b"z" * 1024)
    assert response.status_code == 200
    assert response.json()["size"] == 1024


def test_generation_limits() -> None:
    check_generation_limits(messages=3, max_tokens=10, max_messages=3, max_tokens_limit=10)
    check_generation_limits(messages=None, max_tokens=None, max_messages=3, max_tokens_limit=10)
    with pytest.raises(RequestLimitExceeded, match="Too many messages: 4") as too_many:
        check_generation_limits(messages=4, max_tokens=1, max_messages=3, max_tokens_limit=10)
    assert too_many.value.param == "messages"
    with pytest.raises(RequestLimitExceeded, match="at most 10") as too_long:
        check_generation_limits(messages=1, max_tokens=11, max_messages=3, max_tokens_limit=10)
    assert too_long.value.param == "max_tokens"


def test_internal_metadata_comes_from_the_principal() -> None:
    p = Principal(subject="acme", role=Role.DEVELOPER, kind="api_key")
    meta = internal_metadata(p)
    assert meta["x-lalo-tenant"] == "acme"
    assert all(is_internal_header(k.encode()) for k in meta)
    assert not is_internal_header(b"authorization")

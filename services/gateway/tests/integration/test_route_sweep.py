"""Every route of the real app, read from its own route table: without credentials it
answers 401, with a role that lacks its permission 403, and with one that has it neither.
A new route is covered the moment it is registered; one without a permission fails here."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lalo_gateway.app import create_app
from lalo_gateway.security.http import PUBLIC_PATHS
from lalo_gateway.security.rbac import MATRIX, Role, roles_lacking
from lalo_gateway.security.routes import RouteInfo, route_table
from lalo_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

KEYS = {role: f"sk-sweep-{role.value}-{uuid.uuid4().hex}" for role in Role}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
ISSUER, AUDIENCE = "https://idp.sweep.test", "lalo"


@pytest.fixture(scope="module")
def settings(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> GatewaySettings:
    tmp: Path = tmp_path_factory.mktemp("sweep")
    return GatewaySettings(
        database_url=postgres_url,
        redis_url=redis_url,
        key_pepper="sweep-pepper-0123456789abcdef",
        router_target="127.0.0.1:9",  # nothing listens: only the edge is under test
        grpc_port=0,  # no fixed port: a running `make up` must not fail the suite
        LALO_API_KEYS=",".join(
            f"{key}:{role.value}:sweep-{role.value}" for role, key in KEYS.items()
        ),
        audit_spool_path=str(tmp / "spool.jsonl"),
        jwt_mode="pem",
        jwt_public_key_pem=PUBLIC_PEM,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )


@pytest.fixture(scope="module")
async def client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "sweep-id", path)


async def call(
    client: httpx.AsyncClient, method: str, path: str, key: str | None
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body: Any = {} if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, concrete(path), json=body, headers=headers)


def routes(client: httpx.AsyncClient) -> list[RouteInfo]:
    table = route_table(client.app)  # type: ignore[attr-defined]
    assert table, "the route table is empty"
    return table


async def test_every_route_is_public_or_guarded(client: httpx.AsyncClient) -> None:
    unguarded = [
        f"{sorted(r.methods)} {r.path}" for r in routes(client) if not r.public and not r.permission
    ]
    assert unguarded == [], (
        "routes without a permission: give each a permission alias from lalo_gateway.deps "
        f"(or add it to PUBLIC_PATHS if it must be public): {unguarded}"
    )
    public_api = [r.path for r in routes(client) if r.public and r.api_route]
    assert set(public_api) <= PUBLIC_PATHS


async def test_no_credentials_means_401(client: httpx.AsyncClient) -> None:
    checked = 0
    for route in routes(client):
        if route.public:
            continue
        for method in route.methods:
            response = await call(client, method, route.path, None)
            assert response.status_code == 401, (method, route.path, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert set(error) == {"message", "type", "param", "code"}
            bad = await call(client, method, route.path, "sk-not-a-key")
            assert bad.status_code == 401, (method, route.path, bad.text)
            checked += 1
    assert checked >= 8


async def test_roles_lacking_the_permission_get_403(client: httpx.AsyncClient) -> None:
    checked = 0
    for route in routes(client):
        if route.public or route.permission is None:
            continue
        for method in route.methods:
            for role in roles_lacking(route.permission):
                response = await call(client, method, route.path, KEYS[role])
                assert response.status_code == 403, (role, method, route.path, response.text)
                assert response.json()["error"]["code"] == "permission_denied"
                checked += 1
            for role in (r for r in Role if route.permission in MATRIX[r]):
                response = await call(client, method, route.path, KEYS[role])
                assert response.status_code not in (401, 403), (
                    role,
                    method,
                    route.path,
                    response.text,
                )
    assert checked >= 8


async def test_model_allowlist_and_request_limits(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    admin = {"authorization": f"Bearer {KEYS[Role.ADMIN]}"}
    created = await client.post(
        "/v1/admin/keys",
        json={"owner": "allowlisted", "role": "developer", "allowed_models": ["tiny"]},
        headers=admin,
    )
    key = {"authorization": f"Bearer {created.json()['key']}"}
    messages = [{"role": "user", "content": "hi"}]
    denied = await client.post(
        "/v1/chat/completions", json={"model": "large", "messages": messages}, headers=key
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "model_not_allowed"
    too_many = await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": messages * (settings.max_messages + 1)},
        headers=key,
    )
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "messages"
    too_long = await client.post(
        "/v1/completions",
        json={"model": "tiny", "prompt": "x", "max_tokens": settings.max_tokens_limit + 1},
        headers=key,
    )
    assert too_long.status_code == 400
    assert "max_tokens" in too_long.json()["error"]["message"]
    huge = await client.post(
        "/v1/chat/completions",
        content=b"{" + b" " * settings.max_body_bytes + b"}",
        headers={**key, "content-type": "application/json"},
    )
    assert huge.status_code == 413


def token(**overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "jwt-user",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 60,
        "roles": ["admin"],
    }
    claims.update(overrides)
    return jwt.encode(claims, RSA_KEY, algorithm="RS256")


async def test_jwt_through_the_app(client: httpx.AsyncClient) -> None:
    async def get(credential: str) -> httpx.Response:
        return await client.get("/v1/admin/keys", headers={"authorization": f"Bearer {credential}"})

    assert (await get(token())).status_code == 200
    assert (await get(token(roles=["viewer"]))).status_code == 403
    assert (await get(token(exp=int(time.time()) - 5))).status_code == 401
    assert (await get(token(aud="other"))).status_code == 401
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {
            "sub": "x",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 60,
            "roles": ["admin"],
        },
        other,
        algorithm="RS256",
    )
    assert (await get(forged)).status_code == 401
    none_alg = jwt.encode(
        {
            "sub": "x",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 60,
            "roles": ["admin"],
        },
        None,
        algorithm="none",
    )
    assert (await get(none_alg)).status_code == 401


async def test_content_is_audited_only_for_keys_that_ask(client: httpx.AsyncClient) -> None:
    admin = {"authorization": f"Bearer {KEYS[Role.ADMIN]}"}
    runtime = client.app.state.security  # type: ignore[attr-defined]
    rows = {}
    for store in (True, False):
        created = await client.post(
            "/v1/admin/keys",
            json={"owner": f"content-{store}", "role": "developer", "store_content": store},
            headers=admin,
        )
        key = created.json()["key"]
        request_id = f"content-{store}-{uuid.uuid4().hex[:6]}"
        await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "KEEP-ME"}]},
            headers={"authorization": f"Bearer {key}", "x-request-id": request_id},
        )
        for _ in range(200):
            await runtime.audit.flush_once()
            page = await client.get(
                "/v1/admin/audit", params={"request_id": request_id}, headers=admin
            )
            if page.json()["data"]:
                rows[store] = page.json()["data"][0]
                break
    assert "KEEP-ME" in rows[True]["content"]["request"]
    assert rows[True]["content"]["response"].startswith('{"error"')
    assert rows[False]["content"] is None

"""The admin REST API and the CLI against real Postgres: keys created, listed, rotated and
revoked; the audit log queried; a secret shown once and never logged."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from lalo_common.errors import InvalidArgument, LaloError, NotFound
from lalo_gateway import cli
from lalo_gateway.routes.admin import router as admin_router
from lalo_gateway.security.http import install_security, security_lifespan
from lalo_gateway.security.settings import SecuritySettings
from pydantic import SecretStr

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-integration-admin-key-0001"
VIEWER_KEY = "sk-integration-viewer-key-0001"


@pytest.fixture
def settings(postgres_url: str, redis_url: str, tmp_path: Path) -> SecuritySettings:
    return SecuritySettings(
        database_url=postgres_url,
        redis_url=redis_url,
        key_pepper="integration-pepper-0123456789",
        audit_flush_interval_s=0.02,
        audit_spool_path=str(tmp_path / "spool.jsonl"),
    )


def build_app(settings: SecuritySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with security_lifespan(
            app, settings, [f"{ADMIN_KEY}:admin:ops", f"{VIEWER_KEY}:viewer:audit"]
        ):
            yield

    app = FastAPI(lifespan=lifespan)
    install_security(app, max_body_bytes=settings.max_body_bytes)

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LaloError)
        code = (
            404 if isinstance(exc, NotFound) else 400 if isinstance(exc, InvalidArgument) else 500
        )
        return JSONResponse({"error": {"message": exc.message}}, status_code=code)

    app.add_exception_handler(LaloError, domain_error)
    app.include_router(admin_router)
    return app


@asynccontextmanager
async def running(settings: SecuritySettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4444))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield app, client


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_key_lifecycle_through_the_api(
    settings: SecuritySettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(settings) as (_app, client):
        created = await client.post(
            "/v1/admin/keys",
            json={"owner": "team-x", "role": "developer", "allowed_models": ["tiny"], "rpm": 5},
            headers=auth(ADMIN_KEY),
        )
        assert created.status_code == 201, created.text
        body = created.json()
        secret, key_id = body["key"], body["id"]
        assert secret.startswith(body["prefix"] + "-")

        got = await client.get(f"/v1/admin/keys/{key_id}", headers=auth(ADMIN_KEY))
        assert got.status_code == 200
        assert "key" not in got.json()
        assert got.json()["status"] == "active"

        listed = await client.get("/v1/admin/keys?owner=team-x", headers=auth(ADMIN_KEY))
        assert [k["id"] for k in listed.json()["data"]] == [key_id]
        assert secret not in listed.text

        # The new key authenticates but, as a developer, may not administer.
        denied = await client.get("/v1/admin/keys", headers=auth(secret))
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "permission_denied"

        rotated = await client.post(f"/v1/admin/keys/{key_id}/rotate", headers=auth(ADMIN_KEY))
        assert rotated.status_code == 200
        new_secret = rotated.json()["key"]
        assert (await client.get("/v1/admin/keys", headers=auth(secret))).status_code == 401

        revoked = await client.delete(f"/v1/admin/keys/{key_id}", headers=auth(ADMIN_KEY))
        assert revoked.json()["status"] == "revoked"
        assert (await client.get("/v1/admin/keys", headers=auth(new_secret))).status_code == 401

        missing = await client.get("/v1/admin/keys/nope", headers=auth(ADMIN_KEY))
        assert missing.status_code == 404
        bad = await client.post(
            "/v1/admin/keys", json={"owner": "x", "role": "root"}, headers=auth(ADMIN_KEY)
        )
        assert bad.status_code == 422
    for secret_value in (secret, new_secret, ADMIN_KEY):
        assert secret_value not in caplog.text


async def test_audit_rows_for_every_outcome_and_queries(settings: SecuritySettings) -> None:
    async with running(settings) as (app, client):
        assert (await client.get("/v1/admin/keys")).status_code == 401
        assert (await client.get("/v1/admin/keys", headers=auth("sk-wrong"))).status_code == 401
        assert (await client.get("/v1/admin/keys", headers=auth(VIEWER_KEY))).status_code == 403
        ok = await client.get(
            "/v1/admin/keys", headers={**auth(ADMIN_KEY), "x-request-id": "req-audit-ok"}
        )
        assert ok.headers["x-request-id"] == "req-audit-ok"
        big = await client.post("/v1/admin/keys", content=b"x" * (settings.max_body_bytes + 1))
        assert big.status_code == 413

        for _ in range(100):
            if app.state.security.audit.pending == 0:
                break
            await asyncio.sleep(0.02)
        page = await client.get(
            "/v1/admin/audit?route=/v1/admin/keys&limit=50", headers=auth(ADMIN_KEY)
        )
        assert page.status_code == 200, page.text
        statuses = [e["status"] for e in page.json()["data"]]
        assert {401, 403, 200} <= set(statuses)
        by_id = await client.get("/v1/admin/audit?request_id=req-audit-ok", headers=auth(ADMIN_KEY))
        [event] = by_id.json()["data"]
        assert (event["subject"], event["key_prefix"], event["role"]) == (
            "ops",
            "sk-int...",
            "admin",
        )
        assert event["client_addr"] == "10.1.2.3"
        assert event["route"] == "/v1/admin/keys"
        errors = await client.get(
            "/v1/admin/audit?min_status=413&status=413", headers=auth(ADMIN_KEY)
        )
        assert errors.json()["data"][0]["error_code"] == "request_too_large"

        first = await client.get("/v1/admin/audit?limit=2", headers=auth(ADMIN_KEY))
        assert first.json()["has_more"] is True
        cursor = first.json()["next_cursor"]
        second = await client.get(
            f"/v1/admin/audit?limit=2&cursor={cursor}", headers=auth(ADMIN_KEY)
        )
        assert {e["id"] for e in first.json()["data"]}.isdisjoint(
            {e["id"] for e in second.json()["data"]}
        )
        # Viewers may not read the audit log.
        assert (await client.get("/v1/admin/audit", headers=auth(VIEWER_KEY))).status_code == 403


def test_cli_key_lifecycle(settings: SecuritySettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate"], settings=settings) == 0
    assert (
        cli.main(
            [
                "keys",
                "create",
                "--owner",
                "cli-user",
                "--role",
                "viewer",
                "--models",
                "a,b",
                "--json",
            ],
            settings=settings,
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("lalo-")
    assert created["allowed_models"] == ["a", "b"]

    assert cli.main(["keys", "list", "--owner", "cli-user", "--json"], settings=settings) == 0
    out = capsys.readouterr().out
    assert created["id"] in out
    assert created["key"] not in out

    assert cli.main(["keys", "rotate", created["id"], "--json"], settings=settings) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["key"] != created["key"]
    assert cli.main(["keys", "revoke", created["id"]], settings=settings) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli.main(["keys", "get", "missing-id"], settings=settings) == 1
    assert "no API key" in capsys.readouterr().err


def test_cli_secrets(
    settings: SecuritySettings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    assert cli.main(["secrets", "generate-key"], settings=settings) == 0
    old = capsys.readouterr().out.strip()
    cli.main(["secrets", "generate-key"], settings=settings)
    new = capsys.readouterr().out.strip()
    with_old = settings.model_copy(update={"secret_keys": SecretStr(old)})
    monkeypatch.setattr("sys.stdin", io.StringIO("tool-credential\n"))
    assert cli.main(["secrets", "put", "tools/github"], settings=with_old) == 0
    capsys.readouterr()
    rotating = settings.model_copy(update={"secret_keys": SecretStr(f"{new},{old}")})
    assert cli.main(["secrets", "rotate"], settings=rotating) == 0
    assert "re-encrypted" in capsys.readouterr().out
    no_keys = settings.model_copy(update={"secret_keys": SecretStr("")})
    assert cli.main(["secrets", "rotate"], settings=no_keys) == 1
    assert "SECRET_KEYS" in capsys.readouterr().err


def test_cli_purges_old_stored_responses(
    settings: SecuritySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    from lalo_gateway.db.repositories import SqlResponseStore
    from lalo_gateway.security.runtime import Database
    from lalo_gateway.stored_responses import StoredResponse

    db = Database.connect(settings, migrate=True)
    store = SqlResponseStore(db.sessions)
    old = {"id": "resp_cli_old", "created_at": 1_600_000_000, "status": "completed", "output": []}
    new = {**old, "id": "resp_cli_new", "created_at": int(time.time())}
    for response in (old, new):
        store.save(StoredResponse(response["id"], "cli", None, [], response))
    assert cli.main(["responses", "purge", "--older-than-days", "30"], settings=settings) == 0
    assert "deleted 1 stored response" in capsys.readouterr().out
    assert store.get("cli", "resp_cli_old") is None
    assert store.get("cli", "resp_cli_new") is not None
    assert cli.main(["responses", "purge", "--older-than-days", "-1"], settings=settings) == 2
    assert "0 or more" in capsys.readouterr().err
    db.engine.dispose()

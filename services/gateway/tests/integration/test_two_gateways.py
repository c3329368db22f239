"""Two real gateway processes sharing Postgres and Redis, as two replicas would:
revocation reaches the other replica within 1 s, rate limits are exact across both, every
request (401/403/429/5xx included) leaves an audit row, and no secret reaches the logs.

The router target points at a closed port, so chat requests fail with a 5xx at the edge;
everything tested here happens before the router is called.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ADMIN_KEY = f"sk-two-gateways-admin-{uuid.uuid4().hex}"
VIEWER_KEY = f"sk-two-gateways-viewer-{uuid.uuid4().hex}"
PEPPER = f"pepper-{uuid.uuid4().hex}"
SERVICE_TOKEN = f"svc-{uuid.uuid4().hex}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_gateway(env: dict[str, str], log: Path) -> Gateway:
    port = free_port()
    env = {
        **env,
        "LALO_GATEWAY_PORT": str(port),
        "LALO_GATEWAY_HOST": "127.0.0.1",
        "LALO_GATEWAY_GRPC_PORT": "0",  # two processes on one host: no fixed gRPC port
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lalo_gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Gateway(url=f"http://127.0.0.1:{port}", process=process, log=log)


def wait_ready(gateway: Gateway, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise AssertionError(f"gateway exited early:\n{gateway.log.read_text()[-3000:]}")
        try:
            if httpx.get(gateway.url + "/healthz", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gateway not ready:\n{gateway.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def gateways(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gateway]]:
    tmp = tmp_path_factory.mktemp("gateways")
    env = {
        **os.environ,
        "LALO_GATEWAY_ENVIRONMENT": "production",
        "LALO_GATEWAY_DATABASE_URL": postgres_url,
        "LALO_GATEWAY_REDIS_URL": redis_url,
        "LALO_GATEWAY_KEY_PEPPER": PEPPER,
        "LALO_GATEWAY_ROUTER_TARGET": f"127.0.0.1:{free_port()}",
        "LALO_GATEWAY_AUDIT_FLUSH_INTERVAL_S": "0.05",
        "LALO_GATEWAY_LOG_LEVEL": "DEBUG",
        "LALO_SERVICE_TOKEN": SERVICE_TOKEN,
        "LALO_API_KEYS": f"{ADMIN_KEY}:admin:ops,{VIEWER_KEY}:viewer:auditor",
    }
    # Started together: one migrates under the advisory lock, the other waits for it.
    first = start_gateway(env, tmp / "a.log")
    second = start_gateway(env, tmp / "b.log")
    wait_ready(first)
    wait_ready(second)
    yield [first, second]
    for gateway in (first, second):
        gateway.process.terminate()
        try:
            gateway.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gateway.process.kill()


def auth(key: str, request_id: str | None = None) -> dict[str, str]:
    headers = {"authorization": f"Bearer {key}"}
    if request_id:
        headers["x-request-id"] = request_id
    return headers


def test_revocation_reaches_the_other_replica_within_one_second(gateways: list[Gateway]) -> None:
    a, b = gateways
    created = httpx.post(
        a.url + "/v1/admin/keys",
        json={"owner": "revokee", "role": "admin"},
        headers=auth(ADMIN_KEY),
    )
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    probe = f"/v1/admin/keys/{key_id}"
    assert httpx.get(b.url + probe, headers=auth(key)).status_code == 200  # cached on B now

    revoked = httpx.delete(a.url + probe, headers=auth(ADMIN_KEY))
    assert revoked.status_code == 200
    revoked_at = time.monotonic()
    time.sleep(max(0.0, 1.0 - (time.monotonic() - revoked_at)))
    late = httpx.get(b.url + probe, headers=auth(key))
    assert late.status_code == 401
    assert "revoked" in late.json()["error"]["message"]


async def test_rate_limit_is_exact_across_two_processes(gateways: list[Gateway]) -> None:
    a, b = gateways
    limit = 10
    async with httpx.AsyncClient(timeout=30) as client:
        created = await client.post(
            a.url + "/v1/admin/keys",
            json={"owner": "limited", "role": "viewer", "rpm": limit},
            headers=auth(ADMIN_KEY),
        )
        key = created.json()["key"]
        responses = await asyncio.gather(
            *(
                client.get((a if i % 2 else b).url + "/v1/models", headers=auth(key, f"rl-{i}"))
                for i in range(3 * limit)
            )
        )
    limited = [r for r in responses if r.status_code == 429]
    admitted = [r for r in responses if r.status_code != 429]
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted)
    assert remaining == list(range(limit))  # each admission saw a distinct count
    assert {r.headers["x-ratelimit-limit-requests"] for r in admitted} == {str(limit)}
    assert len(responses) - len(limited) == limit
    assert len(limited) == 2 * limit
    for response in limited:
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_every_request_leaves_an_audit_row(gateways: list[Gateway]) -> None:
    a, b = gateways
    run = uuid.uuid4().hex[:8]
    expectations = {
        f"{run}-401": (
            httpx.get(a.url + "/v1/models", headers={"x-request-id": f"{run}-401"}),
            401,
        ),
        f"{run}-403": (
            httpx.get(b.url + "/v1/admin/keys", headers=auth(VIEWER_KEY, f"{run}-403")),
            403,
        ),
        f"{run}-200": (
            httpx.get(a.url + "/v1/admin/keys", headers=auth(ADMIN_KEY, f"{run}-200")),
            200,
        ),
        f"{run}-5xx": (
            httpx.post(
                b.url + "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "SECRET-PROMPT"}]},
                headers=auth(ADMIN_KEY, f"{run}-5xx"),
                timeout=30,
            ),
            500,
        ),
    }
    for response, expected in expectations.values():
        if expected == 500:
            assert response.status_code >= 500, response.text
        else:
            assert response.status_code == expected, response.text
    deadline = time.monotonic() + 10
    found: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline and len(found) < len(expectations):
        for request_id in expectations:
            page = httpx.get(
                a.url + "/v1/admin/audit",
                params={"request_id": request_id},
                headers=auth(ADMIN_KEY),
            ).json()["data"]
            if page:
                found[request_id] = page[0]
        time.sleep(0.1)
    assert set(found) == set(expectations)
    assert found[f"{run}-403"]["subject"] == "auditor"
    assert found[f"{run}-401"]["subject"] == ""
    assert int(str(found[f"{run}-5xx"]["status"])) >= 500
    assert found[f"{run}-5xx"]["content"] is None  # prompts are not kept by default
    # 429s from the rate-limit test are there too.
    limited = httpx.get(
        a.url + "/v1/admin/audit", params={"status": 429}, headers=auth(ADMIN_KEY)
    ).json()["data"]
    assert limited


def test_no_secret_in_the_logs(gateways: list[Gateway]) -> None:
    # Run last in this module: the other tests have exercised create/revoke/429/5xx paths.
    created = httpx.post(
        gateways[0].url + "/v1/admin/keys", json={"owner": "logs"}, headers=auth(ADMIN_KEY)
    )
    new_key = created.json()["key"]
    httpx.get(gateways[1].url + "/v1/models", headers=auth(new_key + "x"))
    time.sleep(0.3)
    text = "".join(g.log.read_text(errors="replace") for g in gateways)
    assert text  # the processes did log
    for secret in (ADMIN_KEY, VIEWER_KEY, PEPPER, SERVICE_TOKEN, new_key, "SECRET-PROMPT"):
        assert secret not in text

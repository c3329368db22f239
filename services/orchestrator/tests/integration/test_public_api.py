"""/v1/workflows as a user drives it: gateway (HTTP, API keys) → router → orchestrator.

Real servers: the gateway app under uvicorn, the router's WorkflowService pass-through and
the orchestrator's API as gRPC servers with a service credential, and a Celery worker
process; the model and tools are the fakes of conftest.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lalo_common.grpc_server import GrpcServer
from lalo_gateway.app import create_app
from lalo_gateway.settings import GatewaySettings
from lalo_orchestrator.service import build_server
from lalo_router.workflows import WORKFLOW_SERVICE_NAME, add_workflow_service
from lalo_testing.asgi import serve_app
from pydantic import SecretStr

pytestmark = pytest.mark.integration

TOKEN = secrets.token_hex(16)
KEYS = {
    "alice": f"sk-alice-{secrets.token_hex(8)}",
    "bob": f"sk-bob-{secrets.token_hex(8)}",
    "carol": f"sk-carol-{secrets.token_hex(8)}",
}


@pytest.fixture(scope="module")
async def gateway(orch_env: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    worker = orch_env.start_worker()
    orch_env.wait_ready(worker)

    settings = orch_env.settings().model_copy(update={"service_token": SecretStr(TOKEN)})
    orchestrator, api = build_server(settings)
    orchestrator_port = await orchestrator.start("127.0.0.1:0")
    await orchestrator.set_serving(True)

    router = GrpcServer(service_names=[WORKFLOW_SERVICE_NAME], service_token=TOKEN)
    forwarder = add_workflow_service(router, f"127.0.0.1:{orchestrator_port}", service_token=TOKEN)
    router_port = await router.start("127.0.0.1:0")
    await router.set_serving(True)

    tmp: Path = tmp_path_factory.mktemp("gateway")
    gateway_settings = GatewaySettings(
        router_target=f"127.0.0.1:{router_port}",
        database_url=f"sqlite:///{tmp / 'gateway.sqlite'}",
        audit_spool_path=str(tmp / "spool.jsonl"),
        LALO_API_KEYS=",".join(
            [
                f"{KEYS['alice']}:developer:alice",
                f"{KEYS['bob']}:developer:bob",
                f"{KEYS['carol']}:viewer:carol",
            ]
        ),
        LALO_SERVICE_TOKEN=TOKEN,
        grpc_port=0,  # no fixed port: a running `make up` must not fail the suite
    )
    try:
        async with serve_app(create_app(gateway_settings)) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        await forwarder.close()
        await router.stop()
        await orchestrator.stop()
        api.store.engine.dispose()


def headers(user: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[user]}", **extra}


async def sse(response: httpx.Response, limit: int | None = None) -> list[tuple[str, str, str]]:
    """(id, event, data) frames, stopping after ``limit`` event frames."""
    frames, current = [], {"id": "", "event": "", "data": ""}
    async for line in response.aiter_lines():
        if not line:
            frames.append((current["id"], current["event"], current["data"]))
            current = {"id": "", "event": "", "data": ""}
            if limit is not None and len(frames) >= limit:
                break
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    return frames


def plan_body(plan: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "PLAN:" + json.dumps(plan)}], **extra}


async def test_create_follow_resume_get_and_list(orch_env, gateway):
    plan = orch_env.echo_plan(["one", "two", "three"], sleep_ms=100, answer="{{step_3}}!")
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        created = await client.post(
            "/v1/workflows",
            json=plan_body(plan, tools=["echo"], budgets={"max_steps": 5}),
            headers=headers("alice"),
        )
        assert created.status_code == 201, created.text
        workflow = created.json()
        assert workflow["object"] == "workflow"
        assert workflow["state"] == "pending"
        assert workflow["budgets"]["max_steps"] == 5
        url = f"/v1/workflows/{workflow['id']}/events"

        # Follow a few events, then drop the connection mid-workflow.
        async with client.stream("GET", url, headers=headers("alice")) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = await sse(response, limit=3)
        await asyncio.sleep(0.4)
        # Resume with Last-Event-ID: the rest, no gaps, no repeats, then the end.
        async with client.stream(
            "GET", url, headers=headers("alice", **{"Last-Event-ID": first[-1][0]})
        ) as response:
            rest = await sse(response)
        events = [f for f in first + rest if f[0]]
        assert [int(f[0]) for f in events] == list(range(1, len(events) + 1))
        assert rest[-2][1] == "complete"
        assert json.loads(rest[-2][2])["state"] == "succeeded"
        assert rest[-1][2] == "[DONE]"
        assert json.loads(events[-1][2])["data"]["final_answer"] == "three!"

        got = await client.get(f"/v1/workflows/{workflow['id']}", headers=headers("alice"))
        assert got.status_code == 200
        body = got.json()
        assert body["state"] == "succeeded"
        assert body["final_answer"] == "three!"
        assert [s["state"] for s in body["steps"]] == ["succeeded"] * 4
        assert body["last_event_id"] == len(events)

        listed = (await client.get("/v1/workflows", headers=headers("alice"))).json()
        assert workflow["id"] in [w["id"] for w in listed["data"]]


async def test_other_users_cannot_see_or_cancel(orch_env, gateway):
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        created = await client.post(
            "/v1/workflows", json=plan_body(orch_env.echo_plan(["x"])), headers=headers("alice")
        )
        workflow_id = created.json()["id"]
        for method, path in (
            ("GET", f"/v1/workflows/{workflow_id}"),
            ("GET", f"/v1/workflows/{workflow_id}/events"),
            ("POST", f"/v1/workflows/{workflow_id}/cancel"),
        ):
            response = await client.request(method, path, headers=headers("bob"))
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "workflow_not_found"
        bobs = (await client.get("/v1/workflows", headers=headers("bob"))).json()
        assert bobs["data"] == []
        # A viewer may read workflows but not start them.
        refused = await client.post(
            "/v1/workflows", json=plan_body(orch_env.echo_plan(["x"])), headers=headers("carol")
        )
        assert refused.status_code == 403
        assert (await client.post("/v1/workflows", json={})).status_code == 401


async def test_cancel_and_bad_requests(orch_env, gateway):
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        plan = orch_env.echo_plan([f"c{i}" for i in range(5)], sleep_ms=300)
        created = await client.post("/v1/workflows", json=plan_body(plan), headers=headers("alice"))
        workflow_id = created.json()["id"]
        cancelled = await client.post(
            f"/v1/workflows/{workflow_id}/cancel",
            json={"reason": "not needed"},
            headers=headers("alice"),
        )
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        assert cancelled.json()["error"] == "not needed"
        again = await client.post(f"/v1/workflows/{workflow_id}/cancel", headers=headers("alice"))
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "workflow_finished"

        too_big = await client.post(
            "/v1/workflows",
            json=plan_body(plan, budgets={"max_steps": 100_000}),
            headers=headers("alice"),
        )
        assert too_big.status_code == 400
        assert "max_steps" in too_big.json()["error"]["message"]
        no_user = await client.post(
            "/v1/workflows",
            json={"messages": [{"role": "system", "content": "hi"}]},
            headers=headers("alice"),
        )
        assert no_user.status_code == 400
        bad_resume = await client.get(
            f"/v1/workflows/{workflow_id}/events",
            headers=headers("alice", **{"Last-Event-ID": "abc"}),
        )
        assert bad_resume.status_code == 400

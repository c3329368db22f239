"""A chat completion answered by a workflow: the official openai SDK → gateway → router
(complex path) → orchestrator → Celery worker, streamed and not."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from lalo_gateway.app import create_app
from lalo_gateway.settings import GatewaySettings
from lalo_orchestrator.service import build_server
from lalo_router.replicas import ReplicaSet
from lalo_router.server import build_server as build_router
from lalo_router.settings import RouterSettings
from lalo_testing.asgi import serve_app
from pydantic import SecretStr

pytestmark = pytest.mark.integration

TOKEN = secrets.token_hex(16)
KEY = f"sk-chat-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
async def gateway(orch_env: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    worker = orch_env.start_worker()
    orch_env.wait_ready(worker)
    settings = orch_env.settings().model_copy(update={"service_token": SecretStr(TOKEN)})
    orchestrator, api = build_server(settings)
    orchestrator_port = await orchestrator.start("127.0.0.1:0")
    await orchestrator.set_serving(True)

    router_settings = RouterSettings(
        backends="",
        orchestrator_target=f"127.0.0.1:{orchestrator_port}",
        LALO_SERVICE_TOKEN=TOKEN,
    )
    router = build_router(router_settings, ReplicaSet([]), None)
    router_port = await router.start("127.0.0.1:0")
    await router.set_serving(True)

    tmp: Path = tmp_path_factory.mktemp("gateway")
    gateway_settings = GatewaySettings(
        router_target=f"127.0.0.1:{router_port}",
        grpc_port=0,
        database_url=f"sqlite:///{tmp / 'gateway.sqlite'}",
        audit_spool_path=str(tmp / "spool.jsonl"),
        LALO_API_KEYS=f"{KEY}:developer:dana",
        LALO_SERVICE_TOKEN=TOKEN,
    )
    try:
        async with serve_app(create_app(gateway_settings)) as port:
            yield f"http://127.0.0.1:{port}/v1"
    finally:
        await router.stop()
        await orchestrator.stop()
        api.store.engine.dispose()


def _messages(orch_env: Any) -> list[dict[str, str]]:
    plan = orch_env.echo_plan(["alpha", "beta"], sleep_ms=50, answer="{{step_2}} done")
    return [{"role": "user", "content": "PLAN:" + json.dumps(plan)}]


async def test_chat_completion_is_answered_by_a_workflow(orch_env, gateway):
    client = openai.AsyncOpenAI(base_url=gateway, api_key=KEY)
    raw = await client.chat.completions.with_raw_response.create(
        model="workflow", messages=_messages(orch_env)
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "beta done"
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-lalo-route"] == "workflow"
    workflow_id = raw.headers["x-lalo-workflow-id"]
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        got = await http.get(
            f"/workflows/{workflow_id}", headers={"authorization": f"Bearer {KEY}"}
        )
    assert got.status_code == 200
    assert got.json()["state"] == "succeeded"


async def test_streamed_chat_shows_progress_then_the_answer(orch_env, gateway):
    client = openai.AsyncOpenAI(base_url=gateway, api_key=KEY)
    stream = await client.chat.completions.create(
        model="workflow", messages=_messages(orch_env), stream=True
    )
    progress, content, finish = [], [], None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        if extra.get("reasoning_content"):
            progress.append(extra["reasoning_content"])
        if delta.content:
            content.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(content) == "beta done"
    assert finish == "stop"
    assert any("planned" in line for line in progress)
    assert any("succeeded" in line for line in progress)


async def test_models_list_offers_the_workflow_route(gateway):
    client = openai.AsyncOpenAI(base_url=gateway, api_key=KEY)
    ids = [m.id async for m in client.models.list()]
    assert "workflow" in ids

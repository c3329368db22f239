"""Through the real stack (gateway → router → inference-small on the tiny model): tokens are
counted from real usage, streamed or not, land in the audit log and feed tokens-per-minute.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lalo_testing.stack import Stack, start_stack

pytestmark = pytest.mark.integration

ADMIN_KEY = f"sk-usage-admin-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def stack(
    tiny_model_path: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("usage")
    stack = start_stack(
        tiny_model_path,
        api_key=f"{ADMIN_KEY}:admin:ops",
        log_dir=tmp / "logs",
        threads=2,
        parallel=2,
        n_ctx=512,
        extra_env={
            # Embedded mode's SQLite, in a file of this test's own.
            "LALO_GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'gateway.db'}",
            "LALO_GATEWAY_REDIS_URL": redis_url,
            "LALO_GATEWAY_GRPC_PORT": "0",
            "LALO_GATEWAY_AUDIT_FLUSH_INTERVAL_S": "0.05",
            "LALO_GATEWAY_AUDIT_SPOOL_PATH": str(tmp / "spool.jsonl"),
        },
    )
    try:
        yield stack
    finally:
        stack.stop()


def admin() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_KEY}"}


def audit_row(stack: Stack, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = httpx.get(
            stack.gateway_url + "/v1/admin/audit",
            params={"request_id": request_id},
            headers=admin(),
        ).json()["data"]
        if rows:
            return dict(rows[0])
        time.sleep(0.1)
    raise AssertionError(f"no audit row for {request_id}")


def test_streamed_and_plain_usage_is_audited_and_limits_tokens(stack: Stack) -> None:
    created = httpx.post(
        stack.gateway_url + "/v1/admin/keys",
        json={"owner": "metered", "role": "developer", "tpm": 40},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    key = {"authorization": f"Bearer {created.json()['key']}"}
    body = {
        "model": stack.model_id,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    plain = httpx.post(
        stack.gateway_url + "/v1/chat/completions",
        json=body,
        headers={**key, "x-request-id": "usage-plain"},
        timeout=60,
    )
    assert plain.status_code == 200, plain.text
    usage = plain.json()["usage"]
    row = audit_row(stack, "usage-plain")
    assert (row["tokens_in"], row["tokens_out"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert row["model"] == stack.model_id

    with httpx.stream(
        "POST",
        stack.gateway_url + "/v1/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        headers={**key, "x-request-id": "usage-stream"},
        timeout=60,
    ) as streamed:
        assert streamed.status_code == 200
        chunks = [
            json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")
        ]
    stream_usage = chunks[-1]["usage"]
    row = audit_row(stack, "usage-stream")
    assert row["tokens_out"] == stream_usage["completion_tokens"] > 0
    assert row["tokens_in"] == stream_usage["prompt_tokens"]

    spent = usage["total_tokens"] + stream_usage["total_tokens"]
    assert spent >= 40, "the tiny chat template makes each request cost 20+ tokens"
    refused = httpx.post(
        stack.gateway_url + "/v1/chat/completions", json=body, headers=key, timeout=60
    )
    assert refused.status_code == 429
    assert "40 tokens per minute" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1

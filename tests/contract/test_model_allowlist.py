"""A key's model allowlist holds for "auto" too, over REST and gRPC alike: "auto" is an
entry like any other, and the router only picks among the key's models."""

from __future__ import annotations

import grpc
import httpx
import openai
import pytest
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_testing.stack import Stack

MESSAGES = [{"role": "user", "content": "hello"}]


def key_with(stack: Stack, admin_key: str, models: list[str]) -> str:
    reply = httpx.post(
        f"{stack.base_url}/admin/keys",
        json={"owner": "allowlisted", "role": "developer", "allowed_models": models},
        headers={"authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"])


def client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)


def test_auto_is_answered_by_an_allowed_model(
    lalo_stack: Stack, stack_role_keys: dict[str, str]
) -> None:
    key = key_with(lalo_stack, stack_role_keys["admin"], ["auto", lalo_stack.model_id])
    raw = client(lalo_stack, key).chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, max_tokens=4
    )
    assert raw.headers["x-lalo-model"] == lalo_stack.model_id


def test_auto_with_no_usable_model_is_refused_saying_why(
    lalo_stack: Stack, stack_role_keys: dict[str, str]
) -> None:
    key = key_with(lalo_stack, stack_role_keys["admin"], ["auto", "some-other-model"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(lalo_stack, key).chat.completions.create(
            model="auto", messages=MESSAGES, max_tokens=4
        )
    message = caught.value.response.json()["error"]["message"]
    assert "may not use any model" in message
    assert "some-other-model" in message


def test_auto_needs_its_own_entry(lalo_stack: Stack, stack_role_keys: dict[str, str]) -> None:
    key = key_with(lalo_stack, stack_role_keys["admin"], [lalo_stack.model_id])
    with pytest.raises(openai.PermissionDeniedError):
        client(lalo_stack, key).chat.completions.create(
            model="auto", messages=MESSAGES, max_tokens=4
        )


async def _grpc_chat(stack: Stack, key: str, allowed: list[str]) -> list[rpb.ChatResponse]:
    request = rpb.ChatRequest(model="auto", allowed_models=allowed)
    request.chat.messages.add(role="user", content="hello over grpc")
    request.sampling.max_tokens = 4
    async with grpc.aio.insecure_channel(stack.gateway_grpc_target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        metadata = (("authorization", f"Bearer {key}"),)
        return [event async for event in stub.Chat(request, metadata=metadata, timeout=60)]


async def test_grpc_applies_the_keys_list_not_the_callers(
    lalo_stack: Stack, stack_role_keys: dict[str, str]
) -> None:
    allowed = key_with(lalo_stack, stack_role_keys["admin"], ["auto", lalo_stack.model_id])
    events = await _grpc_chat(lalo_stack, allowed, [])
    assert events[0].route.model == lalo_stack.model_id
    # A caller cannot widen its key's list by sending one of its own.
    narrow = key_with(lalo_stack, stack_role_keys["admin"], ["auto", "some-other-model"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _grpc_chat(lalo_stack, narrow, [lalo_stack.model_id])
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # "auto" is an entry like any other, as over REST.
    without_auto = key_with(lalo_stack, stack_role_keys["admin"], [lalo_stack.model_id])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _grpc_chat(lalo_stack, without_auto, [])
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

"""The gateway's public gRPC API: same credentials, same answers as REST."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_testing.stack import Stack


def _chat(model: str = "tiny-chat", principal: str = "") -> rpb.ChatRequest:
    request = rpb.ChatRequest(model=model, principal=principal, tenant=principal)
    request.chat.messages.add(role="user", content="hello over grpc")
    request.sampling.max_tokens = 6
    request.sampling.temperature = 0.0
    return request


async def _collect(
    stack: Stack, request: rpb.ChatRequest, key: str | None
) -> list[rpb.ChatResponse]:
    metadata = (("authorization", f"Bearer {key}"),) if key is not None else ()
    async with grpc.aio.insecure_channel(stack.gateway_grpc_target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        return [event async for event in stub.Chat(request, metadata=metadata, timeout=60)]


async def test_chat_streams_route_tokens_and_usage(lalo_stack: Stack) -> None:
    events = await _collect(lalo_stack, _chat(), lalo_stack.api_key)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "route"
    assert kinds[-1] == "complete"
    assert events[0].route.model == "tiny-chat"
    complete = events[-1].complete
    assert complete.usage.completion_tokens == 6
    assert complete.finish_reason == ipb.FINISH_REASON_LENGTH
    assert "".join(e.chunk.text for e in events if e.HasField("chunk"))


@pytest.mark.parametrize("key", [None, "sk-wrong-key"])
async def test_chat_without_valid_credentials_is_unauthenticated(
    lalo_stack: Stack, key: str | None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(lalo_stack, _chat(), key)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_client_supplied_identity_is_ignored(lalo_stack: Stack) -> None:
    # A forged principal changes nothing: the call succeeds as the key's own identity.
    events = await _collect(lalo_stack, _chat(principal="admin@evil"), lalo_stack.api_key)
    assert events[-1].WhichOneof("event") == "complete"


async def test_unknown_model_is_not_found(lalo_stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(lalo_stack, _chat(model="no-such-model"), lalo_stack.api_key)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_models_needs_credentials(lalo_stack: Stack) -> None:
    async with grpc.aio.insecure_channel(lalo_stack.gateway_grpc_target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        reply = await stub.ListModels(
            ipb.ListModelsRequest(),
            metadata=(("authorization", f"Bearer {lalo_stack.api_key}"),),
            timeout=10,
        )
        served = {m.id: m for m in reply.models}
        assert sorted(served) == ["all-minilm-l6-v2", "tiny-chat"]
        assert served["all-minilm-l6-v2"].embeddings
        assert served["all-minilm-l6-v2"].embedding_dimensions == 384
        assert not served["tiny-chat"].embeddings
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListModels(ipb.ListModelsRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_role_without_inference_permission_is_denied(
    lalo_stack: Stack, stack_role_keys: dict[str, str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(lalo_stack, _chat(), stack_role_keys["viewer"])
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_grpc_call_is_audited_rejected_ones_too(
    lalo_stack: Stack, stack_role_keys: dict[str, str]
) -> None:
    ok = _chat()
    ok.request_id = "grpc-audit-ok"
    await _collect(lalo_stack, ok, lalo_stack.api_key)
    denied = _chat()
    denied.request_id = "grpc-audit-denied"
    with pytest.raises(grpc.aio.AioRpcError):
        await _collect(lalo_stack, denied, stack_role_keys["viewer"])

    async def rows(request_id: str) -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=lalo_stack.base_url, timeout=10) as http:
            for _ in range(50):  # the audit buffer flushes every 0.2 s
                reply = await http.get(
                    "/admin/audit",
                    params={"request_id": request_id},
                    headers={"authorization": f"Bearer {stack_role_keys['admin']}"},
                )
                assert reply.status_code == 200, reply.text
                if reply.json()["data"]:
                    return list(reply.json()["data"])
                await asyncio.sleep(0.1)
        return []

    (success,) = await rows("grpc-audit-ok")
    assert success["method"] == "GRPC"
    assert success["status"] == 200
    assert success["model"] == "tiny-chat"
    assert success["tokens_out"] == 6
    (rejected,) = await rows("grpc-audit-denied")
    assert rejected["status"] == 403


async def test_embed_over_grpc_gives_the_rest_apis_vectors(lalo_stack: Stack) -> None:
    texts = ["A man is eating food.", "The girl is carrying a baby."]
    async with grpc.aio.insecure_channel(lalo_stack.gateway_grpc_target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = rpb.EmbedRequest(model="all-minilm-l6-v2", inputs=texts)
        reply = await stub.Embed(
            request, metadata=(("authorization", f"Bearer {lalo_stack.api_key}"),), timeout=30
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Embed(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reply.pool
    assert reply.result.prompt_tokens == 8 + 9
    over_grpc = [list(e.values) for e in reply.result.embeddings]
    async with httpx.AsyncClient(base_url=lalo_stack.gateway_url, timeout=30) as http:
        response = await http.post(
            "/v1/embeddings",
            json={"model": "all-minilm-l6-v2", "input": texts},
            headers={"Authorization": f"Bearer {lalo_stack.api_key}"},
        )
    over_rest = [item["embedding"] for item in response.json()["data"]]
    assert len(over_grpc) == len(over_rest) == 2
    for grpc_vector, rest_vector in zip(over_grpc, over_rest, strict=True):
        assert grpc_vector == pytest.approx(rest_vector, abs=1e-6)

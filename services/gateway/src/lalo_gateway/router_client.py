"""The gateway's one backend: the router over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.errors import error_param
from lalo_common.grpc_client import create_channel, request_metadata

from lalo_gateway.errors import from_grpc
from lalo_gateway.security.principal import Principal


def stamp_caller(request: rpb.ChatRequest | rpb.EmbedRequest, principal: Principal | None) -> None:
    """The request's identity from the verified caller, never from what a client sent: the
    principal, the tenant, and for chat the key's model allowlist the router routes "auto"
    within (empty: any model). An embed request names its model, already checked against
    the allowlist, so it carries no list."""
    request.principal = principal.subject if principal is not None else ""
    request.tenant = principal.tenant if principal is not None else ""
    if not isinstance(request, rpb.ChatRequest):
        return
    del request.allowed_models[:]
    if principal is not None and principal.allowed_models is not None:
        request.allowed_models.extend(sorted(principal.allowed_models))


class RouterClient:
    def __init__(self, target: str, *, service_token: str = "", timeout_s: float = 600.0) -> None:
        self.channel = create_channel(target, service_token=service_token)
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self.channel.close()

    async def chat(self, request: rpb.ChatRequest) -> AsyncIterator[rpb.ChatResponse]:
        """Router events; gRPC failures become APIError (OpenAI-shaped) for the caller."""
        call = self.stub.Chat(
            request, timeout=self.timeout_s, metadata=request_metadata(request.request_id)
        )
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details() or "", error_param(exc)) from None
        finally:
            call.cancel()

    async def embed(self, request: rpb.EmbedRequest) -> rpb.EmbedResponse:
        """One Embed call; a gRPC failure becomes APIError (OpenAI-shaped) for the caller."""
        try:
            reply: rpb.EmbedResponse = await self.stub.Embed(
                request, timeout=self.timeout_s, metadata=request_metadata(request.request_id)
            )
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details() or "", error_param(exc)) from None
        return reply

    async def list_models(self, timeout_s: float = 5.0) -> list[ipb.ModelInfo]:
        try:
            reply = await self.stub.ListModels(ipb.ListModelsRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details() or "", error_param(exc)) from None
        return list(reply.models)

    async def ready(self, timeout_s: float) -> tuple[bool, str]:
        try:
            health = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return False, f"router unreachable ({exc.code().name})"
        if health.status != health_pb2.HealthCheckResponse.SERVING:
            return False, "router not serving"
        try:
            models = await self.list_models(timeout_s)
        except Exception:
            return False, "router cannot list models"
        if not models:
            return False, "no model is being served"
        return True, f"{len(models)} model(s)"

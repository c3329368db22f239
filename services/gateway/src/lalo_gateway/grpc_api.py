"""The gateway's public gRPC API: ``lalo.router.v1.RouterService`` with the REST API's checks.

gRPC clients use the same contract the gateway uses internally, but every call here is
authenticated from the ``authorization`` metadata (API key or JWT), authorised (RBAC and the
key's model allowlist), rate limited and charged with real token usage, Chat and Embed
alike. Identity fields a client sends (principal, tenant) are replaced by the verified
identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.errors import PARAM_METADATA, LaloError, error_param
from lalo_common.grpc_client import request_metadata
from lalo_common.grpc_server import GrpcServer, request_id_of

from lalo_gateway.router_client import RouterClient, stamp_caller
from lalo_gateway.security.audit import AuditRecord
from lalo_gateway.security.edge import check_generation_limits, check_input_count
from lalo_gateway.security.errors import ModelNotAllowed
from lalo_gateway.security.grpc_auth import authorize_call
from lalo_gateway.security.http import make_request_id
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Permission
from lalo_gateway.security.runtime import SecurityRuntime
from lalo_gateway.serving import UsageTotal, prompts_in

log = logging.getLogger(__name__)
AUTO_MODELS = frozenset({"", "auto"})
SERVICE_NAME = rpb.DESCRIPTOR.services_by_name["RouterService"].full_name
CHAT_PATH = f"/{SERVICE_NAME}/Chat"
EMBED_PATH = f"/{SERVICE_NAME}/Embed"
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class PublicRouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, router: RouterClient, runtime: SecurityRuntime) -> None:
        self._router = router
        self._runtime = runtime

    @contextlib.asynccontextmanager
    async def _audited(
        self, path: str, model: str, request_id: str, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[AuditRecord]:
        """One audit record per call, rejected calls included (as for REST)."""
        record = AuditRecord(
            method="GRPC",
            path=path,
            route=path,
            status=200,
            model=model,
            client_addr=context.peer() or "",
        )
        # The request id is settled first, so a rejected call's record carries it too.
        record.request_id = make_request_id(request_id_of(context) or request_id)
        started = time.perf_counter()
        try:
            yield record
        except LaloError as exc:
            record.status = HTTP_STATUS.get(exc.code, 500)
            record.error_code = exc.code.name.lower()
            raise
        except (grpc.aio.AbortError, asyncio.CancelledError):
            if record.status == 200:
                record.status = 499  # client closed or aborted mid-stream
            raise
        finally:
            record.latency_ms = (time.perf_counter() - started) * 1000
            self._runtime.audit.record(record)

    async def _authorize(
        self, context: grpc.aio.ServicerContext, record: AuditRecord, model: str
    ) -> Principal:
        """The verified caller, allowed inference and ``model``; recorded for the audit."""
        principal = await authorize_call(self._runtime, context, Permission.INFERENCE)
        record.subject = principal.subject
        record.principal_kind = principal.kind
        record.role = principal.role.value
        record.key_id = principal.key_id
        record.key_prefix = principal.key_prefix
        if not principal.may_use_model(model):
            raise ModelNotAllowed(f"This API key is not allowed to use model '{model}'.")
        return principal

    @staticmethod
    async def _relay_failure(
        exc: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext, record: AuditRecord
    ) -> None:
        """The router's status, passed on to the client as it is, with the field at fault
        (the ``lalo-error-param`` trailer) when the router named one."""
        record.status = HTTP_STATUS.get(exc.code(), 500)
        record.error_code = exc.code().name.lower()
        param = error_param(exc)
        trailing = ((PARAM_METADATA, param),) if param else ()
        await context.abort(
            exc.code(), exc.details() or exc.code().name, trailing_metadata=trailing
        )

    async def Chat(
        self, request: rpb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.ChatResponse]:
        async with self._audited(CHAT_PATH, request.model, request.request_id, context) as record:
            async for event in self._chat(request, context, record):
                yield event

    async def _chat(
        self, request: rpb.ChatRequest, context: grpc.aio.ServicerContext, record: AuditRecord
    ) -> AsyncIterator[rpb.ChatResponse]:
        # As over REST, "auto" is an allowlist entry like any other.
        model = request.model if request.model not in AUTO_MODELS else "auto"
        principal = await self._authorize(context, record, model)
        # The limits REST requests meet (messages, max_tokens, n), so the gRPC door is no
        # wider than the HTTP one.
        settings = self._runtime.settings
        check_generation_limits(
            messages=len(request.chat.messages) if request.HasField("chat") else None,
            max_tokens=request.sampling.max_tokens
            if request.sampling.HasField("max_tokens")
            else None,
            max_messages=settings.max_messages,
            max_tokens_limit=settings.max_tokens_limit,
            choices=request.n,
            prompts=prompts_in(request),
        )
        forwarded = rpb.ChatRequest()
        forwarded.CopyFrom(request)
        forwarded.request_id = record.request_id
        stamp_caller(forwarded, principal)
        await context.send_initial_metadata(request_metadata(forwarded.request_id))
        call = self._router.stub.Chat(
            forwarded,
            timeout=self._router.timeout_s,
            metadata=request_metadata(forwarded.request_id),
        )
        tokens = 0
        total = UsageTotal(request.n)
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "route" and not principal.may_use_model(event.route.model):
                    # "auto" picked a model this key may not use.
                    raise ModelNotAllowed(
                        f"This API key is not allowed to use model '{event.route.model}', "
                        "which the router chose; name an allowed model explicitly."
                    )
                if kind == "route":
                    record.model = event.route.model
                if kind == "complete":
                    # One complete per choice: each prompt counts once, every completion.
                    usage = total.add(event.choice, event.complete.usage)
                    tokens = usage.prompt_tokens + usage.completion_tokens
                    record.tokens_in = usage.prompt_tokens
                    record.tokens_out = usage.completion_tokens
                yield event
        except grpc.aio.AioRpcError as exc:
            await self._relay_failure(exc, context, record)
        finally:
            call.cancel()
            if tokens:
                await self._runtime.limiter.charge_tokens(principal, tokens)

    async def Embed(
        self, request: rpb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> rpb.EmbedResponse:
        async with self._audited(EMBED_PATH, request.model, request.request_id, context) as record:
            principal = await self._authorize(context, record, request.model)
            check_input_count(len(request.inputs), self._runtime.settings.max_embedding_inputs)
            forwarded = rpb.EmbedRequest()
            forwarded.CopyFrom(request)
            forwarded.request_id = record.request_id
            stamp_caller(forwarded, principal)
            await context.send_initial_metadata(request_metadata(forwarded.request_id))
            try:
                reply: rpb.EmbedResponse = await self._router.stub.Embed(
                    forwarded,
                    timeout=self._router.timeout_s,
                    metadata=request_metadata(forwarded.request_id),
                )
            except grpc.aio.AioRpcError as exc:
                await self._relay_failure(exc, context, record)
                raise  # not reached (abort raises); tells the type checker ``reply`` is set
            record.model = reply.result.model or record.model
            record.tokens_in = reply.result.prompt_tokens
            await self._runtime.limiter.charge_tokens(principal, reply.result.prompt_tokens)
            return reply

    async def ListModels(
        self, request: ipb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListModelsResponse:
        principal = await authorize_call(self._runtime, context, Permission.MODELS_READ)
        models = await self._router.list_models()
        return ipb.ListModelsResponse(models=[m for m in models if principal.may_use_model(m.id)])


async def start_public_grpc(
    router: RouterClient, runtime: SecurityRuntime, address: str, grace_period_s: float
) -> GrpcServer:
    # Public callers are users, not LALO services: no internal service token here.
    server = GrpcServer(service_names=[SERVICE_NAME], grace_period_s=grace_period_s)
    router_pb2_grpc.add_RouterServiceServicer_to_server(
        PublicRouterServicer(router, runtime), server.server
    )
    port = await server.start(address)
    await server.set_serving(True)
    log.info("public gRPC API on port %d", port)
    return server

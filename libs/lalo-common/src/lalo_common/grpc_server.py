"""The one factory every LALO gRPC server comes from.

It adds what each server must have: exception → status mapping, the internal service
credential check, ``grpc.health.v1``, reflection, request-id logging and a graceful stop
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lalo_common.auth import REQUEST_ID_METADATA, SERVICE_TOKEN_METADATA, constant_time_equals
from lalo_common.errors import PARAM_METADATA, LaloError

log = logging.getLogger(__name__)

# Probes (Kubernetes native gRPC probes, grpcurl) carry no credentials.
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

DEFAULT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode() if isinstance(value, bytes) else value
    return ""


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    return _metadata_value(context, REQUEST_ID_METADATA)


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, LaloError):
        trailing = ((PARAM_METADATA, exc.param),) if exc.param else ()
        await context.abort(exc.code, exc.message, trailing_metadata=trailing)
    log.exception("unhandled error in %s (request %s)", method, request_id_of(context))
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to statuses and checks the service credential."""

    def __init__(self, service_token: str = "") -> None:
        self._token = service_token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        needs_token = bool(self._token) and not method.startswith(UNAUTHENTICATED_PREFIXES)
        metadata = dict(handler_call_details.invocation_metadata or ())
        presented = metadata.get(SERVICE_TOKEN_METADATA, "")
        if isinstance(presented, bytes):
            presented = presented.decode()
        authorised = not needs_token or constant_time_equals(str(presented), self._token)
        return _wrap(handler, method, authorised)


def _wrap(handler: grpc.RpcMethodHandler, method: str, authorised: bool) -> grpc.RpcMethodHandler:
    async def deny(context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "missing or invalid service credential"
        )

    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not authorised:
                await deny(context)
            try:
                return await inner_uu(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            if not authorised:
                await deny(context)
            try:
                async for item in inner_us(request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    # Client- and bidi-streaming handlers only get the credential check.
    if not authorised:
        if handler.stream_unary:

            async def denied_su(_it: Any, context: grpc.aio.ServicerContext) -> None:
                await deny(context)

            return grpc.stream_unary_rpc_method_handler(
                denied_su, handler.request_deserializer, handler.response_serializer
            )

        async def denied_ss(_it: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await deny(context)
            yield None  # pragma: no cover - abort raises first

        return grpc.stream_stream_rpc_method_handler(
            denied_ss, handler.request_deserializer, handler.response_serializer
        )
    return handler


class GrpcServer:
    """A started-on-demand grpc.aio server with health and reflection already wired."""

    def __init__(
        self,
        *,
        service_names: Iterable[str],
        service_token: str = "",
        grace_period_s: float = 5.0,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        self.server = grpc.aio.server(
            interceptors=[ServerInterceptor(service_token)],
            options=DEFAULT_OPTIONS + list(options or []),
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.grace_period_s = grace_period_s
        self.port = 0
        self._stopped = asyncio.Event()

    async def start(self, address: str) -> int:
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC server to {address}")
        await self.server.start()
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        for name in self.service_names:
            await self.health.set(name, status)

    async def stop(self) -> None:
        await self.set_serving(False)
        await self.server.stop(self.grace_period_s)
        self._stopped.set()

    async def serve_until_signalled(self) -> None:
        """Block until SIGTERM/SIGINT, then stop gracefully (in-flight calls get the grace time)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(self.server.wait_for_termination())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("signal received: stopping gracefully (%.1fs grace)", self.grace_period_s)
            await self.stop()
        for task in (waiter, stopper):
            task.cancel()

"""Builds the gRPC server: health NOT_SERVING while the model loads, SERVING once it is up."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.grpc_server import GrpcServer

from lalo_inference_large.domain import Backend
from lalo_inference_large.servicer import InferenceServicer
from lalo_inference_large.settings import InferenceLargeSettings

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name


async def create_backend(settings: InferenceLargeSettings) -> Backend:
    """The configured backend, started (for vLLM: the engine loaded)."""
    if settings.backend == "openai-upstream":
        from lalo_inference_large.upstream_backend import OpenAIUpstreamBackend

        return await OpenAIUpstreamBackend.create(settings)
    from lalo_inference_large.vllm_backend import VllmBackend

    return await VllmBackend.create(settings)


class InferenceLargeServer:
    """The gRPC server and its backend; ``start`` binds, ``attach``/``load`` make it ready."""

    def __init__(self, settings: InferenceLargeSettings) -> None:
        self.settings = settings
        self.grpc = GrpcServer(
            service_names=[SERVICE_NAME],
            service_token=settings.service_token.get_secret_value(),
            grace_period_s=settings.grace_period_s,
        )
        self.servicer = InferenceServicer(stream_hold_s=settings.stream_hold_ms / 1000.0)
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, self.grpc.server)
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def backend(self) -> Backend | None:
        return self.servicer.backend

    async def start(self, address: str | None = None) -> int:
        port = await self.grpc.start(address or self.settings.listen_address)
        await self.grpc.set_serving(False)
        return port

    async def attach(self, backend: Backend) -> None:
        self.servicer.backend = backend
        await self.grpc.set_serving(True)
        if hasattr(backend, "check_health"):
            self._watchdog = asyncio.create_task(self._watch(backend))

    async def _watch(self, backend: Backend) -> None:
        """Reports NOT_SERVING once the engine has died, so probes restart the pod."""
        while True:
            await asyncio.sleep(self.settings.health_check_interval_s)
            try:
                await backend.check_health()  # type: ignore[attr-defined]
            except Exception:
                log.exception("the engine failed its health check; reporting NOT_SERVING")
                await self.grpc.set_serving(False)
                return

    async def load(self) -> None:
        log.info("loading %s backend for %s", self.settings.backend, self.settings.model_name)
        await self.attach(await create_backend(self.settings))
        log.info("ready: serving %s", self.settings.model_name)

    async def stop(self, *, close_backend: bool = True) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.grpc.stop()
        backend, self.servicer.backend = self.servicer.backend, None
        if backend is not None and close_backend:
            await backend.close()


def build_server(settings: InferenceLargeSettings) -> InferenceLargeServer:
    return InferenceLargeServer(settings)

"""Embeddings: the named embedding model, answered by a healthy, least-busy replica serving it.

There is nothing to classify and no pool to choose: the caller names an embedding model
(``auto`` routes chat requests) and any replica, in any pool, that lists it with
``ModelInfo.embeddings`` may answer. An embedding has no side effects, so a replica that
could not answer (unreachable, stopping, busy, or past the router's own backend timeout) is
replaced by another once; errors about the request itself (an input longer than the
model's context, ...) pass through with their status and message.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    LaloError,
    NotFound,
    ResourceExhausted,
    Unavailable,
    error_for_code,
    error_param,
)
from lalo_common.grpc_client import request_metadata
from prometheus_client import Counter

from lalo_router.complex_path import WORKFLOW_MODEL
from lalo_router.forwarding import AUTO_MODELS, NOT_REPLICA_FAULTS, RETRYABLE
from lalo_router.replicas import Replica, ReplicaSet

log = logging.getLogger(__name__)

EMBED_REQUESTS = Counter(
    "lalo_router_embed_requests_total",
    "Embedding requests, by model, the pool of the replica that answered or failed last, "
    "and outcome",
    ["model", "pool", "outcome"],
)
# The first replica and, when it could not answer, one other.
EMBED_ATTEMPTS = 2


class Embedder:
    """Answers RouterService.Embed over ``replicas``; ``timeout_s`` bounds one backend call
    (LALO_ROUTER_BACKEND_TIMEOUT_S), the caller's own deadline bounds all of them."""

    def __init__(self, replicas: ReplicaSet, timeout_s: float = 600.0) -> None:
        self.replicas = replicas
        self.timeout_s = timeout_s

    async def embed(
        self, request: rpb.EmbedRequest, time_remaining: float | None = None
    ) -> rpb.EmbedResponse:
        tried: list[Replica] = []
        try:
            response = await self._embed(request, time_remaining, tried)
        except LaloError as exc:
            self._count(request.model, tried, exc.code.name.lower())
            raise
        except asyncio.CancelledError:
            self._count(request.model, tried, "cancelled")
            raise
        self._count(request.model, tried, "ok")
        return response

    def _count(self, model: str, tried: list[Replica], outcome: str) -> None:
        # Only ids some replica listed become label values: a caller's typos must not
        # create new series.
        known = self.replicas.known(model) is not None
        pool = tried[-1].pool if tried else ""
        EMBED_REQUESTS.labels(model if known else "", pool, outcome).inc()

    def _embedding_model(self, model: str) -> str:
        """``model`` when it names an embedding model a replica has listed; else the error
        that tells the caller which they may name."""
        listed = ", ".join(self.replicas.embedding_models()) or "none"
        if model in AUTO_MODELS or model == WORKFLOW_MODEL:
            what = f"{model!r} routes chat requests" if model else "'model' is required"
            raise InvalidArgument(
                f"{what}: name an embedding model (embedding models: {listed})", param="model"
            )
        if self.replicas.known(model, embeddings=True) is not None:
            return model
        if self.replicas.known(model) is None:
            raise NotFound(
                f"The model '{model}' does not exist or is not served (embedding models: {listed})"
            )
        raise InvalidArgument(
            f"'{model}' generates text, it does not make embeddings; embedding models: {listed}",
            param="model",
        )

    async def _embed(
        self, request: rpb.EmbedRequest, time_remaining: float | None, tried: list[Replica]
    ) -> rpb.EmbedResponse:
        """The answer of the first replica that gives one; ``tried`` gets each replica
        asked, in order."""
        model = self._embedding_model(request.model)
        if not request.inputs:
            raise InvalidArgument(
                "'input' is empty: give at least one text to embed", param="input"
            )
        embed = ipb.EmbedRequest(request_id=request.request_id, model=model, inputs=request.inputs)
        if request.HasField("dimensions"):
            embed.dimensions = request.dimensions
        deadline = time.monotonic() + time_remaining if time_remaining is not None else None
        last_error: LaloError | None = None
        for _attempt in range(EMBED_ATTEMPTS):
            candidates = self.replicas.candidates(
                model=model, embeddings=True, exclude={r.target for r in tried}
            )
            if not candidates:
                break
            left = deadline - time.monotonic() if deadline is not None else None
            if left is not None and left <= 0:
                raise DeadlineExceeded("the request's deadline passed before a replica answered")
            timeout = min(self.timeout_s, left) if left is not None else self.timeout_s
            # As for chats: the caller's own deadline expiring says nothing about the replica.
            caller_bound = timeout < self.timeout_s
            replica = candidates[0]
            tried.append(replica)
            try:
                result = await self._call(replica, embed, timeout)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                message = exc.details() or code.name
                timed_out = code is grpc.StatusCode.DEADLINE_EXCEEDED
                if code not in NOT_REPLICA_FAULTS and not (timed_out and caller_bound):
                    replica.record_failure()
                # A replica that outlived the router's own timeout may be hung: ask another.
                if code in RETRYABLE or (timed_out and not caller_bound):
                    log.warning(
                        "replica %s failed to embed with %s (%s); trying another",
                        replica.target,
                        model,
                        code.name,
                    )
                    last_error = error_for_code(code, message)
                    continue
                raise error_for_code(code, message, error_param(exc)) from None
            replica.record_success()
            return rpb.EmbedResponse(result=result, pool=replica.pool, replica=replica.target)
        if last_error is not None:
            raise Unavailable(
                f"no replica serving {model!r} answered ({len(tried)} tried): {last_error.message}"
            )
        if self.replicas.candidates(model=model, embeddings=True, include_saturated=True):
            # Healthy but every one at its cap: the caller may retry later (429 upstream).
            raise ResourceExhausted(
                f"every replica serving {model!r} is at its limit of outstanding requests"
            )
        raise Unavailable(f"no healthy replica serves {model!r}")

    @staticmethod
    async def _call(
        replica: Replica, embed: ipb.EmbedRequest, timeout_s: float
    ) -> ipb.EmbedResponse:
        replica.outstanding += 1
        call = replica.stub.Embed(
            embed, timeout=timeout_s, metadata=request_metadata(embed.request_id)
        )
        try:
            return await call
        finally:
            replica.outstanding -= 1
            # Caller gone: make sure the backend stops too (a no-op once it answered).
            call.cancel()

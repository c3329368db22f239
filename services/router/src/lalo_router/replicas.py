"""The router's view of its backends: which models each replica serves and how busy it is.

Each replica is one inference server (any implementation of lalo.inference.v1). A refresh
loop asks each for its models; a replica that fails the refresh is marked unhealthy and a
circuit breaker keeps it out for a while after repeated request failures. A pool may cap
the requests each of its replicas has in flight (``max_outstanding``): a replica at its cap
is *saturated* and takes no new request until one finishes.

A replica may serve text models and embedding models side by side (one inference-small
process can load a chat GGUF and an embedding GGUF): ``ModelInfo.embeddings`` tells them
apart, and callers say which kind they need (``embeddings=`` in ``candidates``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import NotFound, Unavailable
from lalo_common.grpc_client import create_channel

log = logging.getLogger(__name__)

FAILURES_TO_OPEN = 3
OPEN_SECONDS = 10.0


@dataclass
class Replica:
    pool: str
    target: str
    stub: inference_pb2_grpc.InferenceServiceStub
    channel: grpc.aio.Channel
    models: dict[str, pb.ModelInfo] = field(default_factory=dict)
    healthy: bool = False
    outstanding: int = 0
    consecutive_failures: int = 0
    open_until: float = 0.0
    max_outstanding: int | None = None  # None: no cap

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.open_until

    @property
    def saturated(self) -> bool:
        return self.max_outstanding is not None and self.outstanding >= self.max_outstanding

    def serves(self, model: str | None = None, *, embeddings: bool | None = None) -> bool:
        """Whether it lists ``model`` (None: any model) as an embedding model (``embeddings``
        True) or a text model (False); either kind when ``embeddings`` is None. Without
        ``model`` or ``embeddings`` every replica qualifies, models or not."""
        if model is None:
            if embeddings is None:
                return True
            return any(info.embeddings == embeddings for info in self.models.values())
        info = self.models.get(model)
        return info is not None and (embeddings is None or info.embeddings == embeddings)

    def text_models(self) -> list[str]:
        """The models that generate text (not embedding models), in the order it lists them."""
        return [model for model, info in self.models.items() if not info.embeddings]

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.open_until = 0.0

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= FAILURES_TO_OPEN:
            self.open_until = time.monotonic() + OPEN_SECONDS
            log.warning("circuit open for %s (%d failures)", self.target, self.consecutive_failures)


class ReplicaSet:
    def __init__(
        self,
        backends: list[tuple[str, str]],
        service_token: str = "",
        max_outstanding: Mapping[str, int | None] | None = None,
    ) -> None:
        """``backends``: (pool, target) pairs; ``max_outstanding``: the cap per replica, by
        pool (pools left out have none)."""
        limits = max_outstanding or {}
        self.replicas: list[Replica] = []
        for pool, target in backends:
            channel = create_channel(target, service_token=service_token)
            self.replicas.append(
                Replica(
                    pool,
                    target,
                    inference_pb2_grpc.InferenceServiceStub(channel),
                    channel,
                    max_outstanding=limits.get(pool),
                )
            )
        self._task: asyncio.Task[None] | None = None

    async def refresh(self, timeout_s: float = 2.0) -> None:
        async def one(replica: Replica) -> None:
            try:
                reply = await replica.stub.ListModels(pb.ListModelsRequest(), timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                if replica.healthy:
                    log.warning("replica %s unhealthy: %s", replica.target, exc.code().name)
                replica.healthy = False
                return
            replica.models = {m.id: m for m in reply.models}
            if not replica.healthy:
                log.info(
                    "replica %s (%s) serves %s",
                    replica.target,
                    replica.pool,
                    ", ".join(replica.models) or "no models",
                )
            replica.healthy = True

        await asyncio.gather(*(one(r) for r in self.replicas))

    def start(self, interval_s: float) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await self.refresh()
                except Exception:  # keep refreshing whatever one round did
                    log.exception("replica refresh failed")

        self._task = asyncio.create_task(loop())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        for replica in self.replicas:
            await replica.channel.close()

    def models(self) -> dict[str, pb.ModelInfo]:
        merged: dict[str, pb.ModelInfo] = {}
        for replica in self.replicas:
            if replica.healthy:
                for model_id, info in replica.models.items():
                    merged.setdefault(model_id, info)
        return merged

    def known(self, model: str, *, embeddings: bool | None = None) -> pb.ModelInfo | None:
        """What the replicas last said about ``model`` (as the kind ``embeddings`` asks for,
        see Replica.serves), healthy ones first; a replica that is down now counts too (a
        model it served is known, just unavailable). None: no replica has listed it so."""
        for replica in sorted(self.replicas, key=lambda r: not r.healthy):
            if replica.serves(model, embeddings=embeddings):
                return replica.models[model]
        return None

    def embedding_models(self) -> list[str]:
        """The embedding models healthy replicas serve, sorted (for error messages)."""
        return sorted(
            {
                model
                for replica in self.replicas
                if replica.healthy
                for model, info in replica.models.items()
                if info.embeddings
            }
        )

    def pools(self) -> dict[str, list[Replica]]:
        out: dict[str, list[Replica]] = {}
        for replica in self.replicas:
            out.setdefault(replica.pool, []).append(replica)
        return out

    def candidates(
        self,
        *,
        model: str | None = None,
        pool: str | None = None,
        exclude: set[str] | None = None,
        include_saturated: bool = False,
        embeddings: bool | None = None,
    ) -> list[Replica]:
        """Available replicas for a model or pool, least outstanding requests first.
        Saturated replicas are left out unless ``include_saturated``; ``embeddings``: only
        replicas serving ``model`` (or, without one, some model) of that kind (see
        Replica.serves)."""
        now = time.monotonic()
        chosen = [
            r
            for r in self.replicas
            if r.available(now)
            and (include_saturated or not r.saturated)
            and r.serves(model, embeddings=embeddings)
            and (pool is None or r.pool == pool)
            and r.target not in (exclude or set())
        ]
        chosen.sort(key=lambda r: r.outstanding)
        return chosen

    def model_for_pool(self, pool: str, allowed: frozenset[str] = frozenset()) -> str:
        """The first text model the least busy replica of ``pool`` serves (of ``allowed``,
        when given): never an embedding model, whatever the order the replica lists them in."""
        for replica in self.candidates(pool=pool, include_saturated=True, embeddings=False):
            for model in replica.text_models():
                if not allowed or model in allowed:
                    return model
        raise Unavailable(f"no healthy replica of pool {pool!r} serves a text model")

    def require_model(self, model: str, routes: Iterable[str] = ()) -> None:
        """NotFound unless a replica serves ``model``; the message lists what a caller may
        name instead: the served models and the router's ``routes`` ("auto", ...)."""
        if model not in self.models():
            known = ", ".join(sorted({*self.models(), *routes})) or "none"
            raise NotFound(
                f"The model '{model}' does not exist or is not served (available: {known})"
            )

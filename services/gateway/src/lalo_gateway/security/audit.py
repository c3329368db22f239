"""The audit trail: one append-only record per request, written off the request path.

``AuditBuffer.record`` only appends to memory, so a slow or failing database never delays a
response. A background task writes batches; a failed batch stays at the head of the queue
and is retried with exponential backoff, so nothing is dropped while the process lives. On
shutdown whatever could not be written is spooled to a JSON-lines file, which the next start
loads back before anything else. Log lines about failures carry counts and error types only,
never record contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass
class AuditRecord:
    method: str
    path: str
    status: int
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    request_id: str = ""
    route: str = ""  # the route template, e.g. /v1/admin/keys/{key_id}
    subject: str = ""  # principal (key owner / token subject); empty when unauthenticated
    principal_kind: str = ""
    role: str = ""
    key_id: str = ""
    key_prefix: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    client_addr: str = ""
    error_code: str = ""
    # Prompt and output, only when the key's policy says so (``Principal.store_content``).
    content: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ts"] = self.ts.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRecord:
        data = dict(data)
        data["ts"] = datetime.fromisoformat(data["ts"])
        return cls(**data)


class AuditSink(Protocol):
    """Where records end up (``lalo_gateway.db.repositories.SqlAuditStore``). Blocking;
    called from a worker thread. Writing the same record twice must be harmless."""

    def write(self, records: Sequence[AuditRecord]) -> None: ...


class AuditBuffer:
    def __init__(
        self,
        sink: AuditSink,
        *,
        flush_interval_s: float = 0.2,
        batch_size: int = 200,
        retry_max_s: float = 10.0,
        spool_path: str | os.PathLike[str] | None = None,
        warn_above: int = 100_000,
    ) -> None:
        self._sink = sink
        self._interval = flush_interval_s
        self._batch = batch_size
        self._retry_max = retry_max_s
        self._spool = Path(spool_path) if spool_path else None
        self._warn_above = warn_above
        self._queue: deque[AuditRecord] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()  # one writer at a time: a batch is popped once
        self._failures = 0
        self.written = 0

    def record(self, record: AuditRecord) -> None:
        """Queue ``record``; never blocks and never raises."""
        self._queue.append(record)
        if len(self._queue) >= self._batch:
            self._wake.set()
        if len(self._queue) == self._warn_above:
            log.warning(
                "audit backlog reached %d records; the audit store is not keeping up",
                self._warn_above,
            )

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        self._load_spool()
        self._task = asyncio.create_task(self._run(), name="audit-flusher")

    async def _run(self) -> None:
        delay = self._interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            backoff = min(self._retry_max, max(self._interval, delay * 2))
            delay = self._interval if await self.flush_once() else backoff

    async def flush_once(self) -> bool:
        """Write everything queued, batch by batch; False when a write failed (the batch
        stays queued for the next try)."""
        async with self._flushing:
            return await self._flush_locked()

    async def _flush_locked(self) -> bool:
        while self._queue:
            batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
            try:
                await asyncio.to_thread(self._sink.write, batch)
            except Exception as exc:
                self._failures += 1
                if self._failures == 1 or self._failures % 20 == 0:
                    log.warning(
                        "audit write failed (%s); %d record(s) kept for retry",
                        type(exc).__name__,
                        len(self._queue),
                    )
                return False
            for _ in batch:
                self._queue.popleft()
            self.written += len(batch)
            if self._failures:
                log.info("audit writes recovered after %d failed attempt(s)", self._failures)
                self._failures = 0
        return True

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (bounded by ``timeout_s``), then spool the rest to disk."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline:
            if not await self.flush_once():
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if self._queue:
            self._write_spool()

    def _write_spool(self) -> None:
        if self._spool is None:
            log.error(
                "audit store unavailable at shutdown: %d record(s) lost (no spool path)",
                len(self._queue),
            )
            return
        self._spool.parent.mkdir(parents=True, exist_ok=True)
        with self._spool.open("a", encoding="utf-8") as fh:
            while self._queue:
                fh.write(json.dumps(self._queue.popleft().to_json()) + "\n")
        log.warning("audit store unavailable at shutdown: records spooled to %s", self._spool)

    def _load_spool(self) -> None:
        if self._spool is None or not self._spool.exists():
            return
        loaded: list[AuditRecord] = []
        claimed = self._spool.with_suffix(f".{os.getpid()}.loading")
        try:
            self._spool.rename(claimed)  # one replica claims the file
        except OSError:
            return
        with claimed.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    loaded.append(AuditRecord.from_json(json.loads(line)))
        self._queue.extendleft(reversed(loaded))
        claimed.unlink()
        log.info("loaded %d spooled audit record(s)", len(loaded))

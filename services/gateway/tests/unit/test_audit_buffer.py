"""The audit buffer never blocks, never loses a record, and never logs record contents."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from lalo_gateway.security.audit import AuditBuffer, AuditRecord


class FlakySink:
    def __init__(self, failures: int = 0, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.delay_s = delay_s
        self.rows: dict[str, AuditRecord] = {}
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def write(self, records: Sequence[AuditRecord]) -> None:
        self.calls += 1
        self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database down: prompt=SECRET-CONTENT")
        for r in records:
            self.rows[r.id] = r


def rec(i: int) -> AuditRecord:
    return AuditRecord(
        method="POST",
        path="/v1/chat/completions",
        status=200,
        request_id=f"r{i}",
        content={"prompt": "SECRET-CONTENT"},
    )


async def test_failed_writes_are_retried_without_loss(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = FlakySink(failures=3)
    buffer = AuditBuffer(sink, flush_interval_s=0.01, batch_size=4, retry_max_s=0.05)
    await buffer.start()
    records = [rec(i) for i in range(10)]
    for r in records:
        buffer.record(r)
    for _ in range(500):
        if len(sink.rows) == 10:
            break
        await asyncio.sleep(0.01)
    await buffer.stop()
    assert set(sink.rows) == {r.id for r in records}
    assert "SECRET-CONTENT" not in caplog.text
    assert "audit write failed (ConnectionError)" in caplog.text


async def test_record_does_not_wait_for_a_stuck_sink() -> None:
    sink = FlakySink()
    sink.gate.clear()  # every write blocks
    buffer = AuditBuffer(sink, flush_interval_s=0.01, batch_size=1)
    await buffer.start()
    buffer.record(rec(0))
    await asyncio.sleep(0.05)  # a write is now stuck in the worker thread
    for i in range(1, 1000):
        buffer.record(rec(i))  # returns at once although the sink is stuck
    assert buffer.pending == 1000
    sink.gate.set()
    await buffer.stop(timeout_s=10)
    assert len(sink.rows) == 1000


async def test_unwritten_records_are_spooled_and_reloaded(tmp_path: Path) -> None:
    spool = tmp_path / "audit.jsonl"
    down = FlakySink(failures=10**6)
    buffer = AuditBuffer(down, flush_interval_s=0.01, spool_path=spool)
    await buffer.start()
    records = [rec(i) for i in range(5)]
    for r in records:
        buffer.record(r)
    await buffer.stop(timeout_s=0.1)
    assert spool.exists()
    assert down.rows == {}

    up = FlakySink()
    again = AuditBuffer(up, flush_interval_s=0.01, spool_path=spool)
    await again.start()
    await again.stop()
    assert list(up.rows) == [r.id for r in records]
    assert up.rows[records[0].id].request_id == "r0"
    assert not spool.exists()


async def test_no_spool_path_logs_the_loss_without_contents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    buffer = AuditBuffer(FlakySink(failures=10**6), flush_interval_s=0.01)
    await buffer.start()
    buffer.record(rec(1))
    await buffer.stop(timeout_s=0.05)
    assert "1 record(s) lost" in caplog.text
    assert "SECRET-CONTENT" not in caplog.text


async def test_concurrent_flushes_write_each_record_once() -> None:
    sink = FlakySink()
    buffer = AuditBuffer(sink, flush_interval_s=0.001, batch_size=3)
    await buffer.start()
    records = [rec(i) for i in range(50)]
    for r in records:
        buffer.record(r)
    results = await asyncio.gather(*(buffer.flush_once() for _ in range(5)))
    await buffer.stop()
    assert all(results)
    assert set(sink.rows) == {r.id for r in records}
    assert buffer.written == 50

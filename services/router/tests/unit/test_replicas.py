"""The router's view of its replicas, against fake inference servers on loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lalo_common.errors import NotFound, Unavailable
from lalo_router import replicas as replicas_module
from lalo_router.replicas import FAILURES_TO_OPEN, ReplicaSet
from lalo_testing.inference import FakeServer, start_fake_inference, wait_until
from lalo_testing.stack import free_port


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeServer]]:
    servers = [
        await start_fake_inference("a", ["model-a", "shared"]),
        await start_fake_inference("b", ["model-b", "shared"]),
    ]
    yield servers
    for server in servers:
        await server.stop()


async def _replica_set(backends: list[tuple[str, str]], token: str = "") -> ReplicaSet:
    replicas = ReplicaSet(backends, service_token=token)
    await replicas.refresh(timeout_s=2.0)
    return replicas


async def test_refresh_learns_models_and_health(fakes: list[FakeServer]) -> None:
    a, b = fakes
    replicas = await _replica_set([("small", a.target), ("large", b.target)])
    try:
        assert all(r.healthy for r in replicas.replicas)
        assert set(replicas.models()) == {"model-a", "model-b", "shared"}
        assert [r.target for r in replicas.candidates(model="model-b")] == [b.target]
        assert [r.target for r in replicas.candidates(pool="small")] == [a.target]
        assert replicas.model_for_pool("large") in {"model-b", "shared"}
        assert set(replicas.pools()) == {"small", "large"}
    finally:
        await replicas.close()


async def test_unreachable_replica_is_unhealthy(fakes: list[FakeServer]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    replicas = await _replica_set([("small", dead), ("small", fakes[0].target)])
    try:
        dead_replica, live = replicas.replicas
        assert not dead_replica.healthy
        assert live.healthy
        assert [r.target for r in replicas.candidates(pool="small")] == [live.target]
    finally:
        await replicas.close()


async def test_refresh_marks_a_stopped_replica_unhealthy(fakes: list[FakeServer]) -> None:
    a, b = fakes
    replicas = await _replica_set([("small", a.target), ("small", b.target)])
    try:
        await a.stop()
        await replicas.refresh(timeout_s=2.0)
        assert not replicas.replicas[0].healthy
        assert replicas.replicas[1].healthy
        # Models only the stopped replica served disappear from the merged list.
        assert "model-a" not in replicas.models()
        with pytest.raises(NotFound, match="model-a"):
            replicas.require_model("model-a")
    finally:
        await replicas.close()


async def test_refresh_loop_notices_a_replica_going_away(fakes: list[FakeServer]) -> None:
    a, _ = fakes
    replicas = await _replica_set([("small", a.target)])
    replicas.start(interval_s=0.05)
    try:
        assert replicas.replicas[0].healthy
        await a.stop()
        await wait_until(lambda: not replicas.replicas[0].healthy)
        with pytest.raises(Unavailable, match="small"):
            replicas.model_for_pool("small")
    finally:
        await replicas.close()


async def test_service_token_is_presented() -> None:
    guarded = await start_fake_inference("g", ["m"], service_token="tok")
    try:
        good = await _replica_set([("small", guarded.target)], token="tok")
        bad = await _replica_set([("small", guarded.target)], token="wrong")
        none = await _replica_set([("small", guarded.target)])
        assert good.replicas[0].healthy
        assert not bad.replicas[0].healthy
        assert not none.replicas[0].healthy
        for replicas in (good, bad, none):
            await replicas.close()
    finally:
        await guarded.stop()


async def test_candidates_least_outstanding_first(fakes: list[FakeServer]) -> None:
    a, b = fakes
    replicas = await _replica_set([("small", a.target), ("small", b.target)])
    try:
        first, second = replicas.replicas
        first.outstanding = 2
        second.outstanding = 1
        assert [r.target for r in replicas.candidates(model="shared")] == [b.target, a.target]
        second.outstanding = 3
        assert [r.target for r in replicas.candidates(model="shared")] == [a.target, b.target]
        assert [r.target for r in replicas.candidates(model="shared", exclude={a.target})] == [
            b.target
        ]
    finally:
        await replicas.close()


async def test_circuit_opens_after_repeated_failures_and_closes_later(
    fakes: list[FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    replicas = await _replica_set([("small", fakes[0].target)])
    now = [1000.0]
    monkeypatch.setattr(replicas_module.time, "monotonic", lambda: now[0])
    try:
        (replica,) = replicas.replicas
        for _ in range(FAILURES_TO_OPEN - 1):
            replica.record_failure()
        assert replicas.candidates(pool="small") == [replica]
        replica.record_failure()
        assert replicas.candidates(pool="small") == []
        now[0] += replicas_module.OPEN_SECONDS + 1
        assert replicas.candidates(pool="small") == [replica]
        replica.record_success()
        assert replica.consecutive_failures == 0
    finally:
        await replicas.close()


async def test_require_model_lists_what_is_available(fakes: list[FakeServer]) -> None:
    replicas = await _replica_set([("small", fakes[0].target)])
    try:
        replicas.require_model("model-a")
        with pytest.raises(NotFound, match="available: model-a, shared"):
            replicas.require_model("gpt-17")
    finally:
        await replicas.close()


async def test_a_replica_at_its_cap_is_saturated_and_left_out(fakes: list[FakeServer]) -> None:
    a, b = fakes
    replicas = ReplicaSet([("small", a.target), ("large", b.target)], max_outstanding={"small": 2})
    await replicas.refresh(timeout_s=2.0)
    try:
        small, large = replicas.replicas
        assert (small.max_outstanding, large.max_outstanding) == (2, None)
        small.outstanding = 1
        assert replicas.candidates(pool="small") == [small]
        small.outstanding = 2
        assert small.saturated
        assert replicas.candidates(pool="small") == []
        assert replicas.candidates(pool="small", include_saturated=True) == [small]
        # Still healthy: its models stay listed and the pool keeps its model.
        assert "model-a" in replicas.models()
        assert replicas.model_for_pool("small") in {"model-a", "shared"}
        large.outstanding = 1000
        assert not large.saturated
        assert replicas.candidates(pool="large") == [large]
    finally:
        await replicas.close()

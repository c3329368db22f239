"""Workers SIGKILLed at random while workflows run: nothing lost, nothing done twice.

Three prefork workers (two pool processes each) run 24 workflows of six slow tool steps.
20 times, a killer finds the process that is in the middle of a tool call (from the fake
tool server's view of the connection) and SIGKILLs that pool process (the parent
re-forks), its whole worker, or only the worker's main process (orphaning the pool); a
replacement worker starts each time a worker is lost, as a supervisor would. Then the
steps turn fast and the rest runs out. Afterwards every workflow must have succeeded
with the right answer, every step must have exactly one recorded result, no tool call
may arrive for a step whose result was already recorded, and every event stream must be
gap-free. An interrupted call is made again under the same idempotency key (the fake
tool's ledger applies each key once).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest
from lalo_orchestrator.api import BudgetRequest, WorkflowApi
from lalo_orchestrator.celery_app import Enqueuer, create_celery
from lalo_orchestrator.runtime import build_store
from lalo_orchestrator.states import StepState, WorkflowState

pytestmark = pytest.mark.integration

WORKFLOWS = 24
STEPS = 6
MIN_KILLS = 20
WORKERS = 3


def test_sigkilled_workers_lose_and_repeat_nothing(orch_env: Any, pid_of_peer: Any) -> None:
    overrides = {
        "step_max_attempts": 1000,
        "worker_pool": "prefork",
        "worker_concurrency": 2,
        "lease_ttl_s": 1.0,
        "stall_after_s": 1.0,
    }
    processes = [orch_env.start_worker(**overrides) for _ in range(WORKERS)]
    for process in processes:
        orch_env.wait_ready(process)
    settings = orch_env.settings(**overrides)
    store = build_store(settings)
    api = WorkflowApi(store, settings, Enqueuer(create_celery(settings), settings))

    expected: dict[str, str] = {}
    for n in range(WORKFLOWS):
        texts = [f"w{n}s{i}" for i in range(1, STEPS + 1)]
        answer = "|".join(f"{{{{step_{i}}}}}" for i in range(1, STEPS + 1))
        plan = orch_env.echo_plan(texts, sleep_ms=500, answer=answer)
        record = api.create(
            owner="killer",
            messages=[{"role": "user", "content": orch_env.plan_message(plan)}],
            allowed_tools=["echo"],
            budgets=BudgetRequest(max_wall_time_s=300),
        )
        expected[record.id] = "|".join(texts)

    rng = random.Random(5)
    kills = 0
    started = time.time()

    def all_done() -> bool:
        open_count = orch_env.scalar(
            "select count(*) from orch_workflows where state not in "
            "('succeeded','failed','cancelled','budget_exceeded')"
        )
        return int(open_count) == 0

    whole_worker_kills = 0
    parent_kills = 0
    while kills < MIN_KILLS:
        assert not all_done(), f"workflows finished after only {kills} kills"
        assert time.time() - started < 60, f"only {kills} kills in 60 s"
        time.sleep(rng.uniform(0.05, 0.3))
        # Kill the process that is in the middle of a tool call right now.
        with orch_env.tools.lock:
            peers = list(orch_env.tools.in_flight)
        if not peers:
            continue
        pid = pid_of_peer(rng.choice(peers))
        if pid is None:
            continue
        worker = next((p for p in processes if p.pid == os.getpgid(pid)), None)
        if worker is None:
            continue
        mode = rng.random()
        if mode < 0.5:
            # A pool process dies (the OOM killer's favourite): the parent re-forks and
            # Celery re-queues the message (reject_on_worker_lost).
            os.kill(pid, signal.SIGKILL)
        elif mode < 0.75 or pid == worker.pid:
            # The whole worker dies (a node or pod lost): its unacked messages wait for
            # the visibility timeout; the sweeper resumes the workflows sooner.
            orch_env.kill(worker)
            whole_worker_kills += 1
            processes.remove(worker)
            processes.append(orch_env.start_worker(**overrides))
        else:
            # Only the worker's main process dies (`kill -9 <worker pid>`): its pool
            # processes are orphaned mid-step and may still finish what they hold.
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            parent_kills += 1
            processes.remove(worker)
            processes.append(orch_env.start_worker(**overrides))
        kills += 1
    orch_env.tools.sleep_scale = 0.0
    calls_while_killing = len(orch_env.tools.calls)
    kill_phase_s = time.time() - started
    while not all_done():
        assert time.time() - started < 100, "workflows did not finish"
        time.sleep(0.2)
    elapsed = time.time() - started

    workflows = [store.get(workflow_id) for workflow_id in expected]
    calls = list(orch_env.tools.calls)
    call_counts = Counter(c.key for c in calls)
    step_keys = {s.idempotency_key for w in workflows for s in w.steps if s.kind.value == "tool"}

    not_succeeded = [w.id for w in workflows if w.state is not WorkflowState.SUCCEEDED]
    wrong_answers = [w.id for w in workflows if w.final_answer != expected[w.id]]
    lost_steps = sum(
        1 for w in workflows for s in w.steps if s.state is not StepState.SUCCEEDED
    ) + (WORKFLOWS * STEPS - len(step_keys))
    repeated_after_record = sum(1 for c in calls if c.step_done_already)
    never_called = len(step_keys - set(call_counts))
    reinvoked_mid_call = sum(n - 1 for n in call_counts.values() if n > 1)
    replans = sum(w.replans for w in workflows)
    gaps = 0
    duplicate_results = 0
    for workflow in workflows:
        events = store.events_after(workflow.id, 0)
        gaps += int([e.seq for e in events] != list(range(1, len(events) + 1)))
        succeeded = Counter(
            e.step_id for e in events if e.type == "step.state" and e.data.get("to") == "succeeded"
        )
        duplicate_results += sum(n - 1 for n in succeeded.values())
    redelivered = orch_env.scalar("select count(*) from orch_steps where attempts > 1")
    extra_attempts = orch_env.scalar("select coalesce(sum(attempts - 1), 0) from orch_steps")

    print(
        f"\nkills: {kills} ({whole_worker_kills} whole workers, {parent_kills} worker main "
        f"processes only, the rest pool processes) "
        f"in {kill_phase_s:.1f}s with {calls_while_killing} tool calls; "
        f"all done in {elapsed:.1f}s; "
        f"workflows: {WORKFLOWS} x {STEPS} steps; "
        f"lost steps: {lost_steps}; steps repeated after their result was recorded: "
        f"{repeated_after_record}; duplicate step results: {duplicate_results}; "
        f"steps re-run after a kill mid-call (same idempotency key): {reinvoked_mid_call}; "
        f"steps with more than one attempt: {redelivered} ({extra_attempts} extra attempts); "
        f"re-plans: {replans}"
    )
    store.engine.dispose()

    assert kills >= MIN_KILLS
    assert not_succeeded == []
    assert wrong_answers == []
    assert lost_steps == 0
    assert never_called == 0
    assert repeated_after_record == 0
    assert duplicate_results == 0
    assert gaps == 0
    assert replans == 0
    # The ledger applied each step's side effect exactly once.
    assert len(orch_env.tools.ledger) == WORKFLOWS * STEPS

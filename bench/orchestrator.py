"""Orchestrator benchmark: overhead per workflow step (model and tool time excluded) and
throughput of concurrent workflows, on the Redis broker with Postgres state.

Reads LALO_TEST_DATABASE_URL / LALO_TEST_REDIS_URL (defaults: the local servers); makes a
throw-away database and Redis key prefix. The tool and the model are in-process gRPC fakes
that answer at once, so what is measured is the orchestration itself: enqueue → broker →
worker → lease and state transactions → tool call → recorded result → next enqueue.

References measured in the same run: a bare Celery hop (a task that enqueues the next on
the same broker) and one bare Postgres transaction of the shape each state change uses.

    uv run python bench/orchestrator.py [--steps 200] [--workflows 40]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psycopg
import redis
from lalo.inference.v1 import inference_pb2, inference_pb2_grpc
from lalo.tools.v1 import tools_pb2, tools_pb2_grpc
from lalo_orchestrator.api import BudgetRequest, WorkflowApi
from lalo_orchestrator.celery_app import Enqueuer, create_celery
from lalo_orchestrator.migrations import upgrade
from lalo_orchestrator.runtime import build_store
from lalo_orchestrator.settings import OrchestratorSettings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DATABASE_URL = os.environ.get(
    "LALO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LALO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Model(inference_pb2_grpc.InferenceServiceServicer):
    def Generate(self, request: Any, context: Any) -> Any:
        user = [m.content for m in request.chat.messages if m.role == "user"][-1]
        yield inference_pb2.GenerateResponse(
            chunk=inference_pb2.GenerateChunk(text=user.split("PLAN:", 1)[1])
        )
        yield inference_pb2.GenerateResponse(
            complete=inference_pb2.GenerateComplete(usage=inference_pb2.Usage(prompt_tokens=1))
        )


class Tools(tools_pb2_grpc.ToolsServiceServicer):
    def __init__(self) -> None:
        self.durations: dict[str, float] = {}

    def ListTools(self, request: Any, context: Any) -> Any:
        schema = {"type": "object", "properties": {"text": {"type": "string"}}}
        return tools_pb2.ListToolsResponse(
            tools=[tools_pb2.ToolSpec(name="echo", parameters_json=json.dumps(schema))]
        )

    def Invoke(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        text_ = json.loads(request.arguments_json)["text"]
        reply = tools_pb2.InvokeResponse(result=tools_pb2.ToolResult(text=text_))
        self.durations[request.idempotency_key] = time.perf_counter() - started
        return reply


def serve(servicer: Any, add: Any) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lalo_orchestrator", "worker"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + 60
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.time() > deadline:
            raise SystemExit(f"worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return process


def wait_done(store: Any, ids: list[str], timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    for workflow_id in ids:
        while not store.get(workflow_id).state.terminal:
            if time.time() > deadline:
                raise SystemExit("workflows did not finish in time")
            time.sleep(0.02)


def celery_hop_reference(prefix: str, hops: int = 200) -> float:
    """Median seconds per hop of a no-op task that enqueues the next one."""
    from celery import Celery
    from celery.contrib.testing.worker import start_worker as start_inprocess_worker

    app = Celery("bench_ref", broker=REDIS_URL, set_as_current=False)
    app.conf.update(
        task_default_queue=f"{prefix}.ref",
        task_ignore_result=True,
        broker_transport_options={"global_keyprefix": f"{prefix}-ref:"},
        task_acks_late=True,
        worker_prefetch_multiplier=1,
    )
    stamps: list[float] = []
    done = threading.Event()

    @app.task(name="bench.hop")
    def hop(left: int) -> None:
        stamps.append(time.perf_counter())
        if left:
            hop.apply_async((left - 1,))
        else:
            done.set()

    app.loader.import_module("celery.contrib.testing.tasks")
    with start_inprocess_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        hop.apply_async((hops,))
        done.wait(60)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(gaps)


def postgres_reference(database_url: str, n: int = 200) -> float:
    """Median seconds of one lock-update-insert transaction on the workflows table."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("create table bench_ref (id int primary key, n int)"))
        conn.execute(text("create table bench_ref_events (id serial primary key, n int)"))
        conn.execute(text("insert into bench_ref values (1, 0)"))
    times = []
    for _ in range(n):
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("select * from bench_ref where id = 1 for update"))
            conn.execute(text("update bench_ref set n = n + 1 where id = 1"))
            conn.execute(text("insert into bench_ref_events (n) values (1)"))
        times.append(time.perf_counter() - started)
    engine.dispose()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200, help="steps timed for the overhead")
    parser.add_argument("--workflows", type=int, default=40, help="concurrent workflows")
    parser.add_argument("--steps-per-workflow", type=int, default=5)
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) still stops the workers and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    admin = make_url(DATABASE_URL.replace("postgresql+psycopg://", "postgresql://"))
    admin_dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"lalo_orch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )
    prefix = f"lalo-orch-bench-{uuid.uuid4().hex[:6]}"
    workers: list[subprocess.Popen[bytes]] = []
    servers: list[grpc.Server] = []
    logs = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        upgrade(database_url)
        tools = Tools()
        model_server, model_target = serve(
            Model(), inference_pb2_grpc.add_InferenceServiceServicer_to_server
        )
        tools_server, tools_target = serve(tools, tools_pb2_grpc.add_ToolsServiceServicer_to_server)
        servers += [model_server, tools_server]
        values = {
            "DATABASE_URL": database_url,
            "BROKER_URL": REDIS_URL,
            "REDIS_URL": REDIS_URL,
            "KEY_PREFIX": prefix,
            "INFERENCE_TARGET": model_target,
            "TOOLS_TARGET": tools_target,
            "WORKER_POOL": "solo",
            "PLAN_MAX_STEPS": "16",
            "LOG_LEVEL": "INFO",  # the worker says "ready." at INFO
        }
        env = {f"LALO_ORCHESTRATOR_{k}": v for k, v in values.items()}
        settings = OrchestratorSettings(**{k.lower(): v for k, v in values.items()})
        store = build_store(settings)
        api = WorkflowApi(store, settings, Enqueuer(create_celery(settings), settings))

        def create(texts: list[str]) -> str:
            plan = {
                "steps": [{"kind": "tool", "tool": "echo", "arguments": {"text": t}} for t in texts]
            }
            return api.create(
                owner="bench",
                messages=[{"role": "user", "content": "PLAN:" + json.dumps(plan)}],
                allowed_tools=[],
                budgets=BudgetRequest(max_steps=len(texts) + 1),
            ).id

        # 1. Overhead per step: one worker, one workflow at a time.
        workers.append(start_worker(env, logs / "w0.log"))
        print("worker up; timing steps", file=sys.stderr)
        per_workflow = 10
        overheads: list[float] = []
        create([f"warm{i}" for i in range(3)])
        while len(overheads) < args.steps:
            workflow_id = create([f"s{i}" for i in range(per_workflow)])
            wait_done(store, [workflow_id], 60)
            events = store.events_after(workflow_id, 0)
            done = [
                e for e in events if e.type == "step.state" and e.data.get("to") == "succeeded"
            ][:per_workflow]
            record = store.get(workflow_id)
            keys = {s.id: s.idempotency_key for s in record.steps}
            for previous, current in itertools.pairwise(done):
                tool_s = tools.durations.get(keys[current.step_id or ""], 0.0)
                overheads.append(current.created_at - previous.created_at - tool_s)

        print("timing throughput", file=sys.stderr)
        # 2. Throughput: two workers, many workflows at once.
        workers.append(start_worker(env, logs / "w1.log"))
        started = time.perf_counter()
        ids = [
            create([f"t{n}s{i}" for i in range(args.steps_per_workflow)])
            for n in range(args.workflows)
        ]
        wait_done(store, ids, 300)
        elapsed = time.perf_counter() - started
        succeeded = sum(store.get(i).state.value == "succeeded" for i in ids)

        print("references", file=sys.stderr)
        hop = celery_hop_reference(prefix)
        transaction = postgres_reference(database_url)
        store.engine.dispose()

        ms = [o * 1000 for o in overheads]
        steps_total = args.workflows * args.steps_per_workflow
        print("orchestrator (Redis broker, Postgres state, fake tool/model answering at once)")
        print(
            f"  overhead per step   p50 {percentile(ms, 0.5):6.1f} ms  p90 "
            f"{percentile(ms, 0.9):6.1f} ms  p99 {percentile(ms, 0.99):6.1f} ms  "
            f"(n={len(ms)}; target p50 <= 20 ms)"
        )
        print(
            f"  throughput, 2 workers: {args.workflows} workflows x {args.steps_per_workflow} "
            f"steps in {elapsed:.2f} s = {args.workflows / elapsed:.1f} workflows/s, "
            f"{steps_total / elapsed:.0f} steps/s ({succeeded}/{args.workflows} succeeded)"
        )
        print("references measured in the same run")
        print(f"  bare Celery hop (task enqueues the next), median {hop * 1000:6.2f} ms")
        print(f"  one Postgres lock+update+insert transaction, median {transaction * 1000:6.2f} ms")
    finally:
        for process in workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for server in servers:
            server.stop(0)
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

"""Real Postgres, Redis and Celery worker processes for the orchestrator.

Each environment gets its own database (``lalo_orch_test_<random>``, dropped afterwards)
and its own key prefix on Redis (queue, unacked bookkeeping and event channels), so test
runs and other services' tests never see each other's rows or messages. The model and
tools services are fakes served over real gRPC from this process; the fake tool records
every invocation by idempotency key, and whether that step's result was already recorded
when the call came in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import lalo_orchestrator
import psycopg
import pytest
import redis
from lalo.inference.v1 import inference_pb2, inference_pb2_grpc
from lalo.tools.v1 import tools_pb2, tools_pb2_grpc
from lalo_orchestrator.migrations import upgrade
from lalo_orchestrator.tables import steps
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.integration

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SRC = str(Path(lalo_orchestrator.__file__).resolve().parents[1])


def _admin_conninfo(url: str) -> str:
    parsed = make_url(url.replace("postgresql+psycopg://", "postgresql://"))
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


# --------------------------------------------------------------------------- fakes


class FakeInference(inference_pb2_grpc.InferenceServiceServicer):
    """The planner gets the plan written after ``PLAN:`` in the user's message; a model
    step gets ``model:<prompt>``. Every call reports ``tokens_per_call`` tokens."""

    def __init__(self) -> None:
        self.tokens_per_call = 10
        self.calls: list[inference_pb2.GenerateRequest] = []

    def Generate(self, request: Any, context: Any) -> Iterator[Any]:
        self.calls.append(request)
        user = [m.content for m in request.chat.messages if m.role == "user"][-1]
        if request.sampling.response_format.type == inference_pb2.ResponseFormat.JSON_SCHEMA:
            text_out = user.split("PLAN:", 1)[1] if "PLAN:" in user else '{"steps": []}'
        else:
            text_out = "model:" + user
        half = self.tokens_per_call // 2
        yield inference_pb2.GenerateResponse(chunk=inference_pb2.GenerateChunk(text=text_out))
        yield inference_pb2.GenerateResponse(
            complete=inference_pb2.GenerateComplete(
                finish_reason=inference_pb2.FINISH_REASON_STOP,
                usage=inference_pb2.Usage(
                    prompt_tokens=half, completion_tokens=self.tokens_per_call - half
                ),
            )
        )


ECHO_SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "sleep_ms": {"type": "integer"},
        "fail": {"type": "boolean"},
    },
    "required": ["text"],
}


@dataclass
class Call:
    key: str
    text: str
    step_done_already: bool
    at: float


@dataclass
class FakeTools(tools_pb2_grpc.ToolsServiceServicer):
    """An ``echo`` tool with a side-effect ledger keyed by idempotency key."""

    database_url: str
    calls: list[Call] = field(default_factory=list)
    ledger: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Multiplies every sleep_ms (a test can make slow steps fast once it has what it needs).
    sleep_scale: float = 1.0
    # Calls in progress: gRPC peer address -> idempotency key.
    in_flight: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._db = create_engine(self.database_url, pool_size=4)

    def ListTools(self, request: Any, context: Any) -> Any:
        return tools_pb2.ListToolsResponse(
            tools=[
                tools_pb2.ToolSpec(
                    name="echo", description="Echoes text.", parameters_json=json.dumps(ECHO_SCHEMA)
                )
            ]
        )

    def Invoke(self, request: Any, context: Any) -> Any:
        arguments = json.loads(request.arguments_json)
        with self._db.connect() as conn:
            state = conn.execute(
                select(steps.c.state).where(steps.c.idempotency_key == request.idempotency_key)
            ).scalar()
        call = Call(request.idempotency_key, arguments["text"], state == "succeeded", time.time())
        with self.lock:
            self.calls.append(call)
        if arguments.get("fail"):
            return tools_pb2.InvokeResponse(
                error=tools_pb2.ToolError(
                    code=tools_pb2.ToolError.EXECUTION_ERROR, message="asked to fail"
                )
            )
        peer = context.peer()
        with self.lock:
            self.in_flight[peer] = request.idempotency_key
        try:
            sleep_s = min(max(int(arguments.get("sleep_ms", 0)), 0), 2000) / 1000
            time.sleep(sleep_s * self.sleep_scale)
        finally:
            with self.lock:
                self.in_flight.pop(peer, None)
        with self.lock:
            # The side effect, applied once per key: a repeat returns the first result.
            result = self.ledger.setdefault(request.idempotency_key, arguments["text"])
        return tools_pb2.InvokeResponse(
            result=tools_pb2.ToolResult(content_json=json.dumps({"echo": result}), text=result)
        )

    def close(self) -> None:
        self._db.dispose()


# --------------------------------------------------------------------------- environment


@dataclass
class OrchestratorEnv:
    database_url: str
    redis_url: str
    prefix: str
    inference: FakeInference
    tools: FakeTools
    inference_target: str
    tools_target: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_dir: Path = field(default_factory=Path)

    def settings_env(self, **overrides: Any) -> dict[str, str]:
        values = {
            "DATABASE_URL": self.database_url,
            "BROKER_URL": self.redis_url,
            "REDIS_URL": self.redis_url,
            "KEY_PREFIX": self.prefix,
            "INFERENCE_TARGET": self.inference_target,
            "TOOLS_TARGET": self.tools_target,
            "WORKER_POOL": "solo",
            "WORKER_CONCURRENCY": "1",
            "LEASE_TTL_S": "1.5",
            "SWEEP_INTERVAL_S": "0.3",
            "STALL_AFTER_S": "2",
            "VISIBILITY_TIMEOUT_S": "5",
            "RETRY_BACKOFF_S": "0.2",
            "LOG_LEVEL": "INFO",
        }
        values.update({k.upper(): str(v) for k, v in overrides.items()})
        return {f"LALO_ORCHESTRATOR_{k}": v for k, v in values.items()}

    def settings(self, **overrides: Any) -> Any:
        from lalo_orchestrator.settings import OrchestratorSettings

        env = self.settings_env(**overrides)
        return OrchestratorSettings(
            **{k.removeprefix("LALO_ORCHESTRATOR_").lower(): v for k, v in env.items()}
        )

    def start_worker(self, **overrides: Any) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.settings_env(**overrides)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH", "")]))
        log = self.log_dir / f"worker-{len(self.workers)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "lalo_orchestrator", "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log_path = log  # type: ignore[attr-defined]
        self.workers.append(process)
        return process

    def wait_ready(self, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
        deadline = time.time() + timeout_s
        log: Path = process.log_path  # type: ignore[attr-defined]
        while time.time() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{log.read_text()[-3000:]}")
            if b" ready." in log.read_bytes():
                return
            time.sleep(0.05)
        raise AssertionError(f"worker not ready after {timeout_s}s:\n{log.read_text()[-3000:]}")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    @staticmethod
    def plan_message(plan: dict[str, Any]) -> str:
        return "PLAN:" + json.dumps(plan)

    @staticmethod
    def echo_plan(texts: list[str], sleep_ms: int = 0, answer: str = "") -> dict[str, Any]:
        planned: list[dict[str, Any]] = [
            {"kind": "tool", "tool": "echo", "arguments": {"text": t, "sleep_ms": sleep_ms}}
            for t in texts
        ]
        if answer:
            planned.append({"kind": "final", "answer": answer})
        return {"steps": planned}

    def scalar(self, sql: str) -> Any:
        engine = create_engine(self.database_url)
        with engine.connect() as conn:
            value = conn.execute(text(sql)).scalar()
        engine.dispose()
        return value

    def stop_workers(self) -> None:
        # By process group: pool processes orphaned by a killed parent are included.
        for process in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        time.sleep(0.5)
        for process in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def pid_of_peer(peer: str) -> int | None:
    """The local process holding the client end of a loopback TCP connection."""
    port = int(peer.rsplit(":", 1)[1])
    inode = ""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inode = fields[9]
                    break
        if inode:
            break
    if not inode:
        return None
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(proc.name)
        except OSError:
            continue
    return None


def _serve(servicer: Any, add: Any) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def orch_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorEnv]:
    """A database, a Redis prefix and fake backends; workers are started by tests."""
    base = os.environ.get("LALO_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("LALO_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    admin = _admin_conninfo(base)
    name = f"lalo_orch_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres unreachable at {make_url(base).render_as_string()}: {exc}")
    database_url = (
        make_url(admin)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )
    upgrade(database_url)
    prefix = f"lalo-orch-test-{uuid.uuid4().hex[:8]}"
    inference = FakeInference()
    tools = FakeTools(database_url)
    inference_server, inference_target = _serve(
        inference, inference_pb2_grpc.add_InferenceServiceServicer_to_server
    )
    tools_server, tools_target = _serve(tools, tools_pb2_grpc.add_ToolsServiceServicer_to_server)
    env = OrchestratorEnv(
        database_url=database_url,
        redis_url=redis_url,
        prefix=prefix,
        inference=inference,
        tools=tools,
        inference_target=inference_target,
        tools_target=tools_target,
        log_dir=tmp_path_factory.mktemp("orch-logs"),
    )
    try:
        yield env
    finally:
        env.stop_workers()
        inference_server.stop(0)
        tools_server.stop(0)
        tools.close()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(name="pid_of_peer")
def pid_of_peer_fixture() -> Any:
    return pid_of_peer

"""Runs gateway, router and inference-small (or a relay to another backend) as real local
processes.

Used by the contract tests, the benchmarks and ``make up``: each service is started with
its own console entry point (``python -m lalo_<svc>``) and configured only through its
environment, exactly as a deployment would configure it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A port nothing listens on, never the same one twice in this process: each probe
    socket is closed before the next call binds, so two calls may otherwise get the same
    ephemeral port, and two services of one stack would then collide on start."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with _handed_out_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def wait_for_grpc(
    target: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process for {target} exited with {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = "not serving"
            except grpc.RpcError as exc:
                last = str(exc.code())
            time.sleep(0.1)
    raise TimeoutError(f"{target} not healthy after {timeout_s}s ({last})")


def wait_for_http(
    url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s}s ({last})")


def stop_process(
    process: subprocess.Popen[bytes], timeout_s: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Ask a child process to stop with ``sig``; kill it if it is still there after
    ``timeout_s``."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None
    log_file: IO[bytes] | None = None

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_process(self.process, timeout_s)
        if self.log_file is not None:
            self.log_file.close()

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


class _Processes:
    """Stopping and reading the logs of a group of started services (last started first)."""

    services: list[Service]

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def logs(self) -> dict[str, str]:
        return {s.name: s.log_text() for s in self.services}


@dataclass
class Stack(_Processes):
    gateway_url: str
    router_target: str
    inference_target: str
    api_key: str
    gateway_grpc_target: str
    model_id: str
    services: list[Service] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.gateway_url}/v1"


def _spawn(
    name: str,
    module: str,
    env: Mapping[str, str],
    log_dir: Path | None,
    args: tuple[str, ...] = (),
) -> Service:
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log_path = log_file = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log_file = log_path.open("wb")
    # Through lalo_testing.child, which makes the service die with us: never a preexec_fn,
    # which crashes about one start in a hundred once this process has used gRPC (see there).
    process = subprocess.Popen(
        [sys.executable, "-m", "lalo_testing.child", module, *args],
        env=full_env,
        stdout=log_file if log_file else None,
        stderr=subprocess.STDOUT if log_file else None,
        start_new_session=True,  # Ctrl-C in a terminal reaches the launcher, which stops us
    )
    return Service(name, process, log_path, log_file)


@dataclass
class Relay(_Processes):
    """A router that sends every request to one pool and a gateway in front of it."""

    gateway_url: str
    api_key: str
    services: list[Service] = field(default_factory=list)


def _embedded_env(
    state_dir: str, service_token: str, extra_env: Mapping[str, str] | None
) -> dict[str, str]:
    """What every service of a local stack gets: the service token, embedded mode, and a
    gateway database and audit spool in the stack's ``state_dir`` (unless ``extra_env``
    names others)."""
    return {
        "LALO_SERVICE_TOKEN": service_token,
        "LALO_GATEWAY_ENVIRONMENT": "embedded",
        "LALO_ROUTER_ENVIRONMENT": "embedded",
        "LALO_INFERENCE_SMALL_ENVIRONMENT": "embedded",
        "LALO_GATEWAY_DATABASE_URL": f"sqlite:///{state_dir}/gateway.db",
        "LALO_GATEWAY_AUDIT_SPOOL_PATH": f"{state_dir}/audit-spool.jsonl",
        **(extra_env or {}),
    }


def _start_front(
    services: list[Service],
    common: Mapping[str, str],
    *,
    router_port: int,
    gateway_port: int,
    gateway_grpc_port: int,
    router_env: Mapping[str, str],
    api_keys: list[str],
    log_dir: Path | None,
    timeout_s: float,
) -> None:
    """Starts the router (``router_env`` names its backends) and the gateway in front of it,
    adds them to ``services`` and waits until both are ready."""
    router = _spawn(
        "router",
        "lalo_router",
        {
            **common,
            "LALO_ROUTER_LISTEN": f"127.0.0.1:{router_port}",
            "LALO_ROUTER_REFRESH_INTERVAL_S": "1",
            **router_env,
        },
        log_dir,
    )
    services.append(router)
    gateway = _spawn(
        "gateway",
        "lalo_gateway",
        {
            **common,
            "LALO_GATEWAY_HOST": "127.0.0.1",
            "LALO_GATEWAY_PORT": str(gateway_port),
            "LALO_GATEWAY_GRPC_PORT": str(gateway_grpc_port),
            "LALO_GATEWAY_ROUTER_TARGET": f"127.0.0.1:{router_port}",
            "LALO_API_KEYS": ",".join(api_keys),
        },
        log_dir,
    )
    services.append(gateway)
    wait_for_grpc(f"127.0.0.1:{router_port}", timeout_s, router.process)
    wait_for_http(f"http://127.0.0.1:{gateway_port}/readyz", timeout_s, gateway.process)


def start_relay(
    *,
    pool: str,
    backend_target: str,
    api_key: str,
    service_token: str = "",
    log_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Relay:
    """Starts router (no classifier: every request to ``pool`` at ``backend_target``) and an
    embedded gateway, for stacks over an inference service other than inference-small
    (inference-large's tests and benchmark); returns once both are ready."""
    gateway_port = free_port()
    services: list[Service] = []
    try:
        _start_front(
            services,
            _embedded_env(tempfile.mkdtemp(prefix="lalo-relay-"), service_token, extra_env),
            router_port=free_port(),
            gateway_port=gateway_port,
            gateway_grpc_port=free_port(),
            router_env={
                "LALO_ROUTER_BACKENDS": f"{pool}={backend_target}",
                "LALO_ROUTER_DEFAULT_POOL": pool,
                "LALO_ROUTER_CLASSIFIER": "none",
            },
            api_keys=[api_key],
            log_dir=log_dir,
            timeout_s=timeout_s,
        )
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise
    return Relay(f"http://127.0.0.1:{gateway_port}", api_key, services)


def start_stack(
    model_path: Path,
    *,
    api_key: str,
    model_id: str = "tiny-chat",
    gateway_port: int | None = None,
    gateway_grpc_port: int | None = None,
    log_dir: Path | None = None,
    threads: int | None = None,
    parallel: int = 4,
    n_ctx: int = 2048,
    service_token: str = "",
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    workflows: bool = False,
    extra_api_keys: tuple[str, ...] = (),
    embedding_model_path: Path | None = None,
    embedding_model_id: str = "all-minilm-l6-v2",
) -> Stack:
    """Starts inference-small, router and gateway; returns once /readyz says ready.
    ``embedding_model_path``: a GGUF embedding model inference-small serves beside the chat
    model (for /v1/embeddings)."""
    inference_port, router_port = free_port(), free_port()
    gateway_port = gateway_port or free_port()
    gateway_grpc_port = gateway_grpc_port or free_port()
    state_dir = tempfile.mkdtemp(prefix="lalo-stack-")
    common = _embedded_env(state_dir, service_token, extra_env)
    services: list[Service] = []
    try:
        inference = _spawn(
            "inference-small",
            "lalo_inference_small",
            {
                **common,
                "LALO_INFERENCE_SMALL_LISTEN": f"127.0.0.1:{inference_port}",
                "LALO_INFERENCE_SMALL_MODEL_PATH": str(model_path),
                "LALO_INFERENCE_SMALL_MODEL_ID": model_id,
                "LALO_INFERENCE_SMALL_PARALLEL": str(parallel),
                "LALO_INFERENCE_SMALL_N_CTX": str(n_ctx),
                **({"LALO_INFERENCE_SMALL_THREADS": str(threads)} if threads else {}),
                **(
                    {
                        "LALO_INFERENCE_SMALL_EMBEDDING_MODEL_PATH": str(embedding_model_path),
                        "LALO_INFERENCE_SMALL_EMBEDDING_MODEL_ID": embedding_model_id,
                    }
                    if embedding_model_path
                    else {}
                ),
            },
            log_dir,
        )
        services.append(inference)
        router_env: dict[str, str] = {}
        if workflows:
            # The complex path in embedded mode: tools, and the orchestrator on SQLite with
            # kombu's server-less SQLite broker (no Postgres, no Redis).
            tools_port, orchestrator_port = free_port(), free_port()
            orchestrator_env = {
                **common,
                "LALO_ORCHESTRATOR_ENVIRONMENT": "embedded",
                "LALO_ORCHESTRATOR_DATABASE_URL": f"sqlite:///{state_dir}/orchestrator.sqlite",
                "LALO_ORCHESTRATOR_HOST": "127.0.0.1",
                "LALO_ORCHESTRATOR_PORT": str(orchestrator_port),
                "LALO_ORCHESTRATOR_INFERENCE_TARGET": f"127.0.0.1:{inference_port}",
                "LALO_ORCHESTRATOR_TOOLS_TARGET": f"127.0.0.1:{tools_port}",
                "LALO_ORCHESTRATOR_DEFAULT_MODEL": model_id,
                "LALO_ORCHESTRATOR_WORKER_CONCURRENCY": "1",
            }
            tools = _spawn(
                "tools",
                "lalo_tools",
                {
                    **common,
                    "LALO_TOOLS_ENVIRONMENT": "embedded",
                    "LALO_TOOLS_LISTEN_ADDRESS": f"127.0.0.1:{tools_port}",
                    "LALO_TOOLS_ENABLED_TOOLS": "calculator",
                },
                log_dir,
            )
            services.append(tools)
            migrate = _spawn(
                "orchestrator-migrate", "lalo_orchestrator", orchestrator_env, log_dir, ("migrate",)
            )
            if migrate.process.wait(timeout=timeout_s) != 0:
                raise RuntimeError(f"orchestrator migrations failed; see {migrate.log_path}")
            orchestrator = _spawn(
                "orchestrator-api", "lalo_orchestrator", orchestrator_env, log_dir, ("api",)
            )
            services.append(orchestrator)
            services.append(
                _spawn(
                    "orchestrator-worker",
                    "lalo_orchestrator",
                    orchestrator_env,
                    log_dir,
                    ("worker",),
                )
            )
            wait_for_grpc(f"127.0.0.1:{tools_port}", timeout_s, tools.process)
            wait_for_grpc(f"127.0.0.1:{orchestrator_port}", timeout_s, orchestrator.process)
            router_env["LALO_ROUTER_ORCHESTRATOR_TARGET"] = f"127.0.0.1:{orchestrator_port}"
        router_env["LALO_ROUTER_BACKENDS"] = f"small=127.0.0.1:{inference_port}"
        _start_front(
            services,
            common,
            router_port=router_port,
            gateway_port=gateway_port,
            gateway_grpc_port=gateway_grpc_port,
            router_env=router_env,
            api_keys=[api_key, *extra_api_keys],
            log_dir=log_dir,
            timeout_s=timeout_s,
        )
        wait_for_grpc(f"127.0.0.1:{inference_port}", timeout_s, inference.process)
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise
    return Stack(
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        router_target=f"127.0.0.1:{router_port}",
        inference_target=f"127.0.0.1:{inference_port}",
        api_key=api_key,
        gateway_grpc_target=f"127.0.0.1:{gateway_grpc_port}",
        model_id=model_id,
        services=services,
    )


@contextlib.contextmanager
def running_stack(model_path: Path, **kwargs: object) -> Iterator[Stack]:
    stack = start_stack(model_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.stop()

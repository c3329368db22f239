"""`make up` as a newcomer runs it: ready, answering, and stopped by a signal to make.

Ctrl-C reaches the whole process group; a signal sent to make's process alone is the case
that needs care (GNU make passes SIGTERM on to its children but not SIGINT), so that is what
these tests send.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lalo_testing.stack import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-make-up-test-0123456789"


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def make_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {
        **os.environ,
        "LALO_GATEWAY_PORT": str(port),
        "LALO_GATEWAY_GRPC_PORT": str(free_port()),
        "LALO_WORKFLOWS": "0",
        "LALO_API_KEYS": KEY,
        "LALO_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
    }
    # Signal handlers reset to their defaults across exec, so make catches SIGINT as it does
    # when started from a terminal.
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        output = []
        for line in proc.stdout:
            output.append(line)
            if "Press Ctrl-C to stop." in line:
                break
            assert time.monotonic() < deadline, "make up took over 300 s"
        else:
            pytest.fail(f"make up ended before it was ready:\n{''.join(output)}")
        yield proc, port
    finally:
        for pid in descendants(proc.pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_make_stops_every_process(
    make_up: tuple[subprocess.Popen[str], int], signum: signal.Signals
) -> None:
    proc, port = make_up
    response = httpx.get(
        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200
    started = descendants(proc.pid)
    assert len(started) >= 4  # up.py, inference-small, router, gateway

    os.kill(proc.pid, signum)  # make's process only, not its group
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if alive(pid)]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")

"""lalo_testing.child runs a module like ``python -m`` and dies with its launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


def test_runs_the_module_with_its_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lalo_testing.child", "json.tool", "--sort-keys"],
        input='{"b": 1, "a": 2}',
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.split() == ["{", '"a":', "2,", '"b":', "1", "}"]


def test_without_a_module_it_explains_its_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lalo_testing.child"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "usage: python -m lalo_testing.child MODULE" in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_when_its_launcher_is_killed() -> None:
    # A launcher starts a long-running child through lalo_testing.child, prints its pid and
    # waits; killing the launcher with SIGKILL must take the child down too.
    launcher_code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'lalo_testing.child', 'http.server',"
        " '0', '--bind', '127.0.0.1'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", launcher_code], stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    child_pid = int(launcher.stdout.readline())
    time.sleep(1.0)  # let the child reach its prctl
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the child outlived its launcher")

"""The python tool's sandbox, attacked for real: each test runs a snippet in a process.

Needs Linux namespaces (root, or unprivileged user namespaces). Where they are missing the
tool must refuse to run (fail closed), which the last test checks instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lalo_tools.core import ErrorCode, Limits, ToolFailure
from lalo_tools.tools.python_exec import (
    LAUNCHER,
    PythonExec,
    SandboxConfig,
    choose_interpreter,
    sandbox_binds,
)

pytestmark = pytest.mark.integration

LIMITS = Limits(timeout_s=20.0, max_output_bytes=4096, max_rows=0)


def _namespaces_work() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    flags = ["--net", "--pid", "--mount", "--fork"]
    if os.geteuid() != 0:
        flags.insert(0, "--user")
    done = subprocess.run(["unshare", *flags, "true"], capture_output=True, check=False)
    return done.returncode == 0


NAMESPACES = _namespaces_work()
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="Linux namespaces unavailable")


@pytest.fixture(scope="module")
def scratch_root() -> Iterator[str]:
    root = tempfile.mkdtemp(prefix="lalo-tools-sandbox-test-")
    # The sandbox uid must be able to reach its scratch directory.
    os.chmod(root, 0o711)  # noqa: S103
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tool(scratch_root: str) -> PythonExec:
    return PythonExec(
        limits=LIMITS,
        config=SandboxConfig(
            cpu_s=1,
            wall_timeout_s=3.0,
            memory_bytes=128 * 1024 * 1024,
            file_bytes=64 * 1024,
            work_bytes=256 * 1024,
            open_files=16,
            processes=4,
            scratch_root=scratch_root,
        ),
    )


async def run(tool: PythonExec, code: str, limits: Limits = LIMITS) -> str:
    result = await tool.run({"code": code}, limits)
    return result.text


async def fails(tool: PythonExec, code: str, limits: Limits = LIMITS) -> ToolFailure:
    with pytest.raises(ToolFailure) as info:
        await tool.run({"code": code}, limits)
    return info.value


@needs_namespaces
async def test_prints_come_back(tool: PythonExec) -> None:
    assert await run(tool, "import math\nprint(math.factorial(20))") == "2432902008176640000\n"


@needs_namespaces
async def test_exceptions_are_execution_errors(tool: PythonExec) -> None:
    failure = await fails(tool, "raise ValueError('boom')")
    assert failure.code is ErrorCode.EXECUTION_ERROR
    assert "ValueError: boom" in failure.message


@needs_namespaces
async def test_infinite_loop_is_killed_by_the_cpu_limit(tool: PythonExec) -> None:
    failure = await fails(tool, "while True:\n    pass")
    assert failure.code is ErrorCode.TIMEOUT


@needs_namespaces
async def test_sleeping_forever_is_killed_by_the_wall_clock(tool: PythonExec) -> None:
    failure = await fails(tool, "import time\ntime.sleep(60)")
    assert failure.code is ErrorCode.TIMEOUT
    assert "wall-clock" in failure.message


@needs_namespaces
@pytest.mark.parametrize(
    "code",
    ["x = bytearray(1 << 30)", "x = []\nwhile True:\n    x.append(' ' * (1 << 20))"],
)
async def test_memory_bomb_is_stopped(tool: PythonExec, code: str) -> None:
    failure = await fails(tool, code)
    assert failure.code is ErrorCode.LIMIT_EXCEEDED


@needs_namespaces
async def test_huge_output_is_truncated(tool: PythonExec) -> None:
    result = await tool.run({"code": "while True:\n    print('y' * 1000)"}, LIMITS)
    assert result.truncated
    assert len(result.text.encode()) <= LIMITS.max_output_bytes
    assert set(result.text.replace("\n", "")) == {"y"}


@needs_namespaces
@pytest.mark.parametrize(
    "target", [("1.1.1.1", 80), ("127.0.0.1", 5432), ("127.0.0.1", 6379), ("::1", 5432)]
)
async def test_network_is_unreachable(tool: PythonExec, target: tuple[str, int]) -> None:
    code = f"import socket\ns = socket.create_connection({target!r}, timeout=2)\nprint('CONNECTED')"
    failure = await fails(tool, code)
    assert failure.code is ErrorCode.EXECUTION_ERROR
    assert "CONNECTED" not in failure.message
    assert "OSError" in failure.message or "Error" in failure.message


@needs_namespaces
async def test_only_loopback_exists_and_it_is_down(tool: PythonExec) -> None:
    out = await run(tool, "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))")
    assert out.strip() == "['lo']"


@needs_namespaces
@pytest.mark.parametrize(
    "path", ["/tmp/lalo-escape", "/etc/lalo-escape", "/var/tmp/lalo-escape", "/dev/shm/lalo-escape"]
)
async def test_writes_outside_scratch_fail(tool: PythonExec, path: str) -> None:
    failure = await fails(tool, f"open({path!r}, 'w').write('x')")
    assert failure.code is ErrorCode.EXECUTION_ERROR
    assert not os.path.exists(path)  # noqa: ASYNC240


@needs_namespaces
async def test_scratch_is_writable_then_removed(tool: PythonExec, scratch_root: str) -> None:
    out = await run(
        tool,
        "import os\nopen('note.txt', 'w').write('hi')\nos.mkdir('d')\n"
        "print(sorted(os.listdir('.')), os.getcwd())",
    )
    assert "'note.txt'" in out
    assert out.split()[-1] == "/work"
    assert os.listdir(scratch_root) == []


@needs_namespaces
async def test_the_host_filesystem_is_out_of_sight(tool: PythonExec) -> None:
    """Only system directories, devices, /proc and /work: no sockets, no service code."""
    code = (
        "import os, socket\n"
        "print(sorted(os.listdir('/')))\n"
        f"print(os.path.exists({__file__!r}), os.path.exists('/etc/passwd'))\n"
        "for path in ('/var/run/postgresql/.s.PGSQL.5432', '/run/postgresql/.s.PGSQL.5432',\n"
        "             '/tmp/.s.PGSQL.5432', '/var/run/redis/redis-server.sock',\n"
        "             '/var/run/docker.sock'):\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n"
        "        s.connect(path)\n"
        "        print('CONNECTED', path)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    listing, exists = (await run(tool, code)).strip().splitlines()
    assert set(eval(listing)) <= {  # noqa: S307 - a list literal printed by the snippet
        "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "usr", "work",
    }  # fmt: skip
    assert exists == "False False"


@needs_namespaces
async def test_big_files_hit_the_file_size_limit(tool: PythonExec) -> None:
    failure = await fails(tool, "open('big', 'wb').write(b'x' * (1 << 20))")
    assert failure.code is ErrorCode.EXECUTION_ERROR
    assert "File too large" in failure.message


@needs_namespaces
async def test_many_files_fill_only_the_small_work_tmpfs(tool: PythonExec) -> None:
    code = "for i in range(64):\n    open(f'f{i}', 'wb').write(b'x' * 60_000)\nprint('all written')"
    failure = await fails(tool, code)
    assert failure.code is ErrorCode.EXECUTION_ERROR
    assert "No space left on device" in failure.message


@needs_namespaces
async def test_environment_is_empty_and_host_processes_are_invisible(tool: PythonExec) -> None:
    os.environ["LALO_TOOLS_TEST_SECRET"] = "do-not-leak"
    try:
        out = await run(
            tool,
            "import os\nprint(sorted(os.environ))\n"
            "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
        )
    finally:
        del os.environ["LALO_TOOLS_TEST_SECRET"]
    env_line, pids_line = out.strip().splitlines()
    assert "LALO" not in env_line
    assert "do-not-leak" not in out
    # Only the sandbox's own init and the snippet exist in its PID namespace.
    assert pids_line == "[1, 2]"


@needs_namespaces
async def test_fork_bomb_is_contained(tool: PythonExec) -> None:
    failure = await fails(tool, "import os\nwhile True:\n    os.fork()")
    assert failure.code in (ErrorCode.EXECUTION_ERROR, ErrorCode.TIMEOUT)


@needs_namespaces
async def test_background_processes_do_not_outlive_the_call(tool: PythonExec) -> None:
    # The daemon execs `sleep 3917` so that it can be found by its command line.
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.execv('/bin/sleep', ['sleep', '3917'])\n"
        "print('parent done')"
    )
    assert await run(tool, code) == "parent done\n"
    leftover = subprocess.run(  # noqa: ASYNC221
        ["pgrep", "-f", "sleep 3917"], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == ""


@needs_namespaces
@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop only happens when running as root")
async def test_runs_as_the_sandbox_uid_without_privileges(tool: PythonExec) -> None:
    out = await run(
        tool,
        "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n"
        "print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])",
    )
    ids, no_new_privs = out.strip().splitlines()
    assert ids == "65534 65534 65534 []"
    assert no_new_privs == "1"


@needs_namespaces
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_the_launcher_also_isolates_when_started_unprivileged(scratch_root: str) -> None:
    """The non-root path: an unprivileged user namespace instead of the uid drop."""
    import json

    tmp_path = Path(tempfile.mkdtemp(dir=scratch_root))
    tmp_path.chmod(0o755)
    scratch = tmp_path / "work"
    scratch.mkdir()
    (tmp_path / "root").mkdir()
    (scratch / "main.py").write_text(
        "import socket, os\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 5432), timeout=1)\n"
        "    print('NET')\n"
        "except OSError:\n"
        "    print('no-net')\n"
        "try:\n"
        "    open('/tmp/lalo-escape-unpriv', 'w')\n"
        "    print('WROTE')\n"
        "except OSError:\n"
        "    print('read-only')\n"
        "print('HOST' if os.path.exists('/var/run/postgresql') else 'no-host')\n"
        "print(os.getuid() != 0)\n"
    )
    for path in (tmp_path, scratch, tmp_path / "root", scratch / "main.py"):
        os.chown(path, 65534, 65534)
    launcher = tmp_path / "launcher.py"
    shutil.copy(LAUNCHER, launcher)
    launcher.chmod(0o644)
    python = choose_interpreter("", drops_privileges=True)
    config = {
        "work": str(scratch),
        "root": str(tmp_path / "root"),
        "binds": sandbox_binds(python),
        "python": python,
        "cpu_s": 2,
        "memory_bytes": 128 << 20,
        "file_bytes": 1 << 16,
        "open_files": 16,
        "processes": 4,
        "uid": 65534,
        "gid": 65534,
        "drop_to_uid": False,
        "work_bytes": 1 << 20,
        "work_inodes": 64,
        "require_isolation": True,
    }
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-I", "-S",
         str(launcher), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )  # fmt: skip
    if done.returncode == 97:
        pytest.skip("unprivileged user namespaces are disabled here")
    try:
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["no-net", "read-only", "no-host", "True"]
        assert not os.path.exists("/tmp/lalo-escape-unpriv")
    finally:
        shutil.rmtree(tmp_path)


async def test_without_namespaces_the_tool_refuses_to_run(
    tool: PythonExec, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Simulate a host without namespaces: a launcher whose unshare always fails."""
    import lalo_tools.tools.python_exec as module

    broken = tmp_path / "launcher.py"
    broken.write_text(
        LAUNCHER.read_text().replace(
            "isolated = _libc.unshare(ctypes.c_int(flags)) == 0", "isolated = False"
        )
    )
    broken.chmod(0o644)
    tmp_path.chmod(0o755)  # noqa: ASYNC240
    monkeypatch.setattr(module, "LAUNCHER", broken)
    failure = await fails(tool, "print('ran unconfined')")
    assert failure.code is ErrorCode.NOT_ALLOWED
    assert "unavailable" in failure.message


@needs_namespaces
async def test_cancelled_call_kills_the_snippet_and_cleans_up(
    tool: PythonExec, scratch_root: str
) -> None:
    """A caller that goes away (gRPC deadline, cancel) leaves nothing behind."""
    import asyncio

    code = "import os\nos.execv('/bin/sleep', ['sleep', '4518'])"
    task = asyncio.create_task(tool.run({"code": code}, LIMITS))
    for _ in range(50):
        await asyncio.sleep(0.05)
        started = subprocess.run(  # noqa: ASYNC221
            ["pgrep", "-f", "sleep 4518"], capture_output=True, text=True, check=False
        )
        if started.stdout.strip():
            break
    else:
        pytest.fail("the snippet never started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The launcher is dead at this point; the kernel then tears the PID namespace down
    # (init gets SIGKILL through PDEATHSIG), which may take a moment.
    for _ in range(100):
        leftover = subprocess.run(  # noqa: ASYNC221
            ["pgrep", "-f", "sleep 4518"], capture_output=True, text=True, check=False
        )
        if not leftover.stdout.strip():
            break
        await asyncio.sleep(0.05)
    assert leftover.stdout.strip() == ""
    assert os.listdir(scratch_root) == []

"""python: run a snippet in a separate, sandboxed process and return what it printed.

The sandbox itself is ``lalo_tools/sandbox_launcher.py`` (namespaces, read-only filesystem,
uid drop, rlimits); this module prepares the scratch directory, starts the launcher in its
own session, enforces the wall-clock deadline and the output limit, kills the whole process
group when either is hit, maps the way the process ended to a result or a tool error, and
always removes the scratch directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lalo_tools.core import ErrorCode, Limits, ToolFailure, ToolResult, truncate_utf8

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).resolve().parent.parent / "sandbox_launcher.py"
EXIT_SETUP_FAILED = 96
EXIT_NO_ISOLATION = 97
_SIGNAL_EXIT = 128


@dataclass(frozen=True)
class SandboxConfig:
    cpu_s: int = 5
    wall_timeout_s: float = 10.0
    memory_bytes: int = 256 * 1024 * 1024
    file_bytes: int = 1024 * 1024
    work_bytes: int = 16 * 1024 * 1024
    work_inodes: int = 1024
    open_files: int = 32
    processes: int = 8
    max_code_chars: int = 20_000
    max_concurrent: int = 2
    scratch_root: str = ""
    python: str = ""
    sandbox_uid: int = 65534
    sandbox_gid: int = 65534
    require_isolation: bool = True


@dataclass
class _Captured:
    stdout: bytearray
    stderr: bytearray
    overflow: bool = False


class PythonExec:
    name = "python"
    description = (
        "Runs a Python 3 snippet in an isolated process with no network and only a scratch "
        "directory, and returns what it printed. Use print() for results. Standard library "
        "only; CPU, memory, time and output are limited."
    )

    def __init__(self, *, limits: Limits, config: SandboxConfig) -> None:
        self.limits = limits
        self.config = config
        self._slots = asyncio.Semaphore(config.max_concurrent)
        drops = os.geteuid() == 0
        self.python = choose_interpreter(config.python, drops_privileges=drops)
        self.binds = sandbox_binds(self.python)
        root = config.scratch_root or tempfile.gettempdir()
        if drops and not world_executable(root):
            raise ValueError(
                f"python tool: scratch root {root} must be traversable (o+x) by the sandbox uid"
            )
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "code": {"type": "string", "minLength": 1, "maxLength": config.max_code_chars},
            },
            "required": ["code"],
            "additionalProperties": False,
        }

    def probe(self) -> str | None:
        """Run a trivial snippet once (synchronously, at start-up); the problem, or None.

        A server that cannot build the sandbox should not offer the tool at all.
        """
        scratch = Path(
            tempfile.mkdtemp(prefix="lalo-py-probe-", dir=self.config.scratch_root or None)
        )
        try:
            self._prepare(scratch, "print('ok')")
            done = subprocess.run(
                [
                    self.python,
                    "-I",
                    "-S",
                    "-B",
                    str(LAUNCHER),
                    json.dumps(self._launcher_config(scratch)),
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(10.0, self.config.wall_timeout_s),
                env={},
                cwd=str(scratch),
                start_new_session=True,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot start the sandbox: {exc}"
        finally:
            _remove_tree(scratch)
        if done.returncode == 0 and done.stdout == b"ok\n":
            return None
        detail = done.stderr.decode("utf-8", errors="replace").strip()[-500:]
        return f"sandbox self-test failed (exit {done.returncode}): {detail}"

    async def run(self, arguments: dict[str, Any], limits: Limits) -> ToolResult:
        # Keep our own deadline inside the registry's so the message says what happened.
        wall = min(self.config.wall_timeout_s, max(0.1, limits.timeout_s - 0.25))
        async with self._slots:
            return await self._run(arguments["code"], wall, limits.max_output_bytes)

    async def _run(self, code: str, wall_s: float, max_output: int) -> ToolResult:
        root = self.config.scratch_root or None
        scratch = Path(tempfile.mkdtemp(prefix="lalo-py-", dir=root))
        proc: asyncio.subprocess.Process | None = None
        try:
            self._prepare(scratch, code)
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-I",
                "-S",
                "-B",
                str(LAUNCHER),
                json.dumps(self._launcher_config(scratch)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env={},
                cwd=str(scratch),
            )
            captured = _Captured(bytearray(), bytearray())
            timed_out = False
            try:
                async with asyncio.timeout(wall_s):
                    await self._collect(proc, captured, max_output)
                    await proc.wait()
            except TimeoutError:
                timed_out = True
            finally:
                _kill_group(proc)
                await proc.wait()
            return self._outcome(proc.returncode, captured, timed_out, wall_s, max_output)
        finally:
            if proc is not None and proc.returncode is None:
                _kill_group(proc)
            _remove_tree(scratch)

    def _launcher_config(self, scratch: Path) -> dict[str, Any]:
        c = self.config
        return {
            "work": str(scratch / "work"),
            "root": str(scratch / "root"),
            "binds": self.binds,
            "work_bytes": c.work_bytes,
            "work_inodes": c.work_inodes,
            "python": self.python,
            "cpu_s": c.cpu_s,
            "memory_bytes": c.memory_bytes,
            "file_bytes": c.file_bytes,
            "open_files": c.open_files,
            "processes": c.processes,
            "uid": c.sandbox_uid,
            "gid": c.sandbox_gid,
            "drop_to_uid": os.geteuid() == 0,
            "require_isolation": c.require_isolation,
        }

    def _prepare(self, scratch: Path, code: str) -> None:
        """``scratch/work`` (the snippet's /work, with main.py) and ``scratch/root`` (the
        mount point of the sandbox's root)."""
        work, root = scratch / "work", scratch / "root"
        work.mkdir(mode=0o700)
        root.mkdir(mode=0o755)
        main = work / "main.py"
        main.write_text(code, encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(work, self.config.sandbox_uid, self.config.sandbox_gid)
            os.chown(main, self.config.sandbox_uid, self.config.sandbox_gid)
        scratch.chmod(0o711)

    async def _collect(
        self, proc: asyncio.subprocess.Process, captured: _Captured, max_output: int
    ) -> None:
        """Read both pipes; stop (and let the caller kill) once the output limit is passed."""
        assert proc.stdout is not None
        assert proc.stderr is not None

        async def pump(stream: asyncio.StreamReader, sink: bytearray) -> None:
            while True:
                chunk = await stream.read(64 * 1024)
                if not chunk:
                    return
                room = max_output + 1 - len(captured.stdout) - len(captured.stderr)
                sink += chunk[: max(room, 0)]
                if len(captured.stdout) + len(captured.stderr) > max_output:
                    captured.overflow = True
                    _kill_group(proc)
                    return

        await asyncio.gather(pump(proc.stdout, captured.stdout), pump(proc.stderr, captured.stderr))

    def _outcome(
        self,
        code: int | None,
        captured: _Captured,
        timed_out: bool,
        wall_s: float,
        max_output: int,
    ) -> ToolResult:
        stdout = bytes(captured.stdout).decode("utf-8", errors="replace")
        stderr = bytes(captured.stderr).decode("utf-8", errors="replace")
        if timed_out:
            raise ToolFailure(
                ErrorCode.TIMEOUT, f"the snippet ran past the {wall_s:g} s wall-clock limit"
            )
        if code == EXIT_NO_ISOLATION and "lalo-sandbox:" in stderr:
            raise ToolFailure(
                ErrorCode.NOT_ALLOWED,
                "the python sandbox is unavailable on this server (cannot create namespaces)",
            )
        if code == EXIT_SETUP_FAILED and "lalo-sandbox: setup failed" in stderr:
            log.error("python sandbox set-up failed: %s", stderr.strip()[-2000:])
            raise ToolFailure(ErrorCode.UPSTREAM_ERROR, "the python sandbox could not be set up")
        if captured.overflow:
            out, _ = truncate_utf8(stdout, max_output)
            err, _ = truncate_utf8(stderr, max(0, max_output - len(out.encode())))
            cut = {"stdout": out, "stderr": err, "exit_code": None, "truncated": True}
            return ToolResult(content=cut, text=out, truncated=True)
        if code is not None and code > _SIGNAL_EXIT:
            sig = code - _SIGNAL_EXIT
            if sig in (signal.SIGXCPU, signal.SIGKILL):
                # Not retryable: the same snippet would use the same CPU again.
                raise ToolFailure(
                    ErrorCode.TIMEOUT, f"the snippet used up its {self.config.cpu_s} s of CPU time"
                )
            if sig == signal.SIGXFSZ:
                raise ToolFailure(ErrorCode.LIMIT_EXCEEDED, "the snippet wrote a file too large")
            raise ToolFailure(
                ErrorCode.EXECUTION_ERROR,
                f"the snippet was killed by {signal.Signals(sig).name}: {_tail(stderr)}",
            )
        if code != 0:
            if "MemoryError" in stderr:
                raise ToolFailure(
                    ErrorCode.LIMIT_EXCEEDED,
                    f"the snippet ran out of its {self.config.memory_bytes // (1024 * 1024)} MiB "
                    "memory limit",
                )
            raise ToolFailure(
                ErrorCode.EXECUTION_ERROR, f"the snippet exited with {code}: {_tail(stderr)}"
            )
        content: dict[str, Any] = {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": 0,
            "truncated": False,
        }
        text = stdout if not stderr else f"{stdout}\n[stderr]\n{stderr}"
        return ToolResult(content=content, text=text)


# What the sandbox's root holds (read-only), when present on the host. Nothing else.
SYSTEM_BINDS = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
)


def sandbox_binds(python: str) -> list[str]:
    """System directories, plus the interpreter's installation when it lives elsewhere."""
    binds = [path for path in SYSTEM_BINDS if os.path.lexists(path)]
    real = Path(os.path.realpath(python))
    if not any(real.is_relative_to(os.path.realpath(b)) for b in binds if os.path.isdir(b)):
        prefix = real.parent.parent  # <prefix>/bin/python3 -> <prefix>
        binds.append(str(prefix))
    return binds


def world_executable(path: str) -> bool:
    """True when every directory on the way and the file itself are usable by any user."""
    real = Path(os.path.realpath(path))
    try:
        for part in [*reversed(real.parents), real]:
            mode = part.stat().st_mode
            if not mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def choose_interpreter(configured: str, *, drops_privileges: bool) -> str:
    """The interpreter for snippets: the configured one, else this one, else python3.

    When the sandbox drops to another uid, an interpreter under a private directory (a uv
    managed Python in /root, say) cannot be executed by it; a system python3 is used then.
    """
    if configured:
        return configured
    if not drops_privileges or world_executable(sys.executable):
        return sys.executable
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        if os.path.exists(candidate) and world_executable(candidate):
            log.info("python tool: %s is private; snippets run with %s", sys.executable, candidate)
            return candidate
    return sys.executable


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _remove_tree(path: Path) -> None:
    def make_writable(func: Any, name: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            os.chmod(name, stat.S_IRWXU)
        with contextlib.suppress(OSError):
            func(name)

    shutil.rmtree(path, onerror=make_writable)

"""``python -m lalo_testing.child MODULE [ARGS...]``: run ``python -m MODULE ARGS...`` in this
process, after asking Linux to SIGTERM it when its parent dies (even by SIGKILL).

This replaces ``subprocess.Popen(preexec_fn=...)``. A preexec_fn makes CPython fork() (not
vfork) and run Python in the child before exec; grpcio's fork handler restarts its poller
there, and the child's close_fds then closes the poller's epoll fd, so the child can abort
("epoll_wait error: Bad file descriptor") before it ever execs (grpc/grpc#43055). A launcher
that has used gRPC (pytest, ``make up``) lost about one start in a hundred to it.
"""

from __future__ import annotations

import contextlib
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m lalo_testing.child MODULE [ARGS...]")
    die_with_parent()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

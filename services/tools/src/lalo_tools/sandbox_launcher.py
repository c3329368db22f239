"""Runs one Python snippet inside a throw-away sandbox. Standalone: stdlib only, run by path.

Invoked as ``python -I -S -B sandbox_launcher.py CONFIG_JSON`` by the python tool, in a new
session (so the tool can kill the whole group). Steps:

1. ``unshare`` new network, PID, mount, IPC and UTS namespaces (plus a user namespace when
   not root). The new network namespace has only a down loopback: no network at all.
2. Fork the namespace's init (PID 1). It dies with the launcher (PDEATHSIG), and when it
   exits the kernel kills every process left in the namespace — nothing outlives a call.
3. In init: pivot into a minimal root (a tmpfs with read-only binds of /usr, /lib… and a
   few device nodes, the writable scratch directory as /work, and a fresh /proc that shows
   only the sandbox's own processes), so no host file, socket or process is reachable.
4. Fork the snippet process: drop to the sandbox uid/gid (when root), set no_new_privs, the
   resource limits (CPU, address space, file size, open files, processes, no core files),
   cd into /work, and exec ``python -I -S -B -X utf8 main.py`` with an
   empty environment.

Exit status: the snippet's, or 128+signal when it was killed; 96 when sandbox set-up
failed and 97 when namespaces are unavailable and isolation is required. Messages from this
launcher on stderr start with ``lalo-sandbox:``.
"""

import ctypes
import json
import os
import platform
import resource
import signal
import sys
from typing import Any

EXIT_SETUP_FAILED = 96
EXIT_NO_ISOLATION = 97

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new unified syscall)
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _say(message: str) -> None:
    os.write(2, ("lalo-sandbox: " + message + "\n").encode("utf-8", "replace"))


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, what + ": " + os.strerror(errno))


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        "mount " + target,
    )


def _mount_setattr(path: str, flags: int, attr_set: int, attr_clr: int) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    result = _libc.syscall(
        SYS_MOUNT_SETATTR,
        ctypes.c_int(AT_FDCWD),
        path.encode(),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(0 if result == 0 else -1, "mount_setattr " + path)


def _map_own_ids(uid: int, gid: int) -> None:
    """Map our own uid/gid into the new user namespace (not to root: after exec the snippet
    is an ordinary user there too, so it keeps no capabilities). Without a mapping, files
    cannot be created on the sandbox's tmpfs root."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _pivot_root(new_root: str, put_old: str) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, "pivot_root: unknown architecture " + platform.machine())
    result = _libc.syscall(number, new_root.encode(), put_old.encode())
    _check(0 if result == 0 else -1, "pivot_root")


def _isolate_filesystem(cfg: dict[str, Any]) -> None:
    """Build a minimal root and pivot into it; nothing else of the host stays reachable.

    The new root is a small tmpfs holding read-only binds of the system directories the
    interpreter needs (/usr, /lib…), /dev/null, /dev/zero, /dev/urandom, a fresh /proc and
    the writable /work. No /run, /var, /tmp, /home or /etc: no unix sockets of local
    servers (Postgres, Redis, Docker), no configuration, no other users' files.
    """
    root = cfg["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in cfg["binds"]:
        target = root + path
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
            _mount(path, target, None, MS_BIND | MS_REC)
        elif os.path.isfile(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
            _mount(path, target, None, MS_BIND)
    os.makedirs(root + "/dev")
    for device in ("null", "zero", "urandom", "random"):
        open(root + "/dev/" + device, "w").close()
        _mount("/dev/" + device, root + "/dev/" + device, None, MS_BIND)
    # /work is a size-capped tmpfs of its own: RLIMIT_FSIZE caps one file, this caps them all.
    with open(os.path.join(cfg["work"], "main.py"), "rb") as f:
        code = f.read()
    owner = (cfg["uid"], cfg["gid"]) if cfg["drop_to_uid"] else (os.geteuid(), os.getegid())
    os.makedirs(root + "/work")
    _mount(
        "tmpfs",
        root + "/work",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={cfg['work_bytes']},nr_inodes={cfg['work_inodes']},mode=0700,"
        f"uid={owner[0]},gid={owner[1]}",
    )
    with open(root + "/work/main.py", "wb") as f:
        f.write(code)
    os.chown(root + "/work/main.py", owner[0], owner[1])
    os.makedirs(root + "/proc")
    # Before the host's /proc goes out of sight: a user namespace may only mount proc while
    # a fully visible one exists in its mount namespace.
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/.old")
    _pivot_root(root, root + "/.old")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    # Everything read-only and nosuid (device nodes must keep working), then /work writable.
    _mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0)
    _mount_setattr("/work", 0, 0, MOUNT_ATTR_RDONLY)


def _run_snippet(cfg: dict[str, Any]) -> None:
    if cfg["drop_to_uid"]:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    # After the credential change (which clears it): die with init.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    limits = [
        (resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
        (resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"]),
        (resource.RLIMIT_FSIZE, cfg["file_bytes"], cfg["file_bytes"]),
        (resource.RLIMIT_NOFILE, cfg["open_files"], cfg["open_files"]),
        (resource.RLIMIT_NPROC, cfg["processes"], cfg["processes"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    os.chdir("/work" if cfg["isolated"] else cfg["work"])
    os.umask(0o077)
    os.closerange(3, 1 << 16)
    python = cfg["python"]
    os.execve(python, [python, "-I", "-S", "-B", "-X", "utf8", "main.py"], {})  # noqa: S606


def _init(cfg: dict[str, Any], isolated: bool) -> None:
    """PID 1 of the sandbox: set up the filesystem, start the snippet, reap until it ends."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    cfg["isolated"] = isolated
    if isolated:
        _isolate_filesystem(cfg)
    child = os.fork()
    if child == 0:
        try:
            _run_snippet(cfg)
        except BaseException as exc:
            _say("setup failed: " + repr(exc))
            os._exit(EXIT_SETUP_FAILED)
    code = EXIT_SETUP_FAILED
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            code = _exit_code(status)
            break
    # Returning from PID 1 makes the kernel kill whatever the snippet left behind.
    os._exit(code)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    if os.geteuid() != 0:
        flags |= CLONE_NEWUSER
    uid, gid = os.geteuid(), os.getegid()
    isolated = _libc.unshare(ctypes.c_int(flags)) == 0
    if isolated and flags & CLONE_NEWUSER:
        _map_own_ids(uid, gid)
    if not isolated:
        errno = ctypes.get_errno()
        if cfg["require_isolation"]:
            _say("cannot create namespaces (" + os.strerror(errno) + "); refusing to run")
            os._exit(EXIT_NO_ISOLATION)
        _say("WARNING: running without namespaces (" + os.strerror(errno) + ")")
    child = os.fork()
    if child == 0:
        try:
            _init(cfg, isolated)
        except BaseException as exc:
            _say("setup failed: " + repr(exc))
            os._exit(EXIT_SETUP_FAILED)
    _, status = os.waitpid(child, 0)
    os._exit(_exit_code(status))


if __name__ == "__main__":
    main()

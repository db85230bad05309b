"""The process tree, as the controller sees it through /proc (Linux): a process's identity (pid and start
time, so a reused pid is never mistaken for it), its ancestors, processes found by their environment, and
the controller's part as a child subreaper. Signals to whole process groups."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PR_SET_CHILD_SUBREAPER = 36


def _stat_fields(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    return stat[stat.rindex(b")") + 2 :].split()  # fields from the state on (the name may hold spaces)


def proc_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (to tell a process from a later one with its pid), or ''."""
    try:
        return _stat_fields(pid)[19].decode()
    except (OSError, ValueError, IndexError):
        return ""


def pid_alive(pid: int | None, start: str = "") -> bool:
    """Whether ``pid`` runs (a zombie does not) and, when ``start`` is known, is the same process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return not os.path.isdir("/proc")  # no procfs: trust kill(0); with one, the pid just went
    if fields[0] in (b"Z", b"X"):
        return False
    return not start or fields[19].decode() == start


def run_ids_of(pids: list[int]) -> set[str]:
    """The ``MC_RUN_ID`` / ``MC_REVIEW_ID`` values in the environments these processes started with."""
    found: set[str] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read(1 << 20)
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith((b"MC_RUN_ID=", b"MC_REVIEW_ID=")):
                found.add(item.split(b"=", 1)[1].decode(errors="replace"))
    return found


def find_process_with_env(name: str, value: str) -> int | None:
    """A pid whose environment holds ``name=value`` (Linux; same user), or None."""
    needle = f"{name}={value}".encode() + b"\0"
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read() + b"\0":
                    return int(entry)
        except OSError:
            continue
    return None


def ancestors(pid: int) -> list[int]:
    """The pids above ``pid`` in the process tree, nearest first (empty where /proc cannot tell)."""
    chain: list[int] = []
    while pid > 1 and len(chain) < 512:
        try:
            pid = int(_stat_fields(pid)[1])  # the parent pid, after the state
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
    return chain


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux): orphans of its descendants are reparented to it,
    not to init, so a run's detached helpers stay in its tree. False where it is not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(keep: set[int]) -> None:
    """Reap exited children that are not runs this controller watches (orphans a subreaper adopted),
    without touching the exit status of those in ``keep``."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in keep:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def kill_group(pgid: int | None, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group; nothing happens if it is gone."""
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

"""Worker runtime: start worker and reviewer processes from argv templates, watch them without
busy polling, and read what they reported from their log files with bounded memory.

A process's stdout and stderr go straight to files under ``logs/<KEY>/``, so its output survives
the controller and never passes through the controller's memory. Ticket text reaches a process
only as argv elements, a prompt file and environment values; never a shell.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mission_control.proctree import kill_group, pid_alive, reap_orphans
from mission_control.text import utf8_safe

SENTINEL = re.compile(rb"DONE: ([0-9a-fA-F]{7,40})[ \t\r]*")
SENTINEL_MAX = 64  # no sentinel line is longer than this
CHUNK = 1 << 20
SCAN_MAX = 16 << 20  # the DONE line is near the end: read at most the last 16 MiB
TAIL_BYTES = 4096


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only. Whatever a run may have left in its
    place (a file, a symlink) is moved aside, never followed and never a reason to fail every start."""
    try:
        os.mkdir(path, 0o700)
        return path
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return private_dir(path)
    except FileExistsError:
        if stat.S_ISDIR(os.lstat(path).st_mode):  # a directory, not a link to one
            return path
    _move_aside(path)
    path.mkdir(mode=0o700)
    return path


def _move_aside(path: Path) -> None:
    path.rename(path.with_name(f"{path.name}.moved-aside-{time.time_ns()}"))


def write_private(path: Path, text: str) -> None:
    """Write ``text`` as a new owner-only file at ``path``, replacing what is there without following
    it (a symlink a run left there is removed, its target untouched). Created in place, not renamed
    into place: each run's files have names of their own, read only by the run started after this.
    Text that UTF-8 cannot carry (lone surrogates) is written as U+FFFD."""
    data = utf8_safe(text).encode("utf-8")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        path.unlink()  # a file or link of that name (an earlier try of the same review): never followed
        fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    finally:
        os.close(fd)


def _open_log(path: Path) -> int:
    """A new log file at ``path``, created by the controller itself (never a file or link a run left
    there: that is moved aside first)."""
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        _move_aside(path)
        return os.open(path, flags, 0o600)


# A run's output: the controller's own descriptor of the file it created, or (a run it adopted after a
# crash) the file's path.
Output = int | str | os.PathLike[str]


def open_output(source: Output) -> BinaryIO | None:
    """Open a run's output for reading, or None. Through the controller's own descriptor when it has
    one (a fresh description of the same file, so renaming or replacing the path changes nothing);
    by path otherwise, without following a link and without blocking (a FIFO). Only a regular file
    is read: not a FIFO, a device such as ``/dev/zero``, or a directory."""
    try:
        if isinstance(source, int):
            fd = os.open(f"/proc/self/fd/{source}", os.O_RDONLY | os.O_CLOEXEC)
        else:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")
    except OSError:
        os.close(fd)
        return None


def find_sentinel(source: Output) -> str | None:
    """The sha of the last ``DONE: <sha>`` line in the file, lowercased, or None.

    Reads at most the last :data:`SCAN_MAX` bytes, in chunks, keeping at most :data:`SENTINEL_MAX`
    bytes of a partial line, so memory is bounded whatever the file holds (a 100 MB line included).
    """
    found: str | None = None
    carry = b""
    skipping = False  # inside a line already too long to be a sentinel
    handle = open_output(source)
    if handle is None:
        return None
    with handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - SCAN_MAX))
        skipping = size > SCAN_MAX  # started mid-file: the first partial line is not a sentinel
        while chunk := handle.read(CHUNK):
            if skipping:
                newline = chunk.find(b"\n")
                if newline < 0:
                    continue
                chunk, skipping = chunk[newline + 1 :], False
            lines = (carry + chunk).split(b"\n")
            for line in lines[:-1]:
                if len(line) <= SENTINEL_MAX and (match := SENTINEL.fullmatch(line)):
                    found = match.group(1).decode().lower()
            carry = lines[-1]
            if len(carry) > SENTINEL_MAX:
                carry, skipping = b"", True
    if carry and (match := SENTINEL.fullmatch(carry)):
        found = match.group(1).decode().lower()
    return found


def read_tail(source: Output, size: int = TAIL_BYTES) -> str:
    """The last ``size`` bytes of a run's output as text (invalid UTF-8 replaced), or ''."""
    handle = open_output(source)
    if handle is None:
        return ""
    try:
        with handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, end - size))
            return handle.read(size).decode("utf-8", errors="replace").replace("\x00", "\\0")
    except OSError:
        return ""


@dataclass
class Process:
    """A worker or reviewer process the controller watches (its child, or adopted after a crash)."""

    kind: str  # "worker" | "review"
    run_id: int
    ticket_id: int
    pid: int
    start: str  # its kernel start time ("" until the loop notes it started)
    stdout_path: Path
    deadline: float
    popen: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    timed_out: bool = False
    kill_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    stopped: str = ""  # why the controller stopped it, if it did
    for_shutdown: bool = False  # stopped because its controller is shutting down: not the run's fault
    token: int = 0  # the claim token it runs under (fencing)
    base_sha: str | None = None  # the branch head when the worker started
    workspace: Any = None  # where it works (a worktrees.Workspace), for workers
    started_at: float = field(default_factory=time.time)
    stall_timeout: float | None = None  # stop it when its output has not grown for this long
    stalled: bool = False
    output_fds: list[int] = field(default_factory=list)  # read-only fds of its logs, to see them grow
    output_size: int = -1
    grew_at: float = field(default_factory=time.time)
    on_release: list[Callable[[], None]] = field(default_factory=list)  # run at release()

    @property
    def stdout(self) -> Output:
        """Where to read its stdout: the controller's own descriptor of the file, or its path."""
        return self.output_fds[0] if self.output_fds else self.stdout_path

    @property
    def stderr(self) -> Output:
        """Where to read its stderr, like :attr:`stdout`."""
        return self.output_fds[1] if len(self.output_fds) > 1 else self.stdout_path.with_suffix(".err")

    def release(self) -> None:
        """Close the controller's descriptors of its output (once its report is read), and whatever else
        it held (its network's listeners)."""
        for fd in self.output_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.output_fds = []
        while self.on_release:
            self.on_release.pop()()

    def stall_deadline(self) -> float | None:
        """When to look whether the output grew, or None when stalls are not watched."""
        if self.stall_timeout is None or not self.output_fds or self.kill_at is not None:
            return None
        return self.grew_at + self.stall_timeout

    def output_grew(self, now: float) -> bool:
        """Whether the logs grew since the last look (sizes read through the controller's own fds). The
        growth is dated by the files' last write, not by this look, so a stall is caught
        ``stall_timeout`` after the output last grew, however long after that the look came."""
        size, written = 0, 0.0
        for fd in self.output_fds:
            try:
                found = os.fstat(fd)
            except OSError:
                continue
            size, written = size + found.st_size, max(written, found.st_mtime)
        if size != self.output_size:
            self.output_size, self.grew_at = size, min(now, max(written, self.grew_at))
            return True
        return False

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.run_id)


def _watch_fds(*paths: Path) -> list[int]:
    fds = []
    for path in paths:
        with contextlib.suppress(OSError):
            fds.append(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC))
    return fds


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One read-only descriptor of /dev/null for every run's stdin (subprocess opens one per start)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


def spawn(
    kind: str,
    run_id: int,
    ticket_id: int,
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    stdout_path: Path,
    stderr_path: Path,
    timeout: float,
    stdin_path: Path | None = None,
    stall_timeout: float | None = None,
) -> Process:
    """Start ``argv`` in a new session (its own process group), output to the two files, and
    ``stdin_path`` (the prompt, for agent presets) on its standard input.

    Raises OSError when the command cannot be started (not found, not executable).
    """
    out_fd, err_fd = _open_log(stdout_path), _open_log(stderr_path)
    in_fd = os.open(stdin_path, os.O_RDONLY | os.O_NOFOLLOW) if stdin_path is not None else _devnull()
    try:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=in_fd,
            stdout=out_fd,
            stderr=err_fd,
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(out_fd)
        os.close(err_fd)
        raise
    finally:
        if stdin_path is not None:
            os.close(in_fd)
    # Its start time is read later (LoopContext.note_started): /proc/PID/stat blocks while it is in execve.
    process = Process(kind, run_id, ticket_id, popen.pid, "", stdout_path, time.time() + timeout, popen=popen)
    process.stall_timeout = stall_timeout
    process.output_fds = [out_fd, err_fd]  # the files it created: read through these, never by path again
    process.output_grew(time.time())  # the sizes it starts from
    return process


def adopt(
    kind: str,
    run_id: int,
    ticket_id: int,
    pid: int,
    start: str,
    stdout_path: Path,
    deadline: float,
    stall_timeout: float | None = None,
) -> Process:
    """Watch a process another (dead) controller started."""
    process = Process(kind, run_id, ticket_id, pid, start, stdout_path, deadline, stall_timeout=stall_timeout)
    process.output_fds = _watch_fds(stdout_path, stdout_path.with_suffix(".err"))
    process.output_grew(time.time())
    return process


class Watcher:
    """Waits for any watched process to exit, or a wake-up, without polling (pidfds on Linux)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.processes: dict[tuple[str, int], Process] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.pidfds = hasattr(os, "pidfd_open")

    def watch_fd(self, fd: int) -> None:
        """Also end a wait when ``fd`` becomes readable (e.g. the database's notification socket)."""
        self.selector.register(fd, selectors.EVENT_READ, "fd")

    def unwatch_fd(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed, e.g. a database connection that was lost)."""
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(fd)

    @property
    def wake_fd(self) -> int:
        """Write a byte here (e.g. from a signal handler) to end a wait early."""
        return self._wake_w

    def add(self, process: Process) -> None:
        """Start watching ``process``."""
        self.processes[process.key] = process
        if self.pidfds:
            try:
                process.pidfd = os.pidfd_open(process.pid)
            except OSError:
                process.pidfd = None
            if process.pidfd is not None:
                self.selector.register(process.pidfd, selectors.EVENT_READ, process)

    def _finished(self, process: Process) -> bool:
        if process.popen is not None:
            code = process.popen.poll()
            if code is None:
                return False
            process.exit_code, process.signal = (code, None) if code >= 0 else (None, -code)
            return True
        return not pid_alive(process.pid, process.start)

    def forget(self, process: Process) -> None:
        """Stop watching ``process`` without touching it (another controller watches it now)."""
        self._drop(process)
        process.release()

    def _drop(self, process: Process) -> None:
        self.processes.pop(process.key, None)
        if process.pidfd is not None:
            self.selector.unregister(process.pidfd)
            os.close(process.pidfd)
            process.pidfd = None

    def enforce_deadlines(self, now: float) -> None:
        """Stop processes past their timeout, or whose output has not grown for their stall timeout:
        SIGTERM to the group, SIGKILL 3 s later."""
        for process in list(self.processes.values()):
            stall_at = process.stall_deadline()
            if process.kill_at is not None and now >= process.kill_at:
                kill_group(process.pid, signal.SIGKILL)
                process.kill_at = now + 3600
            elif process.kill_at is None and now >= process.deadline:
                process.timed_out = True
                self.stop(process, "timed out", signal.SIGTERM)
            elif stall_at is not None and now >= stall_at and not process.output_grew(now):
                process.stalled = True
                self.stop(process, f"no output for {process.stall_timeout:g} s (stalled)", signal.SIGTERM)

    def stop(self, process: Process, why: str, sig: int = signal.SIGTERM) -> None:
        """Ask a process group to stop; it is killed outright 3 s later if still there."""
        process.stopped = process.stopped or why
        kill_group(process.pid, sig)
        process.kill_at = time.time() + 3 if sig != signal.SIGKILL else time.time() + 3600

    def next_deadline(self) -> float | None:
        times = [p.kill_at if p.kill_at is not None else p.deadline for p in self.processes.values()]
        times += [t for t in (p.stall_deadline() for p in self.processes.values()) if t is not None]
        return min(times) if times else None

    def wait(self, timeout: float) -> list[Process]:
        """Wait up to ``timeout`` seconds; return the processes that exited (no longer watched; their
        output descriptors stay open until the caller has read their report and calls ``release``)."""
        deadline = self.next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.time()))
        unwatchable = [p for p in self.processes.values() if p.pidfd is None]
        if unwatchable:
            timeout = min(timeout, 0.05)  # no pidfd for these: look again soon
        for key, _ in self.selector.select(timeout):
            if key.data == "fd":
                continue  # the caller looks at what arrived
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
        exited = [p for p in list(self.processes.values()) if self._finished(p)]
        reap_orphans({p.pid for p in self.processes.values() if p.popen is not None and p not in exited})
        for process in exited:
            if process.popen is not None and process.popen.returncode is None:
                process.popen.wait()
            kill_group(process.pid, signal.SIGKILL)  # what it left running in its group ends with it
            self._drop(process)
        return exited

    def close(self) -> None:
        """Stop watching everything (the processes go on) and release the watcher's descriptors."""
        for process in list(self.processes.values()):
            self._drop(process)
            process.release()
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def describe_death(process: Process) -> str:
    """A short reason for a worker that ended without a sentinel."""
    if process.timed_out:
        return "timed out"
    if process.stopped:
        return process.stopped
    if process.signal is not None:
        try:
            name = signal.Signals(process.signal).name
        except ValueError:
            name = f"signal {process.signal}"
        return f"killed by {name}"
    if process.exit_code is not None:
        return f"exit {process.exit_code} without a DONE line"
    return "ended without a DONE line"

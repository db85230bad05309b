"""A sandbox per run (Linux, bubblewrap): what a worker or reviewer can see, write and leave behind.

Inside, the filesystem is the host's, read-only, except the run's workspace, its repository's git
directory and the paths its preset or profile names (the agent's own state, caches); the MC root is
an empty directory (the store, config.yaml, the kill-switch, logs, prompts and other tickets'
worktrees are not there), as is the store's file where it lives elsewhere; the run's prompt file is
the one file of the MC root it can read. It gets a PID namespace of its own: it cannot see or signal
the controller, and when the run's command exits every process it started ends with it. ``/tmp`` stays
the host's, read-only; the run's ``TMPDIR`` is a private directory, and so is each directory its CLI
makes under ``/tmp`` whatever ``TMPDIR`` says (see :func:`mount_point`). The network is a namespace of
the run's own whose only way out is the allowlist of :mod:`mission_control.egress` (unless its profile
says ``network: open``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mounts:
    """What one run may reach besides the read-only host."""

    writable: tuple[Path, ...] = ()  # directories and files it may change (must exist)
    readable: tuple[Path, ...] = ()  # paths it may read inside hidden directories (its prompt, a checkout)
    hidden: tuple[Path, ...] = ()  # directories that look empty inside (the MC root)
    hidden_files: tuple[Path, ...] = ()  # files that look empty inside (a store outside the MC root)
    private: tuple[tuple[Path, Path], ...] = ()  # (a private directory, where it appears inside): writable
    read_only_at: tuple[tuple[Path, Path], ...] = ()  # (a file, where it appears inside): read-only
    offline: bool = False  # a network namespace of its own with nothing in it (the controller's confined git)


def bwrap() -> str | None:
    """The bubblewrap executable on PATH, or None."""
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def works() -> str | None:
    """None when bubblewrap can build a sandbox here; otherwise why not, in one line."""
    program = bwrap()
    if program is None:
        return "bubblewrap (bwrap) is not installed"
    if shutil.which("socat") is None:
        return "socat is not installed (a run's network allowlist needs it: apt install socat)"
    try:
        probe = subprocess.run(
            [program, *_base(), "--", "true"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap cannot run: {exc}"
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        return f"bwrap cannot build a sandbox here: {lines[-1] if lines else f'exit {probe.returncode}'}"
    return None


def enabled(setting: str) -> bool:
    """Whether runs are sandboxed under the config's ``sandbox`` setting (``on`` is checked at start-up)."""
    return setting == "on" or (setting == "auto" and works() is None)


def _base() -> list[str]:
    return [
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--unshare-pid",
        "--as-pid-1",  # the run's command is the namespace's init: when it exits, all it started is killed
        "--unshare-ipc",
        "--unshare-uts",
    ]  # fmt: skip


def wrap(argv: list[str], cwd: Path, mounts: Mounts) -> list[str]:
    """``argv`` run inside a sandbox with ``mounts``, starting in ``cwd``. Hidden directories are
    mounted first, so the writable and readable paths inside them are mounted over them."""
    program = bwrap()
    if program is None:
        raise OSError("the sandbox needs bubblewrap (bwrap), which is not installed")
    planned = [(path, ["--tmpfs", str(path)]) for path in _unique(mounts.hidden)]
    planned += [(path, ["--ro-bind", "/dev/null", str(path)]) for path in _unique(mounts.hidden_files)]
    planned += [(path, ["--bind", str(path), str(path)]) for path in _unique(mounts.writable)]
    planned += [(path, ["--ro-bind", str(path), str(path)]) for path in _unique(mounts.readable)]
    planned += [(target, ["--bind", str(source), str(target)]) for source, target in mounts.private]
    planned += [(target, ["--ro-bind", str(source), str(target)]) for source, target in mounts.read_only_at]
    # Outer directories first, so a path inside a hidden directory is mounted over the empty one, and a
    # hidden directory inside a writable one stays hidden.
    planned.sort(key=lambda item: len(item[0].parts))
    args = [program, *_base(), *(["--unshare-net"] if mounts.offline else [])]
    for path, mount in planned:
        if mount[0] == "--tmpfs" or path.exists():
            args += mount
    for path in _unique(mounts.hidden):  # empty and read-only: nothing can be planted there either
        args += ["--remount-ro", str(path)]
    return [*args, "--chdir", str(cwd), "--", *argv]


def mount_point(path: Path) -> bool:
    """Make ``path`` (a directory in a shared place such as ``/tmp``) ready to have a run's private
    directory mounted over it: created owner-only if missing. False if something else is there (a
    file, a link, a directory of another user's): nothing is mounted over what is not ours."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        found = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid()


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in paths:
        seen.setdefault(str(path), path)
    return list(seen.values())

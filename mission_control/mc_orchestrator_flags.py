"""Orchestrator flags: the kill-switch.

The kill-switch is engaged while ``.mc_killswitch`` exists in the MC root, ``MC_KILLSWITCH=1``, or
the cluster flag is set in the store (one `mc killswitch on` stops every host sharing a database).
The file and the flag are read as data (JSON: who, host, when, reason), never executed. Checking
fails closed: any error while checking counts as engaged.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

KILLSWITCH_FILE = ".mc_killswitch"
CLUSTER_FLAG = "killswitch"


class KillSwitchError(Exception):
    """The kill-switch file cannot be changed (something else is at its path); one line for the user."""


def killswitch_path(root: str | os.PathLike[str] | None = None) -> Path:
    """The kill-switch file of an MC root (default: ``MC_ROOT`` or the current directory)."""
    return Path(root if root is not None else os.environ.get("MC_ROOT", ".")) / KILLSWITCH_FILE


_PATHS: dict[object, tuple[str, str]] = {}
_SEARCHABLE: dict[str, float] = {}


def killswitch_active(root: str | os.PathLike[str] | None = None) -> bool:
    """True while the kill-switch is engaged for ``root``; True as well if checking fails.

    Called before every automatic action, so it avoids exceptions and path objects on the hot path.
    """
    try:
        env = os.environ.get("MC_KILLSWITCH")
        if env and env != "0":
            return True  # "1", and anything unrecognised: fail closed
        paths = _PATHS.get(root) if root is not None else None
        if paths is None:
            path = killswitch_path(root)
            paths = (str(path), str(path.parent))
            if root is not None:
                _PATHS[root] = paths
        if os.access(paths[0], os.F_OK):
            return True
        # Absent, or the MC root cannot be searched (then we cannot tell): fail closed for the latter.
        # The root's permissions rarely change, so that second look is made at most once a second.
        now = time.monotonic()
        if _SEARCHABLE.get(paths[1], 0.0) > now:
            return False
        if not os.access(paths[1], os.X_OK):
            return True
        _SEARCHABLE[paths[1]] = now + 1.0
        return False
    except Exception:
        return True


def killswitch_info(who: str, reason: str = "") -> dict[str, Any]:
    """What an engaged kill-switch records: who, on which host, since when, why."""
    return {"who": who, "host": socket.gethostname(), "since": time.time(), "reason": reason}


def engage_killswitch(root: str | os.PathLike[str], who: str, reason: str = "") -> dict[str, Any]:
    """Write the kill-switch file (atomically) and return what it records."""
    info = killswitch_info(who, reason)
    write_killswitch_file(root, info)
    return info


def write_killswitch_file(root: str | os.PathLike[str], info: dict[str, Any]) -> None:
    """Write ``info`` as this root's kill-switch file, atomically (KillSwitchError when a directory is
    in the way)."""
    path = killswitch_path(root)
    if path.is_dir() and not path.is_symlink():
        raise KillSwitchError(f"{path} is a directory: the kill-switch counts as engaged; remove it to use the file")
    tmp = path.with_name(f"{KILLSWITCH_FILE}.{os.getpid()}.{time.time_ns()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    os.replace(tmp, path)


def release_killswitch(root: str | os.PathLike[str]) -> bool:
    """Remove the kill-switch file; False if it was not there (KillSwitchError when a directory is there)."""
    path = killswitch_path(root)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        raise KillSwitchError(f"{path} is a directory, which keeps the kill-switch engaged; remove it") from None


def killswitch_status(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Whether the kill-switch is engaged, by what, and since when (as far as it can be told)."""
    path = killswitch_path(root)
    env = os.environ.get("MC_KILLSWITCH", "")
    status: dict[str, Any] = {"engaged": killswitch_active(root), "source": None, "since": None}
    if env not in ("", "0"):
        status.update(source="environment (MC_KILLSWITCH)")
    try:
        stat = path.stat()
    except FileNotFoundError:
        return status
    except OSError as exc:
        status.update(source=f"{path} (unreadable: {exc.strerror})")
        return status
    status.update(source=status["source"] or str(path), since=stat.st_mtime)
    try:
        recorded = json.loads(_read_small(path))
        if isinstance(recorded, dict):
            for key in ("who", "host", "reason"):
                if isinstance(recorded.get(key), str):
                    status[key] = recorded[key]
            if isinstance(recorded.get("since"), (int, float)):
                status["since"] = float(recorded["since"])
            if recorded.get("stop_runs") is True:
                status["stop_runs"] = True
    except (OSError, ValueError):
        pass  # a hand-made (touched) file: engaged, since its mtime
    return status


def cluster_killswitch() -> dict[str, Any] | None:
    """The store's cluster-wide kill-switch flag (who, host, since, reason), or None when released.

    Fails closed: a flag that cannot be read or parsed counts as engaged.
    """
    from mission_control.store import queries

    try:
        value = queries.meta_value(CLUSTER_FLAG)
        if value is None:
            return None
        info = json.loads(value)
        return info if isinstance(info, dict) else {"reason": "unreadable flag"}
    except Exception as exc:  # fail closed
        return {"reason": f"the flag could not be read: {exc}"}


def set_cluster_killswitch(info: dict[str, Any] | None) -> None:
    """Set (``info``) or clear (None) the cluster-wide flag, inside the caller's transaction."""
    from mission_control.store import queries

    queries.set_meta(CLUSTER_FLAG, None if info is None else json.dumps(info))


def _read_small(path: Path, limit: int = 65536) -> str:
    """The start of a regular file, without following a link or blocking on a FIFO (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)

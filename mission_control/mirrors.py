"""Mirrors of the repositories tickets name by URL (a tracker's tickets do): one bare repository per URL
under ``<root>/mirrors/``, so any controller of a shared store can take such a ticket and its runs
start from the remote's default branch as it is now.

A mirror plays the part your repository plays for a local ticket: the ticket's clone reads its objects,
and each verified commit is fast-forwarded to ``refs/heads/mc/<KEY>`` there, from where a delivery
pushes it. The remote's branches are fetched to ``refs/remotes/origin/*`` and its default branch is
kept at ``refs/heads/<default>`` (and HEAD). git runs with Mission Control's own configuration only;
credentials come in the environment of the one command that needs them (``repository_env``).
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from pathlib import Path

from mission_control.worktrees import WorkspaceError, own_git

SCHEMES = ("https://", "http://", "ssh://", "file://", "git://")


def is_url(repo: str | None) -> bool:
    """Whether a ticket's ``repo`` names a remote repository (rather than a directory here)."""
    return repo is not None and (repo.startswith(SCHEMES) or re.match(r"^[\w.-]+@[\w.-]+:", repo) is not None)


def path(root: Path, url: str) -> Path:
    """Where the mirror of ``url`` lives (its name readable, its hash telling apart look-alikes)."""
    name = re.sub(r"[^\w.-]+", "-", url.split("://")[-1].removesuffix(".git")).strip("-.")[-60:]
    return root / "mirrors" / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}.git"


def local(root: Path, repo: str | None) -> str | None:
    """The repository a ticket's runs work from here: the mirror for a URL, the directory itself else."""
    if repo is None or not is_url(repo):
        return repo
    return str(path(root, repo))


def update(root: Path, url: str, env: dict[str, str] | None = None) -> Path:
    """Create or refresh the mirror of ``url`` and return it; WorkspaceError (one line) when the remote
    cannot be read. ``env`` holds the credentials, for these commands only."""
    mirror = path(root, url)
    mirror.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Tickets of one repository start together, from one or several controllers of this root: one fetch
    # at a time (git would refuse the second's ref updates while the first holds their locks).
    with open(mirror.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _update(mirror, url, env)


def _update(mirror: Path, url: str, env: dict[str, str] | None) -> Path:
    if not (mirror / "HEAD").exists():
        _ok(own_git(mirror, "init", "-q", "--bare"), f"cannot create {mirror}")
    fetched = own_git(
        mirror, "fetch", "-q", "--prune", "--no-tags", url, "+refs/heads/*:refs/remotes/origin/*", env=env
    )
    _ok(fetched, f"cannot fetch {without_credentials(url)}")
    head = own_git(mirror, "ls-remote", "--symref", url, "HEAD", env=env)
    found = re.search(r"^ref: refs/heads/(\S+)\tHEAD", head.stdout, re.MULTILINE)
    if found:
        default = found.group(1)
        own_git(mirror, "update-ref", f"refs/heads/{default}", f"refs/remotes/origin/{default}")
        own_git(mirror, "symbolic-ref", "HEAD", f"refs/heads/{default}")
    return mirror


def without_credentials(url: str) -> str:
    """``url`` without any user or password in it (for messages)."""
    return re.sub(r"://[^/@]*@", "://", url)


def _ok(result: object, what: str) -> None:
    code = getattr(result, "returncode", 1)
    if code != 0:
        text = getattr(result, "stderr", "") or ""
        raise WorkspaceError(f"{what}: {' '.join(text.split())[:300] or f'exit {code}'}")

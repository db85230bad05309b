"""Where runs work: a git worktree per ticket, a scratch directory for tickets without a repo, and a
clean detached checkout of the reported commit for the reviewer.

A ticket with a repo works in ``worktrees/<KEY>`` under the MC root, on branch ``mc/<KEY>`` (or its
own ``--branch``), created from the repo's HEAD at first dispatch and reused by every later run, so
a resumed agent session finds its files and two tickets on one repo never see each other's changes.
The user's own checkout is never touched. git is run with argv only, with a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT = 60
# A run can write its repo's .git (it commits there): hooks and an fsmonitor it plants there must never
# run as the controller, outside any sandbox, when the controller runs git on the repo.
HARDENED = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
SCRATCH_IDENTITY = ("-c", "user.name=Mission Control", "-c", "user.email=mission-control@localhost")
MAX_LEFTOVERS = 50


class WorkspaceError(Exception):
    """The workspace could not be prepared; the message says why, in one line."""


@dataclass(frozen=True)
class Workspace:
    """Where one run works. ``repo`` is the git repository that holds ``branch`` (the ticket's own
    repo, or a scratch repo), None for a plain scratch directory."""

    path: Path
    branch: str | None = None
    base_sha: str | None = None  # the branch head when the run started
    repo: str | None = None


def git(cwd: str | Path, *args: str, timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``git -C cwd ARGS`` (argv only, no prompts, no hooks or fsmonitor a run could have planted); a
    missing git or a timeout is returncode 127/124."""
    argv = ["git", *HARDENED, "-C", str(cwd), *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", "git is not installed")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"git {args[0]} timed out after {timeout:g}s")


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[:300] or f"exit {result.returncode}"
        raise WorkspaceError(f"{what}: {detail}")
    return result.stdout.strip()


def head(path: str | Path) -> str | None:
    """The commit checked out at ``path``, or None if it is not a git work tree (or has no commit)."""
    result = git(path, "rev-parse", "--verify", "-q", "HEAD")
    return result.stdout.strip() or None if result.returncode == 0 else None


def git_dir(repo: str | Path) -> Path | None:
    """The repository's own git directory (shared by its worktrees), or None."""
    result = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def git_dirs(workdir: str | Path) -> tuple[Path, ...]:
    """Where commits made in ``workdir`` write: the repository's git directory and, for a worktree,
    the worktree's own (its index and HEAD); empty when it is not a git work tree."""
    result = git(workdir, "rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir")
    if result.returncode != 0:
        return ()
    return tuple(dict.fromkeys(Path(line) for line in result.stdout.splitlines() if line.strip()))


def run_tmp(root: Path, key: str) -> Path:
    """A sandboxed run's private temporary directory (``TMPDIR``), emptied for each run."""
    path = root / "worktrees" / f"{key}.tmp"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    return path


def agent_state(root: Path, key: str) -> Path:
    """The ticket's own agent state directory (Aider's chat history), kept across its runs."""
    path = root / "worktrees" / f"{key}.agent"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def default_branch(key: str) -> str:
    """The branch a ticket works on when it names none."""
    return f"mc/{key}"


def ticket_path(root: Path, key: str) -> Path:
    """Where ticket ``key`` works (its worktree or scratch directory)."""
    return root / "worktrees" / key


def review_path(root: Path, key: str) -> Path:
    """Where the reviewer of ticket ``key`` reads its clean checkout."""
    return root / "worktrees" / f"{key}.review"


def prepare(root: Path, key: str, repo: str | None, branch: str | None, scratch_git: bool) -> Workspace:
    """The ticket's workspace, created at its first run and reused by every later one.

    With ``repo``: a worktree of it on ``branch`` (default ``mc/<KEY>``), from the repo's HEAD when the
    branch is new. Without: a scratch directory, made a git repository with an empty first commit on
    ``mc/<KEY>`` when ``scratch_git`` (agent presets decide DONE from commits). Raises WorkspaceError.
    """
    path = ticket_path(root, key)
    branch = branch or default_branch(key)
    if repo is None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not scratch_git:
            return Workspace(path)
        if head(path) is None:
            _check(git(path, "init", "-q", "-b", branch), f"cannot make {path} a git repository")
            _check(
                git(
                    path, *SCRATCH_IDENTITY, "commit", "-q", "--allow-empty", "-m", f"Mission Control scratch for {key}"
                ),
                f"cannot make the first commit in {path}",
            )
        return Workspace(path, branch, head(path), str(path))
    if not (path / ".git").exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        git(repo, "worktree", "prune")
        if path.exists():
            shutil.rmtree(path)  # a leftover of an interrupted add: ours, under worktrees/
        exists = git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}").returncode == 0
        add = (
            ["worktree", "add", "-q", str(path), branch]
            if exists
            else ["worktree", "add", "-q", "-b", branch, str(path)]
        )
        _check(git(repo, *add), f"cannot create the worktree {path} of {repo} on {branch}")
    base = head(path)
    if base is None:
        raise WorkspaceError(f"the worktree {path} has no commit checked out")
    return Workspace(path, branch, base, repo)


def new_commit(workspace: Workspace) -> str | None:
    """The branch's head if it is a new commit past the run's base (a descendant, not the base). Read
    from the repository itself, never through the worktree's ``.git`` file, which the run could point
    at a directory of its own."""
    if workspace.base_sha is None or workspace.repo is None or workspace.branch is None:
        return None
    found = git(workspace.repo, "rev-parse", "--verify", "-q", f"refs/heads/{workspace.branch}^{{commit}}")
    current = found.stdout.strip() if found.returncode == 0 else None
    if not current or current == workspace.base_sha:
        return None
    if git(workspace.repo, "merge-base", "--is-ancestor", workspace.base_sha, current).returncode != 0:
        return None
    return current


def leftovers(workspace: Workspace, confine: Callable[[list[str]], list[str]] | None = None) -> list[str]:
    """Uncommitted changes in the workspace (``git status --porcelain`` lines, at most 50). ``git status``
    reads the worktree's own git configuration, which a run can write (filters, say): ``confine`` runs
    it inside a read-only sandbox."""
    argv = ["git", *HARDENED, "--no-optional-locks", "-C", str(workspace.path), "status", "--porcelain"]
    argv = [*argv, "--untracked-files=all"]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        result = subprocess.run(
            confine(argv) if confine else argv, capture_output=True, text=True, timeout=GIT_TIMEOUT, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.splitlines()[:MAX_LEFTOVERS] if result.returncode == 0 else []


def remove(root: Path, key: str, repo: str | None) -> bool:
    """Remove a done ticket's worktree, keeping its branch; a scratch directory holds the only copy of
    its work and is kept. True if something was removed."""
    shutil.rmtree(root / "worktrees" / f"{key}.agent", ignore_errors=True)  # the agent's chat history
    path = ticket_path(root, key)
    if repo is None or not path.exists():
        return False
    git(repo, "worktree", "remove", "--force", str(path))
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
        git(repo, "worktree", "prune")
    return True


def review_checkout(root: Path, key: str, repo: str | None, sha: str) -> Path | None:
    """A fresh detached checkout of ``sha`` for the reviewer, or None where there is no such commit."""
    if repo is None or git(repo, "rev-parse", "--verify", "-q", f"{sha}^{{commit}}").returncode != 0:
        return None
    path = review_path(root, key)
    remove_review_checkout(root, key, repo)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if git(repo, "worktree", "add", "-q", "--detach", str(path), sha).returncode != 0:
        return None
    return path


def remove_review_checkout(root: Path, key: str, repo: str | None) -> None:
    """Remove the reviewer's checkout of ticket ``key``, if there is one."""
    path = review_path(root, key)
    if not path.exists():
        return
    if repo is not None:
        git(repo, "worktree", "remove", "--force", str(path))
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
        if repo is not None:
            git(repo, "worktree", "prune")

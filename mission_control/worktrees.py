"""Where runs work: a git repository of its own per ticket, MC's verified copy of what runs committed,
a scratch directory for tickets without a repo, and a clean detached checkout for the reviewer.

Three directories per ticket under ``worktrees/``:

* ``<KEY>/``, the run's **clone**: a repository of its own (``git clone --shared``), on branch
  ``mc/<KEY>`` (or the ticket's ``--branch``), reused by every run of the ticket so a resumed agent
  session finds its files. It shares no refs, config or worktree metadata with your repository or
  another ticket's: whatever a run does there stays there.
* ``<KEY>.git/``, the **verified** repository: bare, owned by Mission Control, hidden from runs. After
  a run ends, the controller fetches the ticket's branch from the clone into it, with the clone's side
  of the fetch (``git upload-pack``) confined to a read-only sandbox without network; the objects are
  hashed and checked as they arrive (``transfer.fsckObjects``). Every later look at the result (the
  new commit, its ancestry, the reviewer's checkout, the fetch into your repository) reads this
  repository only, with Mission Control's own configuration alone (no system or global config, no
  hooks, no replace refs): nothing a run wrote can run as the controller or change what is reviewed.
* ``<KEY>.review/``, the reviewer's checkout of the reported commit, from the verified repository.

Your repository is read (its HEAD, its objects) and changed at one place only: ``refs/heads/mc/<KEY>``
(or ``--branch``) is fast-forwarded to each verified new commit by fetching it from ``<KEY>.git``.
git is run with argv only, with a timeout.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT = 60
# A run can write its repo's .git (it commits there): hooks and an fsmonitor it plants there must never
# run as the controller, outside any sandbox, when the controller runs git on the repo.
HARDENED = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
# What the controller's git honours in Mission Control's own repositories (verified copies, reviewer
# checkouts): their own configuration alone, which Mission Control wrote. No system or global config
# (no filter, textconv or diff driver is defined anywhere, so attributes in a commit run nothing), no
# replace refs or grafts, no prompts; and the controller's own GIT_* settings (GIT_DIR, say) left out.
OWN_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_NO_LAZY_FETCH": "1",
}
OWN_CONFIG = (*HARDENED, "-c", "core.attributesFile=/dev/null", "-c", "protocol.file.allow=always")
SCRATCH_IDENTITY = ("-c", "user.name=Mission Control", "-c", "user.email=mission-control@localhost")
COLLECTED = "refs/mc/collected"  # in the verified repository: the branch head the last run left
MAX_LEFTOVERS = 50
# Wraps an argv so it runs confined (a read-only sandbox without network); None: unconfined.
Confine = Callable[[list[str]], list[str]] | None


class WorkspaceError(Exception):
    """The workspace could not be prepared; the message says why, in one line."""


@dataclass(frozen=True)
class Workspace:
    """Where one run works. ``path`` is the run's directory (its clone); ``verified`` Mission Control's
    verified repository of the ticket's ``branch``, None for a plain scratch directory; ``repo`` your
    repository, None for a ticket without one."""

    path: Path
    branch: str | None = None
    base_sha: str | None = None  # the branch head when the run started
    repo: str | None = None
    verified: Path | None = None


def _scrubbed_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return {**env, **extra}


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", "git is not installed")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"git timed out after {timeout:g}s")


def git(cwd: str | Path, *args: str, timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``git -C cwd ARGS`` in your repository (argv only, no prompts, no hooks or fsmonitor, no
    replace refs); a missing git or a timeout is returncode 127/124."""
    argv = ["git", *HARDENED, "-C", str(cwd), *args]
    return _run(argv, _scrubbed_env({"GIT_TERMINAL_PROMPT": "0", "GIT_NO_REPLACE_OBJECTS": "1"}), timeout)


def own_git(
    git_dir: Path, *args: str, work_tree: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run git on one of Mission Control's own repositories (``--git-dir``), honouring only its own
    configuration (see ``OWN_ENV``); ``env`` adds variables for this command alone (credentials)."""
    tree = ["--work-tree", str(work_tree)] if work_tree is not None else []
    argv = ["git", *OWN_CONFIG, "--git-dir", str(git_dir), *tree, *args]
    return _run(argv, _scrubbed_env({**OWN_ENV, **(env or {})}), GIT_TIMEOUT)


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[:300] or f"exit {result.returncode}"
        raise WorkspaceError(f"{what}: {detail}")
    return result.stdout.strip()


def head(path: str | Path) -> str | None:
    """The commit checked out at ``path`` (your repository), or None if it is not a git work tree (or
    has no commit)."""
    result = git(path, "rev-parse", "--verify", "-q", "HEAD")
    return result.stdout.strip() or None if result.returncode == 0 else None


def git_dir(repo: str | Path) -> Path | None:
    """The repository's own git directory (shared by its worktrees), or None."""
    result = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def _resolve(git_dir: Path, ref: str) -> str | None:
    found = own_git(git_dir, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
    return found.stdout.strip() or None if found.returncode == 0 else None


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


def agent_home(root: Path, key: str, review: bool = False) -> Path:
    """A sandboxed run's own HOME: the ticket's workers share one across runs (so a session resumes),
    each review gets a fresh one (nothing a worker left there reaches its reviewer)."""
    path = root / "worktrees" / (f"{key}.review-home" if review else f"{key}.home")
    if review:
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def default_branch(key: str) -> str:
    """The branch a ticket works on when it names none."""
    return f"mc/{key}"


def ticket_path(root: Path, key: str) -> Path:
    """Where ticket ``key`` works (its clone or scratch directory)."""
    return root / "worktrees" / key


def verified_path(root: Path, key: str) -> Path:
    """Mission Control's verified repository of ticket ``key`` (hidden from runs)."""
    return root / "worktrees" / f"{key}.git"


def review_path(root: Path, key: str) -> Path:
    """Where the reviewer of ticket ``key`` reads its clean checkout."""
    return root / "worktrees" / f"{key}.review"


def prepare(
    root: Path, key: str, repo: str | None, branch: str | None, scratch_git: bool, confine: Confine = None
) -> Workspace:
    """The ticket's workspace, created at its first run and reused by every later one.

    With ``repo``: a clone of its own on ``branch`` (default ``mc/<KEY>``), starting from that branch
    in your repository if it exists, else from your HEAD. Without: a scratch directory, made a git
    repository with an empty first commit on ``mc/<KEY>`` when ``scratch_git`` (agent presets decide
    DONE from commits). The run starts from the verified head of the branch. ``confine`` is how a
    clone that runs already touched is read (see :func:`collect`). Raises WorkspaceError.
    """
    path = ticket_path(root, key)
    branch = branch or default_branch(key)
    if repo is None and not scratch_git:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Workspace(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    verified = verified_path(root, key)
    _set_aside_legacy_worktree(path, repo)
    if _resolve(verified, f"refs/heads/{branch}") is None:
        _init_verified(verified, repo)
        start = _start_point(verified, key, repo, branch, path, confine)
        _check(own_git(verified, "update-ref", f"refs/heads/{branch}", start), f"cannot start {verified}")
    if not (path / ".git").is_dir():
        _clone(verified, path, branch)
    base = _resolve(verified, f"refs/heads/{branch}")
    return Workspace(path, branch, base, repo, verified)


def _set_aside_legacy_worktree(path: Path, repo: str | None) -> None:
    """A ticket started by an older Mission Control works in a ``git worktree`` of your repository (its
    ``.git`` is a file): its commits are on your branch already; the directory is moved to
    ``<KEY>.legacy`` (for anything uncommitted in it) and a clone of its own replaces it."""
    if (path / ".git").is_file() and not (path / ".git").is_symlink():
        legacy = path.with_name(f"{path.name}.legacy")
        shutil.rmtree(legacy, ignore_errors=True)
        path.rename(legacy)
        if repo is not None:
            git(repo, "worktree", "prune")


def _init_verified(verified: Path, repo: str | None) -> None:
    shutil.rmtree(verified, ignore_errors=True)  # a leftover of an interrupted start: ours
    _check(own_git(verified, "init", "-q", "--bare"), f"cannot create {verified}")
    # The user's commits are read where they are, never copied or changed (alternates).
    if repo is not None:
        source = git_dir(repo)
        if source is None:
            raise WorkspaceError(f"{repo} is not a git repository")
        (verified / "objects" / "info" / "alternates").write_text(f"{source / 'objects'}\n", encoding="utf-8")
    # So your repository can fetch any verified commit on the branch, not only its head.
    _check(own_git(verified, "config", "uploadpack.allowReachableSHA1InWant", "true"), f"cannot set up {verified}")


def _start_point(verified: Path, key: str, repo: str | None, branch: str, path: Path, confine: Confine) -> str:
    if repo is not None:
        found = git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}")
        if found.returncode != 0:
            found = git(repo, "rev-parse", "--verify", "-q", "HEAD^{commit}")
        return _check(found, f"{repo} has no commit to start from")
    if (path / ".git").is_dir():  # a scratch repository an older Mission Control made: its work so far
        collected = collect(Workspace(path, branch, None, None, verified), confine)
        if collected is not None:
            return collected
    empty_tree = _check(own_git(verified, "hash-object", "-t", "tree", "-w", "--stdin"), "cannot write a tree")
    return _check(
        own_git(verified, *SCRATCH_IDENTITY, "commit-tree", empty_tree, "-m", f"Mission Control scratch for {key}"),
        f"cannot make the first commit in {verified}",
    )


def _clone(verified: Path, path: Path, branch: str) -> None:
    if path.exists():
        shutil.rmtree(path)  # a leftover of an interrupted clone (or a scratch directory without git): ours
    # Copies, not hard links, of the verified repository's own objects (a run could rewrite a linked
    # file in place); your repository's objects are read where they are (its alternates, copied along).
    argv = ["git", *OWN_CONFIG, "clone", "-q", "--no-hardlinks", "--branch", branch, str(verified), str(path)]
    _check(_run(argv, _scrubbed_env(OWN_ENV), GIT_TIMEOUT), f"cannot clone {verified} into {path}")
    # The clone stands alone: no way back to the verified repository, which runs never see.
    own_git(path / ".git", "remote", "remove", "origin")


def collect(workspace: Workspace, confine: Confine = None) -> str | None:
    """Fetch the ticket's branch from the run's clone into the verified repository and return its head
    there (None: no such branch, or not a commit). The clone's side runs confined where runs are
    sandboxed; its objects are hashed and checked on arrival, so the head is exactly the commit found."""
    if workspace.verified is None or workspace.branch is None:
        return None
    upload = shlex.join(confine(["git", "upload-pack"]) if confine else ["git", "upload-pack"])
    fetched = own_git(
        workspace.verified,
        "-c",
        "transfer.fsckObjects=true",
        "fetch",
        "-q",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        f"--upload-pack={upload}",
        str(workspace.path),
        f"+refs/heads/{workspace.branch}:{COLLECTED}",
    )
    if fetched.returncode != 0:
        own_git(workspace.verified, "update-ref", "-d", COLLECTED)
        return None
    return _resolve(workspace.verified, COLLECTED)


def new_commit(workspace: Workspace, confine: Confine = None) -> str | None:
    """The branch's head, collected from the run's clone (:func:`collect`), if it is a new commit past
    the run's base (a descendant, not the base); the verified branch then points at it."""
    current = _advance(workspace, confine)
    return current if current != workspace.base_sha else None


def accept_claim(workspace: Workspace, confine: Confine = None) -> None:
    """For a ``command:`` worker's DONE claim: collect the branch and, when its head descends from the
    run's base, make it the verified branch (the claim is then checked against it)."""
    _advance(workspace, confine)


def _advance(workspace: Workspace, confine: Confine) -> str | None:
    """Collect the branch; if its head descends from the run's base, the verified branch moves there and
    the head is returned (None otherwise)."""
    current = collect(workspace, confine)
    if current is None or workspace.base_sha is None or workspace.verified is None:
        return None
    if own_git(workspace.verified, "merge-base", "--is-ancestor", workspace.base_sha, current).returncode != 0:
        return None
    own_git(workspace.verified, "update-ref", f"refs/heads/{workspace.branch}", current)
    return current


def publish(workspace: Workspace, sha: str) -> str | None:
    """Fast-forward the ticket's branch in your repository to the verified commit ``sha`` (fetched from
    the verified repository; nothing else there changes). None when done, or why not in one line (the
    branch moved elsewhere, or is checked out in your work tree)."""
    if workspace.repo is None or workspace.verified is None or workspace.branch is None:
        return None
    result = git(
        workspace.repo,
        "fetch",
        "-q",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        str(workspace.verified),
        f"{sha}:refs/heads/{workspace.branch}",
    )
    if result.returncode == 0:
        return None
    detail = " ".join((result.stderr or result.stdout).split())[:300] or f"exit {result.returncode}"
    return f"could not update {workspace.branch} in {workspace.repo}: {detail}"


def leftovers(workspace: Workspace, confine: Confine = None) -> list[str]:
    """Uncommitted changes in the workspace (``git status --porcelain`` lines, at most 50). ``git status``
    reads the clone's own configuration, which a run can write (filters, say): ``confine`` runs it
    inside a read-only sandbox."""
    argv = ["git", *HARDENED, "--no-optional-locks", "-C", str(workspace.path), "status", "--porcelain"]
    argv = [*argv, "--untracked-files=all"]
    env = _scrubbed_env({"GIT_TERMINAL_PROMPT": "0", "GIT_NO_REPLACE_OBJECTS": "1"})
    try:
        result = subprocess.run(
            confine(argv) if confine else argv, capture_output=True, text=True, timeout=GIT_TIMEOUT, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.splitlines()[:MAX_LEFTOVERS] if result.returncode == 0 else []


def remove(root: Path, key: str, repo: str | None) -> bool:
    """Remove a done ticket's clone and verified repository (its branch in your repository holds the
    work); a scratch ticket's are the only copy of its work and are kept. True if something was removed."""
    for state in (f"{key}.agent", f"{key}.home", f"{key}.review-home"):  # chat history, sessions, logins
        shutil.rmtree(root / "worktrees" / state, ignore_errors=True)
    path = ticket_path(root, key)
    if repo is None or not (path.exists() or verified_path(root, key).exists()):
        return False
    remove_review_checkout(root, key, repo)
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(verified_path(root, key), ignore_errors=True)
    return True


def review_checkout(root: Path, key: str, sha: str) -> Path | None:
    """A fresh detached checkout of ``sha`` from the ticket's verified repository for the reviewer, or
    None where there is no such commit there."""
    verified = verified_path(root, key)
    if not verified.is_dir() or _resolve(verified, sha) is None:
        return None
    path = review_path(root, key)
    remove_review_checkout(root, key)
    if own_git(verified, "worktree", "add", "-q", "--detach", str(path), sha).returncode != 0:
        return None
    return path


def remove_review_checkout(root: Path, key: str, repo: str | None = None) -> None:
    """Remove the reviewer's checkout of ticket ``key``, if there is one (``repo`` is not used: the
    checkout belongs to the verified repository)."""
    path = review_path(root, key)
    if not path.exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    verified = verified_path(root, key)
    if verified.is_dir():
        own_git(verified, "worktree", "prune")

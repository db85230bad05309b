"""Verified DONE claims: when a ticket has a git repository, the sha a worker reports must name a
commit that exists, is on the ticket's branch (if one is set), and is new: a descendant of the commit
the worker started from, not that commit itself. Otherwise the run counts as a dead worker, with the
reason, so the normal retry and escalation apply, and no review is paid for. Uses git, argv only."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from mc_hooks import hookimpl

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.store.models import Ticket


def _git(repo: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=60, check=False)


def claim_problem(repo: str, sha: str, branch: str | None, base: str | None) -> str | None:
    """Why a DONE claim of ``sha`` does not hold in ``repo``, or None when it does (or when ``repo``
    is not a git work tree or git is not installed, where there is nothing to check)."""
    try:
        if _git(repo, "rev-parse", "--git-dir").returncode != 0:
            return None
    except OSError:  # no git on this machine: there is nothing to check against
        return None
    resolved = _git(repo, "rev-parse", "--verify", "-q", f"{sha}^{{commit}}")
    if resolved.returncode != 0:
        return f"claimed {sha[:12]}, which does not exist"
    full = resolved.stdout.strip()
    if branch:
        if _git(repo, "rev-parse", "--verify", "-q", f"{branch}^{{commit}}").returncode != 0:
            return f"claimed {sha[:12]} on branch {branch}, which does not exist"
        if _git(repo, "merge-base", "--is-ancestor", full, branch).returncode != 0:
            return f"claimed {sha[:12]}, which is not on branch {branch}"
    if base and full == base:
        return f"claimed the base commit {sha[:12]}: no change"
    if base and _git(repo, "merge-base", "--is-ancestor", base, full).returncode != 0:
        return f"claimed {sha[:12]}, which does not descend from the commit the run started from ({base[:12]})"
    return None


class DoneVerifier:
    """``verify_done_claim``: refuse DONE claims the repository does not bear out."""

    def __init__(self, settings: Section) -> None:
        pass

    @hookimpl
    def verify_done_claim(self, ticket: Ticket, done_sha: str, base_sha: str | None) -> str | None:
        if not ticket.repo:
            return None
        return claim_problem(ticket.repo, done_sha, ticket.branch, base_sha)

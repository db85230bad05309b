"""Verified DONE claims: when a ticket works in git, the sha a worker reports must name a commit that
exists, is on the ticket's branch, and is new: a descendant of the commit the worker started from, not
that commit itself. Otherwise the run counts as a dead worker, with the reason, so the normal retry and
escalation apply, and no review is paid for. The claim is checked in Mission Control's verified copy of
the branch (``controller.verified_repository``), never in the run's own clone; git, argv only, with
no system or global configuration and no replace refs."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from mc_hooks import hookimpl

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.controller import Controller
    from mission_control.store.models import Ticket

_ENV = {"GIT_NO_REPLACE_OBJECTS": "1", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def _git(repo: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **_ENV}
    argv = ["git", "-c", "core.hooksPath=/dev/null", "-C", repo, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)


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
        # Only the ticket's branch is ever collected from a run: a commit elsewhere in its clone is not here.
        return f"claimed {sha[:12]}, which does not exist" + (f" on branch {branch}" if branch else "")
    full = resolved.stdout.strip()
    if branch:
        ref = f"refs/heads/{branch}"
        if _git(repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}").returncode != 0:
            return f"claimed {sha[:12]} on branch {branch}, which does not exist"
        if _git(repo, "merge-base", "--is-ancestor", full, ref).returncode != 0:
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
    def verify_done_claim(
        self, ticket: Ticket, done_sha: str, base_sha: str | None, controller: Controller
    ) -> str | None:
        verified = controller.verified_repository(ticket)
        if verified is None:
            return None
        return claim_problem(str(verified), done_sha, ticket.branch, base_sha)

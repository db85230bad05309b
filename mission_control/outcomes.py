"""What a finished run reported, read from its own output and its workspace, outside any transaction.

A ``command:`` worker reports success with a ``DONE: <sha>`` line. For an agent preset Mission
Control decides: the agent exited well and its branch has a new commit past the commit it started
from; anything else is a dead worker with the reason in plain words. A reviewer's verdict is its
last JSON verdict line, or a preset's structured output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mission_control import agents, shadow_reviewer, test_results, worktrees
from mission_control import ticket_runtime as rt
from mission_control.agents import AgentReport
from mission_control.config import TESTS_STAGE, AgentSettings
from mission_control.controller import Death
from mission_control.worktrees import Workspace

TAIL = 4096


@dataclass
class WorkerOutcome:
    """A worker run's report: a done sha, or why it died (exit code, signal, timed out, reason)."""

    sha: str | None = None
    death: Death | None = None
    tail: str = ""
    agent: AgentReport = field(default_factory=AgentReport)
    leftovers: list[str] = field(default_factory=list)
    refused_by: str | None = None  # the plugin that refused the DONE claim
    requeue: str | None = None  # stopped by its own controller (shutdown): back to todo, not a death
    unstartable: str | None = None  # can never start as configured (a prompt too long for argv): the owner's call
    unpublished: str | None = None  # why the verified commit could not be put on the branch in the user's repo

    def refuse(self, reason: str, plugin: str) -> None:
        """The claim does not hold: the run counts as a death with ``reason``."""
        self.sha, self.death, self.refused_by = None, Death.of(reason), plugin or "host"


def tail_of(stdout: Path, process: rt.Process | None = None) -> str:
    """The end of a run's stdout and stderr, for the death record (through the controller's own
    descriptors while it has them)."""
    if process is not None:
        return (rt.read_tail(process.stdout) + rt.read_tail(process.stderr))[-TAIL:]
    return (rt.read_tail(stdout) + rt.read_tail(stdout.with_suffix(".err")))[-TAIL:]


def worker(
    profile: AgentSettings,
    stdout: Path,
    workspace: Workspace,
    process: rt.Process | None,
    confine: worktrees.Confine = None,
) -> WorkerOutcome:
    """Read a finished worker run. ``process`` is None when it ended while no controller watched it
    (recovery): its exit status is unknown, so only what it wrote counts."""
    if process is not None and process.for_shutdown:
        return WorkerOutcome(requeue=process.stopped)
    preset = agents.preset(profile)
    source = process.stdout if process is not None else stdout
    if preset:
        outcome = _preset_worker(preset, profile, source, workspace, process, confine)
    else:
        outcome = _command_worker(source, process, workspace, confine)
    if outcome.death is not None:
        outcome.tail = tail_of(stdout, process)
    return outcome


def _death_of(process: rt.Process | None, default: str) -> Death:
    if process is None:
        return Death.of(default)
    return Death.of(rt.describe_death(process), process.exit_code, process.signal, process.timed_out)


def _command_worker(
    stdout: rt.Output, process: rt.Process | None, workspace: Workspace, confine: worktrees.Confine
) -> WorkerOutcome:
    cut_short = process is not None and (process.timed_out or process.stalled)
    sha = None if cut_short else rt.find_sentinel(stdout)
    if sha is not None:
        worktrees.accept_claim(workspace, confine)  # the claim is checked against what this collects
        return WorkerOutcome(sha=sha)
    return WorkerOutcome(death=_death_of(process, "ended while its controller was down, without a DONE line"))


def _preset_worker(
    preset: agents.Preset,
    profile: AgentSettings,
    stdout: rt.Output,
    workspace: Workspace,
    process: rt.Process | None,
    confine: worktrees.Confine,
) -> WorkerOutcome:
    said = preset.report(stdout).priced(profile.price_per_mtok)
    outcome = WorkerOutcome(agent=said)
    code = process.exit_code if process else None
    if process is not None and (process.stopped or process.signal is not None):
        outcome.death = _death_of(process, "")
    elif said.is_error:
        outcome.death = Death.of(f"the agent reported an error: {said.error}", code)
    elif process is not None and code != 0:
        outcome.death = Death.of(f"exit {code}", code)
    elif not said.finished:
        why = "ended without printing a result" if process else "ended while its controller was down, without a result"
        outcome.death = Death.of(why, code)
    else:
        outcome.sha = worktrees.new_commit(workspace, confine)
        left = [line for line in worktrees.leftovers(workspace, confine) if not _scratch(preset, line)]
        if outcome.sha is not None:
            outcome.leftovers = left
        else:
            reason = f"no new commit on {workspace.branch}"
            if left:
                reason += f" ({len(left)} uncommitted change{'s' if len(left) != 1 else ''} left in the worktree)"
            if said.last_message:  # why, in the agent's own words
                reason += f'; it said: "{said.last_message}"'
            outcome.death = Death.of(reason, code)
    return outcome


def _scratch(preset: agents.Preset, status_line: str) -> bool:
    """Whether a ``git status --porcelain`` line is the preset's own cache, not work left behind."""
    return status_line.startswith("?? ") and status_line[3:].startswith(preset.scratch)


def read_review(
    settings: AgentSettings, stdout: rt.Output
) -> tuple[tuple[str, list[str], list[str]] | None, AgentReport]:
    """The verdict a reviewer run wrote, if any (its last JSON verdict line, or a preset's structured
    output), and what its agent CLI reported."""
    if settings.agent == TESTS_STAGE:
        return None, AgentReport()  # its verdict is its exit status, known only to the controller that ran it
    preset = agents.preset(settings)
    if preset is None:
        return shadow_reviewer.parse_verdict(stdout), AgentReport()
    said = preset.report(stdout).priced(settings.price_per_mtok)
    return (None if said.is_error else shadow_reviewer.clean_verdict(said.structured)), said


def review(
    settings: AgentSettings, process: rt.Process, timeout: float
) -> tuple[tuple[str, list[str], list[str]], AgentReport]:
    """A finished reviewer run's verdict (verdict, reasons, gaps) and what its agent CLI reported.
    Anything but a clean verdict (a crash, a timeout, a stall, an API error) is ``uncertain``. A tests
    stage's verdict is its test command's exit status (see :mod:`mission_control.test_results`)."""
    if settings.agent == TESTS_STAGE:
        return test_results.verdict(process, timeout), AgentReport()
    failure = None
    if process.timed_out:
        failure = f"timed out after {timeout:g}s"
    elif process.stopped:
        failure = process.stopped
    elif process.signal is not None or (process.exit_code or 0) != 0:
        failure = rt.describe_death(process)
    parsed, said = read_review(settings, process.stdout)
    if said.is_error:
        failure = f"the agent reported an error: {said.error}"
    return shadow_reviewer.judge(parsed, failure), said

"""An in-process stand-in for the processes the loop starts: a watcher that waits for nothing and a
starter that writes what the run would have printed, so the loop's decisions run without
subprocesses, in milliseconds. The loop, the store, the plugins and the launch plans are real."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from mission_control import ticket_runtime as rt
from mission_control.config import Config, load_config
from mission_control.launch import Launch
from mission_control.mc_pickup import Pickup
from mission_control.store import queries
from mission_control.store.connection import close_database, open_database
from mission_control.store.migration import init_schema
from mission_control.store.models import Ticket, WorkerRun

# What a scripted run does: (exit code, what it prints on stdout), from its kind and ticket title.
Script = Callable[[str, WorkerRun, Launch], tuple[int, str]]

_pids = itertools.count(4_000_000)  # above any real pid, so nothing the loop does can reach a process


class InstantWatcher:
    """Every started process has already exited by the next wait."""

    def __init__(self) -> None:
        self.processes: dict[tuple[str, int], rt.Process] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # signal.set_wakeup_fd requires it
        self.stopped: list[tuple[rt.Process, str]] = []

    @property
    def wake_fd(self) -> int:
        return self._wake_w

    def watch_fd(self, fd: int) -> None:
        pass

    def add(self, process: rt.Process) -> None:
        self.processes[process.key] = process

    def forget(self, process: rt.Process) -> None:
        self.processes.pop(process.key, None)

    def stop(self, process: rt.Process, why: str, sig: int = 15) -> None:
        process.stopped = process.stopped or why
        self.stopped.append((process, why))

    def enforce_deadlines(self, now: float) -> None:
        pass

    def wait(self, timeout: float) -> list[rt.Process]:
        exited = list(self.processes.values())
        self.processes.clear()
        return exited

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)


class ScriptedStarts:
    """Starts nothing: writes the run's output as ``script`` says and returns an exited process.
    ``started`` lists (kind, ticket id, attempt) in order."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.started: list[tuple[str, int, int]] = []

    def __call__(self, kind: str, run: WorkerRun, plan: Launch) -> rt.Process:
        code, stdout = self.script(kind, run, plan)
        Path(plan.stdout).parent.mkdir(parents=True, exist_ok=True)
        Path(plan.stdout).write_text(stdout, encoding="utf-8")
        Path(plan.stderr).write_text("", encoding="utf-8")
        self.started.append((kind, run.ticket_id, run.attempt))
        process = rt.Process(kind, run.id, run.ticket_id, next(_pids), "", plan.stdout, 1e12)
        process.exit_code = code
        return process


SHA = "abc1234def5678"


def loop_config(tmp_path: Path) -> Iterator[Config]:
    """An MC root with `command:` worker and reviewer (never started: see ScriptedStarts), its store
    open for the test."""
    root = tmp_path / "mc"
    root.mkdir()
    settings = {
        "database": "mc.db",
        "escalation": {"owner": "elmar"},
        "max_workers": 2,
        "workers": {"default": {"command": ["scripted-agent", "{prompt_file}"], "timeout": 60}},
        "reviewer": {"enabled": True, "command": ["scripted-reviewer", "{sha}"], "timeout": 60},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    loaded = load_config(root / "config.yaml", env={})
    open_database(loaded.database, create=True)
    init_schema()
    yield loaded
    close_database()


def by_title(kind: str, run: WorkerRun, plan: Launch) -> tuple[int, str]:
    """The ticket title is a script, one step per attempt: pass, fail (review fails), die (worker dies)."""
    steps = run.ticket.title.split(",")
    step = steps[min(run.attempt, len(steps)) - 1].strip()
    if kind == "worker":
        return (1, "gave up\n") if step == "die" else (0, f"DONE: {SHA}{run.attempt}\n")
    verdict = {"verdict": "fail", "reasons": ["missing tests"], "gaps": ["add a test"]} if step == "fail" else None
    return 0, json.dumps(verdict or {"verdict": "pass", "reasons": [], "gaps": []}) + "\n"


def add(config: Config, title: str) -> Ticket:
    """A todo ticket whose title is its script (see :func:`by_title`)."""
    return queries.new_ticket(config.ticket_prefix, title=title)


def run_until_idle(config: Config, starts: ScriptedStarts) -> int:
    """`mc run --until-idle` in this process, with scripted runs."""
    return Pickup(config, until_idle=True, quiet=True, watcher=InstantWatcher(), start=starts).run()

"""An in-process stand-in for the processes the loop starts: a watcher that waits for nothing and a
starter that writes what the run would have printed, so the loop's decisions run without
subprocesses, in milliseconds. The loop, the store, the plugins and the launch plans are real."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

from mission_control import ticket_runtime as rt
from mission_control.launch import Launch
from mission_control.store.models import WorkerRun

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

"""What the loop's collaborators share, and the few helpers more than one of them needs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from mission_control import launch, proctree, worktrees
from mission_control import ticket_runtime as rt
from mission_control.config import Config, WorkerProfile
from mission_control.controller import Controller
from mission_control.store import queries
from mission_control.store.models import Ticket, WorkerRun
from mission_control.store.transactions import write

# Asks the plugins whether an automatic action on a ticket may go ahead (the loop's veto call site).
Ask = Callable[[str, "Ticket | None"], bool]


@dataclass
class LoopContext:
    """One controller's shared state. ``config`` is replaced on reload; the facade holds the one hook
    relay (``controller.hooks``)."""

    config: Config
    controller: Controller
    watcher: rt.Watcher
    host: str
    db_id: str
    me: int = 0  # this controller's lease (set when it registers)
    # Starts a planned run (tests inject one that starts nothing); raises OSError when it cannot start.
    start: Callable[[str, WorkerRun, launch.Launch], rt.Process] = field(default=launch.start)
    clock: Callable[[], float] = field(default=time.time)  # the loop's schedule (tests inject one)
    # What every run inherits from this controller's environment, built once (not per run).
    inherited: dict[str, str] = field(default_factory=launch.inherited_env)

    def profile(self, name: str) -> WorkerProfile:
        """The worker profile ``name``, or the default one when it is no longer configured."""
        return self.config.workers.get(name, self.config.workers["default"])

    def free_slots(self) -> int:
        """How many more processes may run now."""
        return self.config.max_workers - len(self.watcher.processes)

    def say(self, message: str) -> None:
        """A diagnostic line on stderr."""
        print(f"mc run[{self.me or '-'}]: {message}", file=sys.stderr)

    def note_started(self, processes: list[rt.Process]) -> None:
        """Record the pids and start times of just-started processes (one transaction), for recovery after
        a crash, with where each worker works (its ticket's worktree and branch). The start times are read
        here, after the batch's spawns, not at each one: read while a child is still in ``execve``,
        ``/proc/PID/stat`` waits for it."""
        if processes:
            for process in processes:
                process.start = process.start or proctree.proc_start_time(process.pid)
            write(lambda: _note_all(processes))

    def remove_done_worktrees(self, done: list[Ticket]) -> None:
        """Remove done tickets' worktrees (their branches stay), unless ``keep_worktrees``. An effect
        outside the store: done after commit, and again at start-up after a crash."""
        if self.config.keep_worktrees:
            return
        for ticket in done:
            if ticket.source:  # its delivery may send it back to the same agent session: kept until it ends
                continue
            if ticket.repo and worktrees.remove(self.config.root, ticket.key, ticket.repo):
                write(partial(queries.forget_worktree, ticket.id))


def _note_all(processes: list[rt.Process]) -> None:
    for process in processes:
        if process.kind == "worker":
            place = process.workspace
            queries.note_worker_started(
                process.run_id,
                process.ticket_id,
                process.pid,
                process.start,
                process.base_sha,
                place.path,
                place.branch,
            )
        else:
            queries.note_review_started(process.run_id, process.pid, process.start)

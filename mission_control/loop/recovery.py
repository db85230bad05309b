"""Recovery: take over the tickets of controllers that are gone (adopting their processes that still
run here, storing what finished ones reported, re-queueing attempts that never started), and clean
up what a crash left outside the store."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mission_control import outcomes, proctree, worktrees
from mission_control import ticket_runtime as rt
from mission_control.controller import Death
from mission_control.loop.context import LoopContext
from mission_control.loop.lease import Lease
from mission_control.loop.reports import Reports
from mission_control.store import queries
from mission_control.store.models import Ticket, WorkerRun
from mission_control.store.transactions import write


class Recovery:
    """Finds gone controllers and takes over what they held."""

    def __init__(self, ctx: LoopContext, lease: Lease, reports: Reports) -> None:
        self.ctx = ctx
        self.lease = lease
        self.reports = reports

    def recover(self) -> bool:
        """Take over the tickets of controllers that are gone. True if anything was taken over."""
        dead = [row.id for row in self.lease.dead_controllers()]
        orphans = queries.orphaned_tickets(dead)
        for ticket in orphans:
            self.take_over(ticket)
        if dead:
            write(lambda: queries.end_leases(dead))
        if orphans or dead:
            self.ctx.controller.deliver_effects()
        return bool(orphans)

    def reclaim_unwatched(self, watched: set[int]) -> bool:
        """This controller's own active tickets with no process of its own behind them (``watched``
        holds the tickets it still watches): settled as if their controller were gone. Used after a
        lost database connection, when the pass it interrupted may have left an attempt claimed but
        not started, or a run ended but not stored. True if any was taken over."""
        mine = [
            ticket
            for ticket in queries.orphaned_tickets([self.ctx.me])
            if ticket.claimed_by == self.ctx.me and ticket.id not in watched
        ]
        return sum(self.take_over(ticket) for ticket in mine) > 0

    def take_over(self, seen: Ticket) -> bool:
        """Claim one orphaned ticket, then settle its latest attempt. False if someone else got it."""
        run = queries.latest_run(seen.id)

        def transfer() -> int | None:
            token = queries.transfer_claim(seen, self.ctx.me, run)
            if token is not None:
                self.ctx.controller.record(seen, "recover", "taken over from a controller that is gone", kind="host")
            return token

        token = write(transfer)
        if token is None:
            return False
        if run is not None and run.token == seen.claim_token:
            run.token = token
            self.settle(run, seen, token)
        return True

    def settle(self, run: WorkerRun, ticket: Ticket, token: int) -> None:
        """The attempt of a taken-over ticket: its review if it waits for one; adopted if its worker
        still runs here; a death if it ran on a gone host; re-queued if it never started; otherwise
        what it reported while nobody watched."""
        if run.outcome == "done" and run.applied_at is None:
            self.recover_review(run, ticket, token)
        if run.outcome != "running":
            return  # a stored report: the normal harvest applies it
        here = run.host == self.ctx.host
        pid = run.pid
        if pid is None and here:
            pid = proctree.find_process_with_env("MC_RUN_ID", f"{self.ctx.db_id}:{run.id}")
        if here and pid and proctree.pid_alive(pid, run.proc_start if run.pid else ""):
            profile = self.ctx.profile(run.profile)
            start = run.proc_start or proctree.proc_start_time(pid)
            deadline = run.started_at + profile.timeout
            self.adopt("worker", run, ticket, pid, start, Path(run.log_path), deadline, token, profile.stall_timeout)
        elif not here and run.pid:
            gone = Death.of(f"its controller on {run.host} is gone (lease expired)")
            self.reports.record(run, outcomes.WorkerOutcome(death=gone))
        elif run.pid is None and not _has_output(run.log_path):
            write(lambda: self.requeue_unstarted(run, ticket))
        else:
            run.ticket = ticket
            self.reports.record(run, self.reports.worker_outcome(run, None))

    def adopt(
        self,
        kind: str,
        run: WorkerRun,
        ticket: Ticket,
        pid: int,
        start: str,
        stdout: Path,
        deadline: float,
        token: int,
        stall_timeout: float,
    ) -> None:
        """Watch a worker or reviewer a gone controller started, under this controller's claim."""
        adopted = rt.adopt(kind, run.id, ticket.id, pid, start, stdout, deadline, stall_timeout)
        adopted.token = token
        self.ctx.watcher.add(adopted)
        what = f"attempt {run.attempt}" if kind == "worker" else f"the review of attempt {run.attempt}"
        write(lambda: self.ctx.controller.record(ticket, "recover", f"adopted {what} (pid {pid})", kind="host"))

    def recover_review(self, run: WorkerRun, ticket: Ticket, token: int) -> None:
        """A review left by a gone controller: adopt it if it still runs here, take its verdict from
        its log if it finished (only if its start was noted: the controller created that log), or let it
        start again (counted, so it cannot loop)."""
        here = run.host == self.ctx.host
        pid = run.review_pid
        if pid is None and here:
            pid = proctree.find_process_with_env("MC_REVIEW_ID", f"{self.ctx.db_id}:{run.id}")
        stdout = run.review_output()
        start = run.review_proc_start if run.review_pid else ""
        reviewer = self.ctx.config.reviewer.stage(run.review_stage)
        if here and pid and proctree.pid_alive(pid, start):
            deadline = time.time() + reviewer.timeout
            start = start or proctree.proc_start_time(pid)
            self.adopt("review", run, ticket, pid, start, stdout, deadline, token, reviewer.stall_timeout)
            return
        if not run.review_pid:
            # Its start was never noted: what lies at its log path may be a run's forgery rather than the log a
            # controller created for its reviewer. The review starts again (counted).
            return
        parsed, said = outcomes.read_review(reviewer, stdout)
        if parsed is not None:
            self.reports.store([], [(run, ticket, *parsed, said)])
        else:
            write(lambda: queries.review_ended(run.id))

    def requeue_unstarted(self, run: WorkerRun, ticket: Ticket) -> None:
        """Inside a transaction: an attempt whose process never started (the controller died first)
        goes back to todo; not a death."""
        queries.requeue_unstarted(run, ticket)
        self.ctx.controller.record(ticket, "recover", f"attempt {run.attempt} never started; back to todo", kind="host")

    def sweep_worktrees(self) -> None:
        """At start: remove what a crash left behind, i.e. done tickets' worktrees and reviewers'
        checkouts that no running review uses."""
        base = self.ctx.config.root / "worktrees"
        try:
            names = [entry.name for entry in os.scandir(base) if entry.is_dir(follow_symlinks=False)]
        except OSError:
            return
        tickets = queries.tickets_by_key({name.removesuffix(".review") for name in names})
        reviewing = {p.ticket_id for p in self.ctx.watcher.processes.values() if p.kind == "review"}
        for name in names:
            ticket = tickets.get(name.removesuffix(".review"))
            if ticket is not None and name.endswith(".review") and ticket.id not in reviewing:
                worktrees.remove_review_checkout(self.ctx.config.root, ticket.key)
        done = [t for t in tickets.values() if t.status == "done" and (base / t.key).exists()]
        self.ctx.remove_done_worktrees(done)


def _has_output(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0 or os.path.getsize(Path(path).with_suffix(".err")) > 0
    except OSError:
        return False

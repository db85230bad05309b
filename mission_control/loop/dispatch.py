"""Dispatch: claim todo tickets for the free slots (one transaction per batch, fenced by the claim
token), count the attempt, then start each worker outside the transaction."""

from __future__ import annotations

import errno
import time
from typing import Any

import peewee as pw

from mc_hooks import events
from mission_control import faults, launch, outcomes, prompts, worktrees
from mission_control import ticket_runtime as rt
from mission_control.controller import Death
from mission_control.loop.context import Ask, LoopContext
from mission_control.loop.reports import Reports
from mission_control.store import queries
from mission_control.store.connection import is_postgres
from mission_control.store.models import Ticket, WorkerRun
from mission_control.store.transactions import write

MAX_ATTEMPTS = 50  # a backstop: no ticket is ever started more often than this


class Dispatcher:
    """Claims todo tickets and starts their workers."""

    def __init__(self, ctx: LoopContext, ask: Ask, reports: Reports) -> None:
        self.ctx = ctx
        self.ask = ask
        self.reports = reports

    def dispatch(self) -> bool:
        """Claim todo tickets for the free slots and start them. True if any was claimed."""
        free = self.ctx.free_slots()
        if free <= 0:
            return False
        candidates = queries.todo_tickets(free)  # a plain read first: an idle poll takes no lock
        if not candidates:
            return False

        def claim_batch() -> list[tuple[Ticket, WorkerRun]]:
            # PostgreSQL: lock the batch in one round trip, skipping rows another controller is claiming.
            batch = queries.todo_tickets(free, lock=True) if is_postgres() else candidates
            return [claimed for claimed in (self.claim(seen) for seen in batch) if claimed is not None]

        try:
            claimed = write(claim_batch)
        except pw.IntegrityError:
            claimed = []
        self.ctx.controller.deliver_effects()
        started = []
        for ticket, run in claimed:
            faults.crash_point("dispatch:after-claim")
            process = self.start_worker(ticket, run)
            if process is not None:
                started.append(process)
        if started:
            faults.crash_point("dispatch:after-spawn")
        self.ctx.note_started(started)
        return bool(claimed)

    def claim(self, ticket: Ticket) -> tuple[Ticket, WorkerRun] | None:
        """Inside the dispatch transaction: take one todo ticket and count the attempt, unless a veto
        holds or someone else got it first (the update is conditional on the claim token)."""
        if not self.ask("dispatch", ticket):
            return None
        config = self.ctx.config
        if ticket.attempts >= MAX_ATTEMPTS:
            why = f"Started {ticket.attempts} times without finishing. Needs {config.owner_title} decision."
            self.ctx.controller.escalate(ticket, why)
            return None
        over = self.over_budget(ticket)
        if over:
            self.ctx.controller.escalate(ticket, f"{over}. Needs {config.owner_title} decision.")
            return None
        fields: dict[str, Any] = {
            "status": "in_progress",
            "claimed_by": self.ctx.me,
            "claim_token": ticket.claim_token + 1,
            "attempts": ticket.attempts + 1,
            "pending_feedback": None,
            "updated_at": time.time(),
        }
        if ticket.attempts == 0:
            fields["review_cycles"] = 0  # first move from todo to in_progress
        if not queries.take_todo(ticket, fields):
            return None
        feedback = ticket.pending_feedback
        for name, value in fields.items():
            setattr(ticket, name, value)
        profile = ticket.worker if ticket.worker in config.workers else "default"
        run = queries.new_run(
            ticket=ticket.id,
            attempt=ticket.attempts,
            profile=profile,
            session=prompts.session_id(self.ctx.db_id, ticket.key, profile),
            controller=self.ctx.me,
            token=ticket.claim_token,
            host=self.ctx.host,
            log_path=str(config.root / "logs" / ticket.key / f"{ticket.attempts}.log"),
            feedback=feedback,
            started_at=time.time(),
        )
        detail = f"attempt {run.attempt} started (worker {profile})" + (" with reviewer feedback" if feedback else "")
        self.ctx.controller.record(ticket, events.DISPATCH, detail, data={"attempt": run.attempt, "profile": profile})
        return ticket, run

    def over_budget(self, ticket: Ticket) -> str | None:
        """Why the ticket may not start another run (it has spent its budget), or None."""
        budget = self.ctx.controller.budget_of(ticket)
        if budget is None:
            return None
        spent = self.ctx.controller.spent_on(ticket)
        return f"Spent ${spent:.2f} of its ${budget:.2f} budget" if spent >= budget else None

    def start_worker(self, ticket: Ticket, run: WorkerRun) -> rt.Process | None:
        """Prepare the ticket's workspace and prompt and start the worker; a workspace that cannot be
        prepared or a command that cannot start is a dead worker."""
        try:
            past = launch.history(run, self.ctx.controller.budget_of(ticket))
            self.ctx.controller.refresh_mirror(ticket)
            plan = launch.worker(self.ctx.config, self.ctx.db_id, ticket, run, past, self.ctx.inherited)
            process = self.ctx.start("worker", run, plan)
        except OSError as exc:
            if exc.errno == errno.E2BIG:  # the ticket, not the worker: retrying cannot help
                why = "its prompt is too long to pass in argv; use {prompt_file} or an agent preset (stdin)"
                self.reports.record(run, outcomes.WorkerOutcome(unstartable=why))
            else:
                self.reports.record(run, outcomes.WorkerOutcome(death=Death.of(f"could not start: {exc}")))
            return None
        except worktrees.WorkspaceError as exc:
            self.reports.record(run, outcomes.WorkerOutcome(death=Death.of(f"could not prepare its worktree: {exc}")))
            return None
        process.token = run.token
        process.base_sha = plan.workspace.base_sha
        process.workspace = plan.workspace
        self.ctx.watcher.add(process)
        return process

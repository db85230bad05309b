"""Applying stored reports: each attempt's report takes effect exactly once, in one transaction that
marks it applied, and only while this controller's claim is the attempt's (fencing)."""

from __future__ import annotations

from collections.abc import Callable

from mission_control import faults
from mission_control.loop.context import Ask, LoopContext
from mission_control.store import queries
from mission_control.store.models import ShadowReview, Ticket, WorkerRun
from mission_control.store.transactions import write

# What an applied report does to its ticket (the loop's on_done_sentinel / death call site).
Decide = Callable[[Ticket, WorkerRun, "ShadowReview | None"], None]
Batch = list[tuple[WorkerRun, "ShadowReview | None"]]


class Applier:
    """Sorts this controller's stored reports into those ready to apply and those waiting for a
    review, and applies the ready ones."""

    def __init__(self, ctx: LoopContext, ask: Ask, decide: Decide) -> None:
        self.ctx = ctx
        self.ask = ask
        self.decide = decide

    def pending(self) -> tuple[Batch, list[WorkerRun]]:
        """Stored, unapplied reports of this controller's tickets: (ready to apply, each with the
        review of its sha; done runs still waiting for a review)."""
        reports = queries.unapplied_reports(self.ctx.me)
        if not reports:
            return [], []
        reviewing = self.ctx.config.reviewer.enabled
        done = {run.ticket_id for run in reports if run.outcome == "done"}
        reviews = queries.reviews_by_sha(done) if reviewing else {}
        ready: Batch = []
        waiting: list[WorkerRun] = []
        for run in reports:
            key = (run.ticket_id, run.done_sha or "")
            if run.outcome == "done" and reviewing and key not in reviews:
                waiting.append(run)
            else:
                ready.append((run, reviews.get(key)))
        return ready, waiting

    def apply(self, batch: Batch) -> bool:
        """Apply attempts' reports, each exactly once, in one transaction that also asks
        ``before_auto_action("harvest")`` for each. Returns whether any was applied."""
        if not batch:
            return False

        def effects() -> bool:
            applied_any = False
            for run, review in batch:
                ticket = run.ticket
                if not self.ask("harvest", ticket):
                    continue
                if not queries.mark_applied(run.id, ticket.id, self.ctx.me):
                    continue
                faults.crash_point("apply:before-effects")
                self.decide(ticket, run, review)
                applied_any = True
            faults.crash_point("apply:before-commit")
            return applied_any

        applied = write(effects)
        faults.crash_point("apply:after-commit")
        self.ctx.controller.deliver_effects()
        self.ctx.remove_done_worktrees([run.ticket for run, _ in batch if run.ticket.status == "done"])
        return applied

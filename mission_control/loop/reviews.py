"""Reviews: start the shadow reviewer for each reported sha, as slots allow and no veto holds. A
review started too often without finishing is recorded as uncertain instead of started again."""

from __future__ import annotations

from mc_hooks import events
from mission_control import faults, launch
from mission_control.loop.context import Ask, LoopContext
from mission_control.loop.reports import Reports
from mission_control.store import queries
from mission_control.store.models import WorkerRun
from mission_control.store.transactions import write

MAX_REVIEW_STARTS = 3  # a review started this often without finishing is recorded as uncertain


class Reviews:
    """Starts reviewers for done runs that wait for a verdict."""

    def __init__(self, ctx: LoopContext, ask: Ask, reports: Reports) -> None:
        self.ctx = ctx
        self.ask = ask
        self.reports = reports

    def start(self, runs: list[WorkerRun]) -> bool:
        """Start reviews of these runs' shas (one transaction gates them, then they start). True if any
        started or was settled as uncertain."""
        due = self.due(runs)
        if not due:
            return False
        allowed, settled = write(lambda: self.gate(due))
        return self.launch(allowed) or settled

    def gate_due(self, runs: list[WorkerRun]) -> list[WorkerRun]:
        """Inside a transaction (the one storing their reports): gate the reviews of ``runs`` that may start
        now, except where their sha already has a verdict (the next apply reuses it); the runs to
        :meth:`launch` once it commits."""
        judged = queries.reviews_by_sha({run.ticket_id for run in runs})
        unjudged = [run for run in runs if (run.ticket_id, run.done_sha or "") not in judged]
        return self.gate(self.due(unjudged))[0]

    def due(self, runs: list[WorkerRun]) -> list[WorkerRun]:
        """Those of ``runs`` whose review may start now: not under review already, as many as slots allow."""
        if not self.ctx.config.reviewer.stages:
            return []
        runs = [run for run in runs if ("review", run.id) not in self.ctx.watcher.processes]
        return runs[: max(0, self.ctx.free_slots())]

    def gate(self, runs: list[WorkerRun]) -> tuple[list[WorkerRun], bool]:
        """Inside a transaction: of ``runs``, those whose review starts (no veto holds; the start counted and
        recorded), and whether any was settled as uncertain instead (started too often without finishing)."""
        reviewer = self.ctx.config.reviewer
        allowed, settled = [], False
        for run in runs:
            if not self.ask("review", run.ticket):
                continue
            if run.review_starts >= MAX_REVIEW_STARTS:  # reviews that never finish must not loop
                reason = f"the review was started {run.review_starts} times and never finished"
                self.reports.store_verdict(run, run.ticket, "uncertain", [reason], [])
                settled = True
                continue
            queries.count_review_start(run)
            sha = (run.done_sha or "")[:12]
            detail, facts = f"reviewing {sha} (attempt {run.attempt})", {"attempt": run.attempt, "sha": run.done_sha}
            if reviewer.stage_label(run.review_stage):
                detail += f": {reviewer.stage_label(run.review_stage)}"
                facts["stage"] = reviewer.stage(run.review_stage).name
            self.ctx.controller.record(run.ticket, events.REVIEW, detail, data=facts)
            allowed.append(run)
        return allowed, settled

    def launch(self, runs: list[WorkerRun]) -> bool:
        """Once their gate has committed: start the reviewers of ``runs`` and note them. A reviewer that
        cannot start is an uncertain verdict. True if any started or was settled so."""
        started, settled = [], False
        for run in runs:
            ticket = run.ticket
            try:
                plan = launch.review(self.ctx.config, self.ctx.db_id, ticket, run, self.ctx.inherited)
                process = self.ctx.start("review", run, plan) if plan else None
            except OSError as exc:
                self.reports.store([], [(run, ticket, "uncertain", [f"the reviewer could not start: {exc}"], [], None)])
                settled = True
                continue
            if process is None:
                continue
            process.token = run.token
            self.ctx.watcher.add(process)
            started.append(process)
        self.ctx.note_started(started)  # before anything else: recovery trusts a reviewer's log only once noted
        if started:
            faults.crash_point("review:after-spawn")
        return bool(started) or settled

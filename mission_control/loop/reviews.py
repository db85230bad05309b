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
        """Start reviews of these runs' shas. True if any started or was settled as uncertain."""
        reviewer = self.ctx.config.reviewer
        runs = [run for run in runs if ("review", run.id) not in self.ctx.watcher.processes]
        if not reviewer.stages or not runs or self.ctx.free_slots() <= 0:
            return False
        runs = runs[: self.ctx.free_slots()]
        settled: list[WorkerRun] = []

        def gate() -> list[WorkerRun]:
            allowed, settled[:] = [], []
            for run in runs:
                if not self.ask("review", run.ticket):
                    continue
                if run.review_starts >= MAX_REVIEW_STARTS:  # reviews that never finish must not loop
                    reason = f"the review was started {run.review_starts} times and never finished"
                    self.reports.store_verdict(run, run.ticket, "uncertain", [reason], [])
                    settled.append(run)
                    continue
                queries.count_review_start(run)
                sha = (run.done_sha or "")[:12]
                detail, facts = (
                    f"reviewing {sha} (attempt {run.attempt})",
                    {"attempt": run.attempt, "sha": run.done_sha},
                )
                if reviewer.stage_label(run.review_stage):
                    detail += f": {reviewer.stage_label(run.review_stage)}"
                    facts["stage"] = reviewer.stage(run.review_stage).name
                self.ctx.controller.record(run.ticket, events.REVIEW, detail, data=facts)
                allowed.append(run)
            return allowed

        started = []
        for run in write(gate):
            ticket = run.ticket
            try:
                plan = launch.review(self.ctx.config, self.ctx.db_id, ticket, run, self.ctx.inherited)
                process = self.ctx.start("review", run, plan) if plan else None
            except OSError as exc:
                self.reports.store([], [(run, ticket, "uncertain", [f"the reviewer could not start: {exc}"], [], None)])
                settled.append(run)
                continue
            if process is None:
                continue
            process.token = run.token
            self.ctx.watcher.add(process)
            started.append(process)
        self.ctx.note_started(started)  # before anything else: recovery trusts a reviewer's log only once noted
        if started:
            faults.crash_point("review:after-spawn")
        return bool(started or settled)

"""Reports: what ended runs said (a DONE commit or a death; a reviewer's verdict), read outside any
transaction and stored in one, before anything acts on it. Storing is fenced: a report is kept only
under the claim its run was started with, and only once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mc_hooks import events
from mission_control import agents, faults, launch, outcomes, shadow_reviewer, worktrees
from mission_control import ticket_runtime as rt
from mission_control.controller import Death, short
from mission_control.loop.context import LoopContext
from mission_control.store import queries
from mission_control.store.models import Ticket, WorkerRun
from mission_control.store.transactions import write

# Asks the plugins whether a DONE claim holds (the loop's verify_done_claim call site): the problem, or None.
Verify = Callable[[Ticket, str, "str | None"], "str | None"]
# A reviewer's verdict on a run: (run, ticket, verdict, reasons, gaps, what its agent CLI reported).
Judged = tuple[WorkerRun, Ticket, str, list[str], list[str], "agents.AgentReport | None"]
# Runs in the transaction that stores exits, with the runs now waiting for a review: those whose review it gated.
Then = Callable[[list[WorkerRun]], list[WorkerRun]]


def own_share(run: WorkerRun, said: agents.AgentReport) -> dict[str, Any]:
    """The run's own cost and tokens. A CLI that reports a resumed session's running totals has
    counted the session's earlier runs too: their stored shares are taken off, so every dollar is
    counted once (and what a run killed before its report spent lands on the next run of the session)."""
    cost, inputs, outputs = said.cost_usd, said.input_tokens, said.output_tokens
    if said.session_totals and said.session and run.attempt > 1:  # a first run has no earlier share
        paid, paid_in, paid_out = queries.session_spend(run.ticket_id, said.session, run.attempt)
        cost = None if cost is None else round(max(0.0, cost - paid), 6)
        inputs = None if inputs is None else max(0, inputs - paid_in)
        outputs = None if outputs is None else max(0, outputs - paid_out)
    return {"cost_usd": cost, "input_tokens": inputs, "output_tokens": outputs}


class Reports:
    """Reads and stores what workers and reviewers reported."""

    def __init__(self, ctx: LoopContext, verify: Verify) -> None:
        self.ctx = ctx
        self.verify = verify

    def record_exits(self, processes: list[rt.Process], then: Then | None = None) -> list[WorkerRun]:
        """Processes ended: read what they reported and check DONE claims (outside any transaction),
        then store it all in one transaction. ``then`` runs in that transaction too, once everything is
        stored, with the runs that now wait for a review (the loop gates their reviews there); what it
        returns is returned. The output descriptors are released only once that committed, so a store
        that failed (a lost connection) can be retried."""
        runs = queries.runs_with_tickets([p.run_id for p in processes])
        reports: list[tuple[WorkerRun, outcomes.WorkerOutcome]] = []
        judged: list[Judged] = []
        interrupted: list[WorkerRun] = []
        reviewer = self.ctx.config.reviewer
        for process in processes:
            run = runs[process.run_id]
            run.token = process.token  # store under the token the process ran with
            if process.kind == "review" and process.for_shutdown:
                interrupted.append(run)  # no verdict: the next controller reviews the sha again
            elif process.kind == "review":
                stage = reviewer.stage(run.review_stage)
                verdict, said = outcomes.review(stage, process, stage.timeout)
                judged.append((run, run.ticket, *verdict, said))
            else:
                reports.append((run, self.worker_outcome(run, process)))
        waiting = self.store(reports, judged, interrupted, then)
        for process in processes:
            process.release()  # stored: the controller's descriptors of its output can go
        return waiting

    def worker_outcome(self, run: WorkerRun, process: rt.Process | None) -> outcomes.WorkerOutcome:
        """Read a finished worker run and check its DONE claim with the plugins, so a refused claim is
        a death and never costs a review."""
        ticket = run.ticket
        workspace = launch.workspace_of(self.ctx.config, ticket, run)
        confine = launch.confined_git(self.ctx.config, workspace)
        outcome = outcomes.worker(self.ctx.profile(run.profile), Path(run.log_path), workspace, process, confine)
        if outcome.sha is not None:
            problem = self.verify(ticket, outcome.sha, run.base_sha)
            if problem:
                outcome.refuse(str(problem), getattr(problem, "plugin", ""))
                outcome.tail = outcomes.tail_of(Path(run.log_path), process)
            else:  # idempotent, so done again when a crash makes the next controller read the run again
                outcome.unpublished = worktrees.publish(workspace, outcome.sha)
        return outcome

    def store(
        self,
        reports: list[tuple[WorkerRun, outcomes.WorkerOutcome]],
        judged: list[Judged],
        interrupted: Sequence[WorkerRun] = (),
        then: Then | None = None,
    ) -> list[WorkerRun]:
        """Store worker reports and review verdicts, and forget reviews stopped by a shutdown (one
        transaction, which ends with ``then``: see :meth:`record_exits`); then remove the reviewers'
        checkouts (outside the store, after commit)."""

        def store() -> list[WorkerRun]:
            waiting = [run for run, outcome in reports if self.store_report(run, run.ticket, outcome)]
            for run, ticket, verdict, reasons, gaps, said in judged:
                if verdict == "pass" and run.review_stage + 1 < len(self.ctx.config.reviewer.stages):
                    self.store_stage_pass(run, ticket, said)  # a cheap stage passed: the next one is due
                else:
                    self.store_verdict(run, ticket, verdict, reasons, gaps, said)
            for run in interrupted:
                queries.review_ended(run.id)
            gated = then(waiting) if then is not None and waiting else []
            faults.crash_point("report:before-commit")
            return gated

        gated = write(store)
        faults.crash_point("report:after-commit")
        for run in [*(run for run, *_ in judged), *interrupted]:
            ticket = run.ticket
            worktrees.remove_review_checkout(self.ctx.config.root, ticket.key)
        return gated

    def record(self, run: WorkerRun, outcome: outcomes.WorkerOutcome) -> None:
        """Store one worker's report (recovery and start failures; exits go through record_exits)."""
        if outcome.death is not None and not outcome.tail:
            outcome.tail = outcomes.tail_of(Path(run.log_path))
        write(lambda: self.store_report(run, queries.ticket_by_id(run.ticket_id), outcome))

    def store_stage_pass(self, run: WorkerRun, ticket: Ticket, said: agents.AgentReport | None) -> None:
        """Inside a transaction: a review stage before the last passed. The next stage is due (the
        loop starts it like any review), and what this one cost is kept for the final verdict. Once,
        and only under the run's claim (fencing)."""
        if queries.run_token(run.id) != run.token:
            return
        stages, stage = self.ctx.config.reviewer.stages, run.review_stage
        if not queries.advance_review_stage(run, stage, said.cost_usd if said else None):
            return
        sha = run.done_sha or ""
        done, following = stages[stage].name, stages[stage + 1].name
        detail = f"stage {stage + 1} of {len(stages)} ({done}) passed {sha[:12]}; next: {following}"
        facts = {"stage": stage + 1, "of": len(stages), "name": done, "sha": sha, "attempt": run.attempt}
        actor = shadow_reviewer.REVIEWER_NAME
        self.ctx.controller.record(ticket, events.REVIEW_STAGE, detail, kind="report", actor=actor, data=facts)

    def store_verdict(
        self,
        run: WorkerRun,
        ticket: Ticket,
        verdict: str,
        reasons: list[str],
        gaps: list[str],
        said: agents.AgentReport | None = None,
    ) -> None:
        """Inside a transaction: the shadow review of the run's sha, unless one is already stored or
        the attempt now belongs to another controller (fencing: its reviewer reports there)."""
        if not queries.end_review(run.id, run.token):
            return
        controller, sha = self.ctx.controller, run.done_sha or ""
        if controller.review_for(ticket, sha) is None:
            said = said or agents.AgentReport()
            earlier = run.review_spent_usd  # what the stages before this one cost
            cost = said.cost_usd if earlier is None else (said.cost_usd or 0.0) + earlier
            shadow_reviewer.store_verdict(
                ticket.id,
                sha,
                verdict,
                reasons,
                gaps,
                attempt=run.attempt,
                session=said.session,
                cost_usd=cost,
                input_tokens=said.input_tokens,
                output_tokens=said.output_tokens,
                turns=said.turns,
            )
            summary = short("; ".join(reasons) or "no reasons", 160)
            detail = f"{verdict} for {sha[:12]}: {summary}"
            facts = {"verdict": verdict, "sha": sha, "attempt": run.attempt}
            reviewer = self.ctx.config.reviewer
            if reviewer.stage_label(run.review_stage):
                facts["stage"] = reviewer.stage(run.review_stage).name
                detail += f" ({reviewer.stage_label(run.review_stage)})"
            actor = shadow_reviewer.REVIEWER_NAME
            controller.record(ticket, events.VERDICT, detail, kind="report", actor=actor, data=facts)

    def store_report(self, run: WorkerRun, ticket: Ticket, outcome: outcomes.WorkerOutcome) -> bool:
        """Inside a transaction: the report on its run (once), and the sha on a still-held ticket. True when
        that left the run waiting for a review (a DONE stored on a still-held ticket, with a reviewer)."""
        said = outcome.agent
        fields: dict[str, Any] = {
            "ended_at": time.time(),
            "agent_session": "" if said.session_lost else said.session,  # "": the next run starts afresh
            **own_share(run, said),
            "turns": said.turns,
        }
        sha, action, actor = outcome.sha, events.DONE, "worker"
        facts: dict[str, Any] = {"attempt": run.attempt}
        if outcome.requeue:
            self.store_requeue(run, ticket, outcome.requeue, fields)
            return False
        if outcome.unstartable:
            self.store_unstartable(run, ticket, outcome.unstartable, fields)
            return False
        if sha:
            fields.update(outcome="done", done_sha=sha, leftovers="\n".join(outcome.leftovers) or None)
            facts["sha"] = sha
            detail = f"attempt {run.attempt} reported DONE {sha[:12]}"
            if outcome.leftovers:
                detail += f" ({len(outcome.leftovers)} uncommitted change(s) left beside it)"
            if outcome.unpublished:
                detail += f"; {outcome.unpublished}"
                facts["unpublished"] = outcome.unpublished
        else:
            death = outcome.death or Death.of("ended without a result")
            fields.update(
                outcome="died",
                exit_code=death.exit_code,
                signal=death.signal,
                timed_out=death.timed_out,
                death_reason=death.reason,
                log_tail=outcome.tail,
            )
            detail = f"attempt {run.attempt} died: {death.reason}"
            action = events.DEATH
            facts["reason"] = death.reason
            if outcome.refused_by:
                action, actor, detail = (
                    events.REJECTED_DONE,
                    outcome.refused_by,
                    f"attempt {run.attempt}: {death.reason}",
                )
        if not queries.store_run_report(run.id, run.token, fields):
            return False  # already recorded, or the attempt now belongs to another controller (fencing)
        reviewing = bool(sha) and self.ctx.config.reviewer.enabled
        if sha:  # the sha goes on the ticket only while it is still this run's: the update is the fence
            fenced = queries.set_done_sha(ticket.id, run.token, sha, "in_review" if reviewing else ticket.status)
        else:
            fenced = queries.ticket_token(ticket.id) == run.token
        if not fenced:
            fields["applied_at"] = queries.consume_report(run.id)  # the ticket moved on without it
            detail += " (not applied: the ticket was changed meanwhile)"
            reviewing = False
        for name, value in fields.items():
            setattr(run, name, value)
        self.ctx.controller.record(ticket, action, detail, kind="report", actor=actor, data=facts)
        return reviewing

    def store_requeue(self, run: WorkerRun, ticket: Ticket, why: str, fields: dict[str, Any]) -> None:
        """Inside a transaction: a run its own controller stopped (a shutdown) is not a death. It is
        closed as ``stopped`` and, if the ticket is still this run's, the ticket goes back to todo with
        the feedback the run was given, for the next controller to start again."""
        fields.update(outcome="stopped", death_reason=why, applied_at=time.time())
        if not queries.store_run_report(run.id, run.token, fields):
            return
        if queries.ticket_token(ticket.id) == run.token:
            queries.requeue_unstarted(run, ticket, outcome="stopped", reason=why)
            detail = f"attempt {run.attempt} {why}; back to todo (not a death)"
            self.ctx.controller.record(ticket, events.REQUEUE, detail, kind="host", data={"attempt": run.attempt})

    def store_unstartable(self, run: WorkerRun, ticket: Ticket, why: str, fields: dict[str, Any]) -> None:
        """Inside a transaction: a run that can never start as configured is the ticket's problem, not
        a dead worker: closed as ``error``, and the ticket goes to its owner with the reason (no death
        is counted, so it neither retries nor feeds the circuit breaker)."""
        fields.update(outcome="error", death_reason=why, applied_at=time.time())
        if not queries.store_run_report(run.id, run.token, fields):
            return
        if queries.ticket_token(ticket.id) == run.token:
            controller = self.ctx.controller
            controller.escalate(ticket, f"Attempt {run.attempt} cannot start: {why}. Needs {controller.owner_title}.")

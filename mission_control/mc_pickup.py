"""The pickup loop (`mc run`): claims todo tickets, runs workers, harvests their reports, runs the
shadow reviewer, applies outcomes through the plugins, and recovers what a dead controller left.

The loop decides *when*; plugins decide *what*. Three rules keep it correct under faults:

* a report (DONE or death, a verdict) is stored before anything acts on it, whatever the vetoes;
* an effect is applied in one transaction that also marks the attempt's report applied, so it
  happens exactly once (keyed by ticket and attempt), even across crashes;
* a ticket is acted on only by the controller holding its claim, checked against the claim token
  (fencing), and attempts are counted when a worker is started.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import peewee as pw

from mc_hooks.config import Config, ConfigError, load_config
from mc_hooks.manager import PluginFailed, PluginHost, load_plugins
from mission_control import agents, faults, launch, outcomes, shadow_reviewer, worktrees
from mission_control import mc_orchestrator_flags as flags
from mission_control import ticket_runtime as rt
from mission_control.controller import Controller, Death, short
from mission_control.luci_operator import Operator
from mission_control.models import (
    ACTIVE,
    ShadowReview,
    Ticket,
    WorkerRun,
    database_id,
    db_time,
    drain_wakeups,
    is_postgres,
    listen_fd,
    update_row,
    write,
)
from mission_control.models import Controller as ControllerRow
from mission_control.narration import Narrator

MAX_ATTEMPTS = 50  # a backstop: no ticket is ever started more often than this
MAX_REVIEW_STARTS = 3  # a review started this often without finishing is recorded as uncertain
FENCE_INTERVAL = 0.5  # seconds between checks that this controller still holds its running tickets


class VetoLog:
    """Writes each veto to the audit trail once, not every tick, until the action goes ahead."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.seen: dict[tuple[str, int | None], str] = {}

    def held(self, action: str, ticket: Ticket | None, veto: str | None) -> bool:
        """True if ``veto`` holds the action (and log it the first time)."""
        key = (action, ticket.id if ticket is not None else None)
        if not veto:
            self.seen.pop(key, None)
            return False
        if self.seen.get(key) != veto:
            self.seen[key] = veto
            plugin = getattr(veto, "plugin", "") or "host"
            write(lambda: self.controller.record(ticket, "veto", f"{action} held: {veto}", kind="veto", actor=plugin))
        return True


class Pickup:
    """One controller process: the loop behind `mc run`."""

    def __init__(self, config: Config, until_idle: bool = False, quiet: bool = False) -> None:
        self.config = config
        self.until_idle = until_idle
        self.plugins: PluginHost = load_plugins(config)
        self.controller = Controller(config, hooks=self.plugins.hook)
        self.operator = Operator(self.controller, self.plugins.hook)
        self.vetoes = VetoLog(self.controller)
        self.watcher = rt.Watcher()
        self.host = os.environ.get("MC_HOST") or socket.gethostname()
        self.me: ControllerRow | None = None
        self.db_id = database_id()
        self.stopping = False
        self.stop_deadline: float | None = None
        self.bad_config_mtime = 0
        self.next_heartbeat = 0.0
        self.next_recovery = 0.0
        self.next_sweep = time.time() + config.operator.interval
        self.dirty = True  # something may have happened since the last pass
        self.next_poll = 0.0
        self.next_fence = 0.0
        self.narrator = Narrator()
        if not quiet:
            self.controller.on_record = lambda ticket, event: self.narrator.event(ticket and ticket.key, event)

    # -- lifecycle -----------------------------------------------------------------------------

    def register(self) -> None:
        now = db_time()
        self.me = write(
            lambda: ControllerRow.create(
                host=self.host,
                pid=os.getpid(),
                proc_start=rt.proc_start_time(os.getpid()),
                started_at=now,
                heartbeat_at=now,
            )
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        """Run until stopped (SIGINT/SIGTERM) or, with ``until_idle``, until nothing can happen.

        Returns 0, or 1 when an ``--until-idle`` run ends with a kill-switch that engaged during it
        (the circuit breaker tripped, say): nothing more happens until a person looks."""
        self.register()
        engaged_before = self.killswitch_engaged() is not None
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        old_wakeup = signal.set_wakeup_fd(self.watcher.wake_fd)
        try:
            wakeups = listen_fd()
            if wakeups is not None:
                self.watcher.watch_fd(wakeups)
            self.recover(force=True)
            self.sweep_worktrees()
            self.controller.flush_escalations(include_orphans=True)
            while True:
                if drain_wakeups():  # another process changed something: look now, not at the next poll
                    self.dirty = True
                self.housekeeping()
                if self.stopping and self.shutdown_step():
                    break
                progressed = self.step()
                idle = self.until_idle and not progressed and not self.watcher.processes
                if idle and not self.recover(force=True) and not self.step(force=True):
                    break
                timeout = 0.0 if self.dirty else max(0.0, self.next_poll - time.monotonic())
                self.narrator.flush()
                exited = self.watcher.wait(timeout)
                if exited:
                    self.record_exits(exited)
        finally:
            self.narrator.flush(wait=1.0)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        engaged = self.killswitch_engaged() if self.until_idle and not engaged_before else None
        if engaged is not None:
            why = f" by {engaged.get('who', '?')}: {engaged.get('reason') or 'no reason given'}"
            self.say(f"stopped with the kill-switch engaged{why}; `mc killswitch off` resumes")
            return 1
        return 0

    def killswitch_engaged(self) -> dict[str, Any] | None:
        """Who engaged the kill-switch, when and why (the cluster flag, or this root's file or
        environment), or None while it is released."""
        status = flags.cluster_killswitch() or flags.killswitch_status(self.config.root)
        return status if status.get("engaged", True) else None

    def housekeeping(self) -> None:
        now = time.time()
        self.watcher.enforce_deadlines(now)
        self.reload_config()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + max(0.5, self.config.lease_seconds / 3)
            self.heartbeat()
        if now >= self.next_recovery:
            self.recover()
        if now >= self.next_sweep and not self.stopping:
            self.next_sweep = now + self.config.operator.interval
            self.operator.sweep()

    def heartbeat(self) -> None:
        """Renew this controller's lease. If it expired and another controller recovered our tickets
        (we were paused or cut off), our writes are already refused by their tokens: say so, let go
        of what we lost, and carry on under a new registration."""
        me = self.me.id
        renewed = write(
            lambda: (
                ControllerRow.update(heartbeat_at=db_time())
                .where((ControllerRow.id == me) & ControllerRow.stopped_at.is_null())
                .execute()
            )
        )
        if renewed:
            return
        self.say("this controller's lease expired and its tickets were recovered elsewhere; re-registering")
        self.register()
        self.next_fence = 0.0
        self.fence()
        self.dirty = True

    def shutdown_step(self) -> bool:
        """Graceful stop: no new work; workers get ``grace_period``, then are stopped. True when done."""
        now = time.time()
        if self.stop_deadline is None:
            self.stop_deadline = now + self.config.grace_period
            print(
                f"mc: stopping; waiting up to {self.config.grace_period:g}s for "
                f"{len(self.watcher.processes)} running process(es)",
                file=sys.stderr,
            )
        if now >= self.stop_deadline:
            for process in list(self.watcher.processes.values()):
                if not process.stopped:
                    self.watcher.stop(process, "stopped by controller shutdown")
        return not self.watcher.processes

    def close(self) -> None:
        """Release what this controller holds, so another can take over at once."""
        if self.me is not None:
            me = self.me.id

            def release() -> None:
                Ticket.update(claimed_by=None).where(Ticket.claimed_by == me).execute()
                ControllerRow.update(stopped_at=time.time()).where(ControllerRow.id == me).execute()

            write(release)
        self.watcher.close()

    def reload_config(self) -> None:
        """Pick up edits to config.yaml; an invalid edit is reported once and the old config kept."""
        path = Path(self.config.file)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return
        if mtime in (self.config.mtime_ns, self.bad_config_mtime):
            return
        try:
            config = load_config(path)
            plugins = load_plugins(config)
        except ConfigError as exc:
            message = f"reload failed, kept the last good config: {exc}"
            self.bad_config_mtime = mtime
            print(f"mc: config reload failed, keeping the last good config: {exc}", file=sys.stderr)
            write(lambda: self.controller.record(None, "config", message, kind="error"))
            return
        self.config, self.plugins = config, plugins
        self.controller.config, self.controller.hooks = config, plugins.hook
        self.operator.hook = plugins.hook
        write(lambda: self.controller.record(None, "config", "reloaded config.yaml", kind="host"))

    # -- the tick ------------------------------------------------------------------------------

    def ask(self, action: str, ticket: Ticket | None) -> bool:
        """Ask the plugins whether an automatic action may go ahead (logging a veto once).

        Called inside the transaction that performs the action, so an action either commits before
        a veto (e.g. the kill-switch) appears, or not at all while it holds.
        """
        veto = self.plugins.hook.before_auto_action(action=action, ticket=ticket, controller=self.controller)
        return not self.vetoes.held(action, ticket, veto)

    def step(self, force: bool = False) -> bool:
        """Fence running work, apply reports, start reviews, dispatch. True if anything moved.

        Skipped (cheaply) unless something happened here since the last pass (``dirty``), or the
        poll interval is due (changes made by other processes), or ``force``.
        """
        now = time.monotonic()
        if not (force or self.dirty or now >= self.next_poll):
            return False
        self.dirty = False
        self.next_poll = now + self.config.poll_interval
        self.controller.refresh_cluster_killswitch()
        if now >= self.next_fence:
            self.next_fence = now + FENCE_INTERVAL
            self.fence()
        progressed = self.harvest()
        if not self.stopping:
            progressed = self.dispatch() or progressed
        return progressed

    def free_slots(self) -> int:
        return self.config.max_workers - len(self.watcher.processes)

    def fence(self) -> None:
        """Let go of processes whose ticket this controller no longer holds: stop the worker if the
        ticket moved on without it (changed by hand, or recovered as a dead worker elsewhere); only
        stop watching it if another controller adopted the very same run."""
        running = [p for p in self.watcher.processes.values() if not p.stopped]
        if not running:
            return
        holders = {
            row.id: (row.claimed_by, row.claim_token, row.key)
            for row in Ticket.select(Ticket.id, Ticket.claimed_by, Ticket.claim_token, Ticket.key).where(
                Ticket.id.in_({p.ticket_id for p in running})
            )
        }
        runs = {
            row.id: (row.controller, row.outcome)
            for row in WorkerRun.select(WorkerRun.id, WorkerRun.controller, WorkerRun.outcome).where(
                WorkerRun.id.in_({p.run_id for p in running})
            )
        }
        for process in running:
            claimed_by, token, key = holders.get(process.ticket_id, (None, None, "?"))
            if (claimed_by, token) == (self.me.id, process.token):
                continue
            owner, outcome = runs.get(process.run_id, (None, None))
            if owner not in (None, self.me.id) and outcome == "running" and process.kind == "worker":
                self.watcher.forget(process)
                self.say(f"{key}: attempt now watched by controller {owner}, which adopted it")
            else:
                self.watcher.stop(process, "stopped: the ticket is no longer this controller's")
                self.say(
                    f"{key}: lost the ticket (recovered elsewhere or changed by hand); stopping its {process.kind}"
                )

    def say(self, message: str) -> None:
        """A diagnostic line on stderr."""
        print(f"mc run[{self.me.id if self.me else '-'}]: {message}", file=sys.stderr)

    def harvest(self) -> bool:
        """Apply stored reports of this controller's tickets; start the reviews they wait for."""
        pending = list(
            WorkerRun.select(WorkerRun, Ticket)
            .join(Ticket)
            .where(
                (Ticket.claimed_by == self.me.id)
                & (WorkerRun.outcome != "running")
                & WorkerRun.applied_at.is_null()
                & (WorkerRun.token == Ticket.claim_token)
            )
            .order_by(WorkerRun.id)
        )
        if not pending:
            return False
        reviews: dict[tuple[int, str], ShadowReview] = {}
        if self.config.reviewer.enabled:
            for review in (
                ShadowReview.select()
                .where(ShadowReview.ticket.in_({run.ticket_id for run in pending if run.outcome == "done"}))
                .order_by(ShadowReview.id)
            ):
                reviews[(review.ticket_id, review.done_sha)] = review
        to_apply, to_review = [], []
        for run in pending:
            waiting = run.outcome == "done" and self.config.reviewer.enabled
            if waiting and (run.ticket_id, run.done_sha) not in reviews:
                to_review.append(run)
            else:
                to_apply.append((run, reviews.get((run.ticket_id, run.done_sha))))
        progressed = self.apply(to_apply) if to_apply else False
        return self.start_reviews(to_review) or progressed

    def start_reviews(self, runs: list[WorkerRun]) -> bool:
        """Start the shadow reviewer for reported shas, as slots allow and no veto holds."""
        reviewer = self.config.reviewer
        runs = [run for run in runs if ("review", run.id) not in self.watcher.processes]
        if (reviewer.command is None and reviewer.agent is None) or not runs or self.free_slots() <= 0:
            return False
        runs = runs[: self.free_slots()]

        def gate() -> list[WorkerRun]:
            allowed = []
            for run in runs:
                if not self.ask("review", run.ticket):
                    continue
                if run.review_starts >= MAX_REVIEW_STARTS:  # reviews that never finish must not loop
                    reason = f"the review was started {run.review_starts} times and never finished"
                    self.store_verdict(run, run.ticket, "uncertain", [reason], [])
                    continue
                update_row(WorkerRun, run.id, review_starts=run.review_starts + 1)
                sha = run.done_sha[:12]
                self.controller.record(run.ticket, "review", f"reviewing {sha} (attempt {run.attempt})")
                allowed.append(run)
            return allowed

        started = []
        for run in write(gate):
            ticket = run.ticket
            try:
                plan = launch.review(self.config, self.db_id, ticket, run)
                process = launch.start("review", run, plan) if plan else None
            except OSError as exc:
                reason = f"the reviewer could not start: {exc}"
                self.store_exits([], [(run, ticket, "uncertain", [reason], [], None)])
                continue
            if process is None:
                continue
            process.token = run.token
            self.watcher.add(process)
            started.append(process)
        if started:
            faults.crash_point("review:after-spawn")
        self.note_pids(started)
        return bool(started)

    def apply(self, batch: list[tuple[WorkerRun, ShadowReview | None]]) -> bool:
        """Apply attempts' reports to their tickets, each exactly once, in one transaction that also
        asks ``before_auto_action("harvest")`` for each. Returns whether any was applied."""
        me = self.me.id

        def effects() -> bool:
            applied_any = False
            for run, review in batch:
                ticket = run.ticket
                if not self.ask("harvest", ticket):
                    continue
                # Fenced and exactly once: only while this controller's claim is the run's, only once.
                claim = Ticket.select(Ticket.claim_token).where((Ticket.id == ticket.id) & (Ticket.claimed_by == me))
                applied = (
                    WorkerRun.update(applied_at=time.time())
                    .where((WorkerRun.id == run.id) & WorkerRun.applied_at.is_null() & (WorkerRun.token == claim))
                    .execute()
                )
                if not applied:
                    continue
                faults.crash_point("apply:before-effects")
                if run.outcome == "died":
                    self.apply_death(ticket, run)
                else:
                    self.apply_done(ticket, run, review)
                applied_any = True
            faults.crash_point("apply:before-commit")
            return applied_any

        applied = write(effects)
        faults.crash_point("apply:after-commit")
        self.controller.flush_escalations()
        self.remove_worktrees([run.ticket for run, _ in batch if run.ticket.status == "done"])
        return applied

    def remove_worktrees(self, done: list[Ticket]) -> None:
        """Remove done tickets' worktrees (their branches stay), unless ``keep_worktrees``. An effect
        outside the store: done after commit, and again by :meth:`sweep_worktrees` after a crash."""
        if self.config.keep_worktrees:
            return
        for ticket in done:
            if ticket.repo and worktrees.remove(self.config.root, ticket.key, ticket.repo):
                write(lambda t=ticket: update_row(Ticket, t.id, worktree=None))

    def sweep_worktrees(self) -> None:
        """At start: remove what a crash left behind, i.e. done tickets' worktrees and reviewers'
        checkouts that no running review uses."""
        base = self.config.root / "worktrees"
        try:
            names = [entry.name for entry in os.scandir(base) if entry.is_dir(follow_symlinks=False)]
        except OSError:
            return
        keys = {name.removesuffix(".review") for name in names}
        tickets = {t.key: t for t in Ticket.select().where(Ticket.key.in_(keys))} if keys else {}
        reviewing = {p.ticket_id for p in self.watcher.processes.values() if p.kind == "review"}
        for name in names:
            ticket = tickets.get(name.removesuffix(".review"))
            if ticket is None:
                continue
            if name.endswith(".review") and ticket.id not in reviewing:
                worktrees.remove_review_checkout(self.config.root, ticket.key, ticket.repo or ticket.worktree)
        self.remove_worktrees([t for t in tickets.values() if t.status == "done" and (base / t.key).exists()])

    def apply_death(self, ticket: Ticket, run: WorkerRun) -> None:
        self.controller.count_death(ticket)
        death = Death(run.exit_code, run.signal, run.timed_out, run.log_tail or "", run.death_reason or "died")
        try:
            handled = self.plugins.hook.on_worker_death(ticket=ticket, death=death, controller=self.controller)
        except PluginFailed as exc:
            self.park(ticket, exc)
            return
        if not handled:
            self.controller.set_status(ticket, "needs_input", f"worker died ({death.reason})")
            self.controller.comment(ticket, "Worker died unexpectedly.")

    def apply_done(self, ticket: Ticket, run: WorkerRun, review: ShadowReview | None) -> None:
        try:
            handled = self.plugins.hook.on_done_sentinel(
                ticket=ticket, done_sha=run.done_sha, review=review, controller=self.controller
            )
        except PluginFailed as exc:
            self.park(ticket, exc)
            return
        if not handled:
            self.controller.complete(ticket)

    def park(self, ticket: Ticket, failure: PluginFailed) -> None:
        """A plugin failed while deciding: never silently done; hand the ticket to the owner."""
        self.controller.escalate(ticket, f"{failure}. Needs {self.config.owner_title} decision.")

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self) -> bool:
        """Claim todo tickets for the free slots (one transaction for the batch) and start them."""
        free = self.free_slots()
        if free <= 0:
            return False
        todo = Ticket.select().where(Ticket.status == "todo").order_by(Ticket.id).limit(free)
        candidates = list(todo)  # a plain read first: an idle poll takes no lock
        if not candidates:
            return False

        def claim_batch() -> list[tuple[Ticket, WorkerRun]]:
            batch = candidates
            if is_postgres():
                # One round trip locks the batch; rows another controller is claiming are skipped, not waited for.
                batch = list(todo.for_update("FOR UPDATE SKIP LOCKED"))
            return [claimed for claimed in (self.claim(seen) for seen in batch) if claimed is not None]

        try:
            claimed = write(claim_batch)
        except pw.IntegrityError:
            claimed = []
        self.controller.flush_escalations()
        started = []
        for ticket, run in claimed:
            faults.crash_point("dispatch:after-claim")
            process = self.start_worker(ticket, run)
            if process is not None:
                started.append(process)
        if started:
            faults.crash_point("dispatch:after-spawn")
        self.note_pids(started)
        return bool(claimed)

    def claim(self, ticket: Ticket) -> tuple[Ticket, WorkerRun] | None:
        """Inside the dispatch transaction: take one todo ticket and count the attempt, unless a veto
        holds or someone else got it first (the update is conditional on the claim token)."""
        if not self.ask("dispatch", ticket):
            return None
        if ticket.attempts >= MAX_ATTEMPTS:
            self.controller.escalate(
                ticket, f"Started {ticket.attempts} times without finishing. Needs {self.config.owner_title} decision."
            )
            return None
        me = self.me.id
        fields: dict[str, Any] = {
            "status": "in_progress",
            "claimed_by": me,
            "claim_token": ticket.claim_token + 1,
            "attempts": ticket.attempts + 1,
            "pending_feedback": None,
            "updated_at": time.time(),
        }
        if ticket.attempts == 0:
            fields["review_cycles"] = 0  # first move from todo to in_progress
        taken = (
            Ticket.update(**fields)
            .where((Ticket.id == ticket.id) & (Ticket.status == "todo") & (Ticket.claim_token == ticket.claim_token))
            .execute()
        )
        if not taken:
            return None
        feedback = ticket.pending_feedback
        for name, value in fields.items():
            setattr(ticket, name, value)
        profile = ticket.worker if ticket.worker in self.config.workers else "default"
        run = WorkerRun.create(
            ticket=ticket.id,
            attempt=ticket.attempts,
            profile=profile,
            session=rt.session_id(self.db_id, ticket.key, profile),
            controller=me,
            token=ticket.claim_token,
            host=self.host,
            log_path=str(self.config.root / "logs" / ticket.key / f"{ticket.attempts}.log"),
            feedback=feedback,
            started_at=time.time(),
        )
        detail = f"attempt {run.attempt} started (worker {profile})" + (" with reviewer feedback" if feedback else "")
        self.controller.record(ticket, "dispatch", detail)
        return ticket, run

    def start_worker(self, ticket: Ticket, run: WorkerRun) -> rt.Process | None:
        """Prepare the ticket's workspace and prompt and start the worker; a workspace that cannot be
        prepared or a command that cannot start is a dead worker."""
        try:
            plan = launch.worker(self.config, self.db_id, ticket, run, launch.history(run))
            process = launch.start("worker", run, plan)
        except (OSError, worktrees.WorkspaceError) as exc:
            why = "could not prepare its worktree" if isinstance(exc, worktrees.WorkspaceError) else "could not start"
            self.record_report(run, outcomes.WorkerOutcome(death=(None, None, False, f"{why}: {exc}")))
            return None
        process.token = run.token
        process.base_sha = plan.workspace.base_sha
        process.workspace = plan.workspace
        self.watcher.add(process)
        return process

    def note_pids(self, processes: list[rt.Process]) -> None:
        """Record the pids of just-started processes (one transaction), for recovery after a crash,
        with where each worker works (its ticket's worktree and branch)."""
        if not processes:
            return

        def store() -> None:
            for p in processes:
                if p.kind == "worker":
                    place = p.workspace
                    update_row(
                        WorkerRun, p.run_id, pid=p.pid, proc_start=p.start, base_sha=p.base_sha, workdir=str(place.path)
                    )
                    if place.branch:
                        update_row(Ticket, p.ticket_id, worktree=str(place.path), branch=place.branch)
                    else:
                        update_row(Ticket, p.ticket_id, worktree=str(place.path))
                else:
                    update_row(WorkerRun, p.run_id, review_pid=p.pid, review_proc_start=p.start)

        write(store)

    # -- reports -------------------------------------------------------------------------------

    def record_exits(self, processes: list[rt.Process]) -> None:
        """Processes ended: read what they reported and check DONE claims (outside any transaction),
        then store it all in one transaction, before anything acts on it."""
        runs = {
            r.id: r
            for r in WorkerRun.select(WorkerRun, Ticket)
            .join(Ticket)
            .where(WorkerRun.id.in_([p.run_id for p in processes]))
        }
        reports, judged = [], []
        for process in processes:
            run = runs[process.run_id]
            run.token = process.token  # store under the token the process ran with
            if process.kind == "review":
                verdict, said = outcomes.review(
                    self.config.reviewer, process.stdout_path, process, self.config.reviewer.timeout
                )
                judged.append((run, run.ticket, *verdict, said))
            else:
                reports.append((run, self.worker_outcome(run, process)))
        self.store_exits(reports, judged)

    def worker_outcome(self, run: WorkerRun, process: rt.Process | None) -> outcomes.WorkerOutcome:
        """Read a finished worker run and check its DONE claim with the plugins (``verify_done_claim``),
        so a refused claim is a death and never costs a review."""
        profile = self.config.workers.get(run.profile, self.config.workers["default"])
        ticket = run.ticket
        workspace = launch.workspace_of(self.config, ticket, run)
        outcome = outcomes.worker(profile, Path(run.log_path), workspace, process)
        if outcome.sha is not None:
            problem = self.plugins.hook.verify_done_claim(
                ticket=ticket, done_sha=outcome.sha, base_sha=run.base_sha, controller=self.controller
            )
            if problem:
                outcome.refuse(str(problem), getattr(problem, "plugin", ""))
                outcome.tail = outcomes.tail_of(Path(run.log_path))
        return outcome

    def store_exits(self, reports: list[tuple[WorkerRun, outcomes.WorkerOutcome]], judged: list) -> None:
        """Store worker reports and review verdicts (one transaction); then remove the reviewers'
        checkouts (outside the store, after commit)."""

        def store() -> None:
            for run, outcome in reports:
                self.store_report(run, run.ticket, outcome)
            for run, ticket, verdict, reasons, gaps, said in judged:
                self.store_verdict(run, ticket, verdict, reasons, gaps, said)
            faults.crash_point("report:before-commit")

        write(store)
        faults.crash_point("report:after-commit")
        for run, ticket, *_ in judged:
            worktrees.remove_review_checkout(self.config.root, ticket.key, ticket.repo or run.workdir)
        self.dirty = True

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
        if WorkerRun.select(WorkerRun.token).where(WorkerRun.id == run.id).scalar() != run.token:
            return
        if self.controller.review_for(ticket, run.done_sha) is None:
            said = said or agents.AgentReport()
            shadow_reviewer.store_verdict(
                ticket.id,
                run.done_sha,
                verdict,
                reasons,
                gaps,
                attempt=run.attempt,
                session=said.session,
                cost_usd=said.cost_usd,
                input_tokens=said.input_tokens,
                output_tokens=said.output_tokens,
                turns=said.turns,
            )
            summary = short("; ".join(reasons) or "no reasons", 160)
            self.controller.record(
                ticket,
                "verdict",
                f"{verdict} for {run.done_sha[:12]}: {summary}",
                kind="report",
                actor=shadow_reviewer.REVIEWER_NAME,
            )
        update_row(WorkerRun, run.id, review_pid=None)
        self.dirty = True

    def record_report(self, run: WorkerRun, outcome: outcomes.WorkerOutcome) -> None:
        """Store one worker's report (recovery and start failures; exits go through record_exits)."""
        if outcome.death is not None and not outcome.tail:
            outcome.tail = outcomes.tail_of(Path(run.log_path))
        write(lambda: self.store_report(run, Ticket.get_by_id(run.ticket_id), outcome))
        self.dirty = True

    def store_report(self, run: WorkerRun, ticket: Ticket, outcome: outcomes.WorkerOutcome) -> None:
        """Inside a transaction: the report on its run (once), and the sha on a still-held ticket."""
        said = outcome.agent
        fields: dict[str, Any] = {
            "ended_at": time.time(),
            "agent_session": "" if said.session_lost else said.session,  # "": the next run starts afresh
            "cost_usd": said.cost_usd,
            "input_tokens": said.input_tokens,
            "output_tokens": said.output_tokens,
            "turns": said.turns,
        }
        sha, action, actor = outcome.sha, "done", "worker"
        if sha:
            fields.update(outcome="done", done_sha=sha, leftovers="\n".join(outcome.leftovers) or None)
            detail = f"attempt {run.attempt} reported DONE {sha[:12]}"
            if outcome.leftovers:
                detail += f" ({len(outcome.leftovers)} uncommitted change(s) left beside it)"
        else:
            exit_code, sig, timed_out, reason = outcome.death
            fields.update(
                outcome="died",
                exit_code=exit_code,
                signal=sig,
                timed_out=timed_out,
                death_reason=reason,
                log_tail=outcome.tail,
            )
            detail = f"attempt {run.attempt} died: {reason}"
            action = "death"
            if outcome.refused_by:
                action, actor, detail = "rejected_done", outcome.refused_by, f"attempt {run.attempt}: {reason}"
        fenced = Ticket.select(Ticket.claim_token).where(Ticket.id == ticket.id).scalar() == run.token
        if not fenced:
            fields["applied_at"] = time.time()  # consumed: the ticket moved on without it
            detail += " (not applied: the ticket was changed meanwhile)"
        stored = (
            WorkerRun.update(**fields)
            .where((WorkerRun.id == run.id) & (WorkerRun.outcome == "running") & (WorkerRun.token == run.token))
            .execute()
        )
        if not stored:  # already recorded, or the attempt now belongs to another controller (fencing)
            return
        for name, value in fields.items():
            setattr(run, name, value)
        if sha and fenced:
            status = "in_review" if self.config.reviewer.enabled else ticket.status
            update_row(Ticket, ticket.id, done_sha=sha, status=status, updated_at=time.time())
        self.controller.record(ticket, action, detail, kind="report", actor=actor)

    # -- recovery ------------------------------------------------------------------------------

    def dead_controllers(self) -> list[ControllerRow]:
        """Controllers that are gone: their lease expired (by the database's clock), or, on this
        host, their process is gone (found at once, no need to wait for the lease)."""
        expired = db_time() - self.config.lease_seconds
        dead = []
        for row in ControllerRow.select().where(ControllerRow.stopped_at.is_null() & (ControllerRow.id != self.me.id)):
            if row.heartbeat_at < expired or (row.host == self.host and not rt.pid_alive(row.pid, row.proc_start)):
                dead.append(row)
        return dead

    def recover(self, force: bool = False) -> bool:
        """Take over the tickets of controllers that are gone. True if anything was taken over."""
        self.next_recovery = time.time() + max(1.0, self.config.lease_seconds / 3)
        dead = {row.id: row for row in self.dead_controllers()}
        orphans = list(
            Ticket.select().where(
                Ticket.status.in_(ACTIVE) & (Ticket.claimed_by.is_null() | Ticket.claimed_by.in_(list(dead) or [0]))
            )
        )
        for ticket in orphans:
            self.take_over(ticket, dead)
        if dead:
            ids = list(dead)
            write(
                lambda: (
                    ControllerRow.update(stopped_at=time.time())
                    .where(ControllerRow.id.in_(ids) & ControllerRow.stopped_at.is_null())
                    .execute()
                )
            )
        if orphans or dead:
            self.controller.flush_escalations(include_orphans=True)
        return bool(orphans)

    def take_over(self, seen: Ticket, dead: dict[int, ControllerRow]) -> None:
        me = self.me.id
        run = WorkerRun.select().where(WorkerRun.ticket == seen.id).order_by(WorkerRun.attempt.desc()).first()

        def transfer() -> int | None:
            token = seen.claim_token + 1
            taken = (
                Ticket.update(claimed_by=me, claim_token=token)
                .where((Ticket.id == seen.id) & (Ticket.claim_token == seen.claim_token) & Ticket.status.in_(ACTIVE))
                .execute()
            )
            if not taken:
                return None
            if run is not None and run.token == seen.claim_token:
                WorkerRun.update(controller=me, token=token).where(WorkerRun.id == run.id).execute()
            self.controller.record(seen, "recover", "taken over from a controller that is gone", kind="host")
            return token

        token = write(transfer)
        if token is None:
            return
        self.dirty = True
        if run is None or run.token != seen.claim_token:
            return
        run.token = token
        if run.outcome == "done" and run.applied_at is None:
            self.recover_review(run, seen, token)
        if run.outcome != "running":
            return  # a stored report: the normal harvest applies it
        profile = self.config.workers.get(run.profile, self.config.workers["default"])
        pid = run.pid
        if pid is None and run.host == self.host:
            pid = rt.find_process_with_env("MC_RUN_ID", f"{self.db_id}:{run.id}")
        if run.host == self.host and pid and rt.pid_alive(pid, run.proc_start if run.pid else ""):
            start = run.proc_start or rt.proc_start_time(pid)
            deadline = run.started_at + profile.timeout
            self.adopt("worker", run, seen, pid, start, Path(run.log_path), deadline, token, profile.stall_timeout)
            return
        if run.host != self.host and run.pid:
            gone = (None, None, False, f"its controller on {run.host} is gone (lease expired)")
            self.record_report(run, outcomes.WorkerOutcome(death=gone))
            return
        if run.pid is None and not _has_output(run.log_path):
            self.requeue_unstarted(run, seen)
            return
        run.ticket = seen
        self.record_report(run, self.worker_outcome(run, None))

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
        self.watcher.add(adopted)
        what = f"attempt {run.attempt}" if kind == "worker" else f"the review of attempt {run.attempt}"
        write(lambda: self.controller.record(ticket, "recover", f"adopted {what} (pid {pid})", kind="host"))

    def recover_review(self, run: WorkerRun, ticket: Ticket, token: int) -> None:
        """A review left by a gone controller: adopt it if it still runs here, take its verdict from
        its log if it finished, or let it start again (counted, so it cannot loop)."""
        same_host = run.host == self.host
        pid = run.review_pid
        if pid is None and same_host:
            pid = rt.find_process_with_env("MC_REVIEW_ID", f"{self.db_id}:{run.id}")
        stdout = Path(run.log_path).with_name(f"{run.attempt}.review.log")
        start = run.review_proc_start if run.review_pid else ""
        if same_host and pid and rt.pid_alive(pid, start):
            reviewer = self.config.reviewer
            deadline = time.time() + reviewer.timeout
            start = start or rt.proc_start_time(pid)
            self.adopt("review", run, ticket, pid, start, stdout, deadline, token, reviewer.stall_timeout)
            return
        parsed, said = outcomes.read_review(self.config.reviewer, stdout)
        if parsed is not None:
            self.store_exits([], [(run, ticket, *parsed, said)])
        elif run.review_pid:
            write(lambda: update_row(WorkerRun, run.id, review_pid=None))

    def requeue_unstarted(self, run: WorkerRun, ticket: Ticket) -> None:
        """An attempt whose process never started (the controller died first): not a death."""

        def requeue() -> None:
            WorkerRun.update(
                outcome="died", death_reason="never started", ended_at=time.time(), applied_at=time.time()
            ).where(WorkerRun.id == run.id).execute()
            Ticket.update(status="todo", claimed_by=None, pending_feedback=run.feedback, updated_at=time.time()).where(
                Ticket.id == ticket.id
            ).execute()
            self.controller.record(ticket, "recover", f"attempt {run.attempt} never started; back to todo", kind="host")

        write(requeue)


def _has_output(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0 or os.path.getsize(Path(path).with_suffix(".err")) > 0
    except OSError:
        return False


def run_controller(config: Config, until_idle: bool = False, quiet: bool = False) -> int:
    """`mc run`: run the controller loop in this process; returns the exit status."""
    return Pickup(config, until_idle=until_idle, quiet=quiet).run()

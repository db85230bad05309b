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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mc_hooks import events
from mc_hooks.manager import PluginFailed, PluginHost, load_plugins
from mc_hooks.settings import ConfigError
from mission_control import mc_orchestrator_flags as flags
from mission_control import proctree
from mission_control import ticket_runtime as rt
from mission_control.config import Config, load_config
from mission_control.controller import Controller, Death
from mission_control.effects import EffectHooks
from mission_control.launch import Launch
from mission_control.launch import inherited_env as launch_env
from mission_control.loop.apply import Applier
from mission_control.loop.context import LoopContext
from mission_control.loop.dispatch import Dispatcher
from mission_control.loop.lease import Lease
from mission_control.loop.outage import LOST, Outage
from mission_control.loop.recovery import Recovery
from mission_control.loop.reports import Reports
from mission_control.loop.reviews import Reviews
from mission_control.luci_operator import Operator
from mission_control.narration import Narrator
from mission_control.store import queries
from mission_control.store.connection import connection_lost, database_id, drain_wakeups, store_gone
from mission_control.store.models import ShadowReview, Ticket, WorkerRun
from mission_control.store.transactions import write
from mission_control.sync import Sync

EFFECTS_DRAIN = 5.0  # seconds a stopping controller waits for the effect hooks to take what was committed
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
            detail, facts = f"{action} held: {veto}", {"action": action}
            write(lambda: self.controller.record(ticket, events.VETO, detail, kind="veto", actor=plugin, data=facts))
        return True


class Pickup:
    """One controller process: the loop behind `mc run`."""

    def __init__(
        self,
        config: Config,
        until_idle: bool = False,
        quiet: bool = False,
        watcher: rt.Watcher | None = None,
        start: Callable[[str, WorkerRun, Launch], rt.Process] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """A controller for ``config``. Tests inject ``watcher`` (waits for processes), ``start``
        (starts a planned run) and ``clock`` (the loop's schedule); by default the real ones."""
        self.until_idle = until_idle
        plugins = load_plugins(config)
        controller = Controller(config, hooks=plugins.hook)
        self.effects = self.effect_hooks(config, plugins)
        self.sync = Sync(config, plugins)
        controller.effects = self.committed
        host = os.environ.get("MC_HOST") or socket.gethostname()
        self.ctx = LoopContext(config, controller, watcher or rt.Watcher(), host, database_id())
        self.ctx.inherited = run_env(plugins, controller)
        self.ctx.start = start or self.ctx.start
        self.ctx.clock = clock or self.ctx.clock
        self.clock = self.ctx.clock
        self.operator = Operator(controller)
        self.vetoes = VetoLog(controller)
        self.lease = Lease(self.ctx)
        self.reports = Reports(self.ctx, verify=self.verify_done)
        self.dispatcher = Dispatcher(self.ctx, ask=self.ask, reports=self.reports)
        self.reviews = Reviews(self.ctx, ask=self.ask, reports=self.reports)
        self.applier = Applier(self.ctx, ask=self.ask, decide=self.decide)
        self.recovery = Recovery(self.ctx, self.lease, self.reports)
        self.outage = Outage(self.ctx, self.lease, self.recovery, stopping=lambda: self.stopping)
        self.unrecorded: list[rt.Process] = []  # exited, not yet stored (the store was unreachable)
        self.stopping = False
        self.started = False  # start_up() done
        self.fatal: str | None = None  # why this controller cannot go on (its store is gone)
        self.stop_deadline: float | None = None
        self.bad_config_mtime = 0
        self.next_heartbeat = 0.0
        self.next_recovery = 0.0
        self.next_sweep = self.clock() + config.operator.interval
        self.next_poll = 0.0
        self.next_fence = 0.0
        self.dirty = True  # something happened here since the last pass: look again at once
        self.narrator = Narrator()
        if not quiet:
            controller.on_record = lambda ticket, event: self.narrator.event(ticket.key if ticket else None, event)

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def controller(self) -> Controller:
        return self.ctx.controller

    @property
    def watcher(self) -> rt.Watcher:
        return self.ctx.watcher

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (SIGINT/SIGTERM) or, with ``until_idle``, until nothing can happen.

        Returns 0, or 1 when an ``--until-idle`` run ends with a kill-switch that engaged during it
        (the circuit breaker tripped, say): nothing more happens until a person looks."""
        proctree.become_subreaper()  # a run's detached helpers stay in this controller's tree (see cli_support)
        engaged_before = self.killswitch_engaged() is not None
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        old_wakeup = signal.set_wakeup_fd(self.watcher.wake_fd)
        try:
            while self.surviving(self.tick if self.started else self.start_up):
                pass
        finally:
            self.narrator.flush(wait=1.0)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        if self.fatal is not None:
            return 1
        if self.until_idle:
            self.tell_who_waits()
        engaged = self.killswitch_engaged() if self.until_idle and not engaged_before else None
        if engaged is not None:
            why = f" by {engaged.get('who', '?')}: {engaged.get('reason') or 'no reason given'}"
            self.ctx.say(f"stopped with the kill-switch engaged{why}; `mc killswitch off` resumes")
            return 1
        return 0

    def tell_who_waits(self) -> None:
        """At the end of an ``--until-idle`` run: the tickets that wait for a person, in one line."""
        waiting = queries.waiting_keys()
        if waiting:
            shown = ", ".join(waiting[:10]) + (f" and {len(waiting) - 10} more" if len(waiting) > 10 else "")
            self.ctx.say(
                f"{len(waiting)} ticket(s) wait for a person: {shown} (`mc ticket show KEY`, `mc ticket answer KEY`)"
            )

    def start_up(self) -> bool:
        """Register, listen for wake-ups, take over what gone controllers left, clean up after crashes
        (all again if the database connection is lost meanwhile)."""
        if not self.ctx.me:
            self.lease.register()
        self.outage.listen()
        self.recover()
        self.recovery.sweep_worktrees()
        if not self.effects.threads:
            self.effects.open()
            self.effects.start()
        if self.sync and self.sync.thread is None:
            self.sync.start(me=lambda: self.ctx.me)
        self.controller.deliver_effects()
        self.started = True
        return True

    def surviving(self, step: Callable[[], bool]) -> bool:
        """``step()``; if it lost the database connection, ride the outage out (False if it cannot)."""
        try:
            return step()
        except LOST as exc:
            if not connection_lost(exc):
                raise
            self.fatal = self.outage.ride_out(exc, self.unrecorded)
            self.dirty = True
            if self.fatal is not None:
                self.ctx.say(f"stopping: {self.fatal}")
            return self.fatal is None

    def tick(self) -> bool:
        """One pass: housekeeping, then a step, then wait for a process to exit (or a wake-up, or the
        next poll), store what ended and start the reviews of what reported DONE. False when the loop
        should end."""
        if drain_wakeups():  # another process changed something: look now, not at the next poll
            self.dirty = True
        self.housekeeping()
        if self.fatal is not None:
            self.ctx.say(f"stopping: {self.fatal}")
            return False
        if self.stopping and self.shutdown_step():
            return False
        progressed = self.step()
        idle = self.until_idle and not progressed and not self.watcher.processes
        if idle and not self.recover() and not self.step(force=True):
            return False
        timeout = 0.0 if self.dirty else max(0.0, self.next_poll - time.monotonic())
        self.narrator.flush()
        self.unrecorded += self.watcher.wait(timeout)
        if self.unrecorded:  # stored, and the reviews of new DONEs gated, in one transaction
            gated = self.reports.record_exits(self.unrecorded, then=self.reviews.gate_due)
            self.unrecorded = []
            self.reviews.launch(gated)
            self.dirty = True
        return True

    def housekeeping(self) -> None:
        """Deadlines, config reload, the lease, recovery and the operator's sweep, each when due."""
        now = self.clock()
        self.watcher.enforce_deadlines(now)
        self.reload_config()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + max(0.5, self.config.lease_seconds / 3)
            self.fatal = store_gone()
            if self.fatal is None and self.lease.renew():
                self.dirty = True
        if now >= self.next_recovery:
            self.recover()
        if now >= self.next_sweep and not self.stopping:
            self.next_sweep = now + self.config.operator.interval
            self.operator.sweep()

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
        self.stop_runs_if_asked()
        if now >= self.next_fence:
            self.next_fence = now + FENCE_INTERVAL
            self.lease.fence()
        ready, waiting = self.applier.pending()
        progressed = self.applier.apply(ready)
        progressed = self.reviews.start(waiting) or progressed
        if not self.stopping:
            progressed = self.dispatcher.dispatch() or progressed
        self.dirty = self.dirty or progressed
        return progressed

    def recover(self) -> bool:
        """Take over what gone controllers left. True if anything was taken over."""
        self.next_recovery = self.clock() + max(1.0, self.config.lease_seconds / 3)
        recovered = self.recovery.recover()
        self.dirty = self.dirty or recovered
        return recovered

    # -- the plugins' say (host patches: one keyword call each) --------------------------------

    def ask(self, action: str, ticket: Ticket | None) -> bool:
        """Ask the plugins whether an automatic action may go ahead (logging a veto once).

        Called inside the transaction that performs the action, so an action either commits before
        a veto (e.g. the kill-switch) appears, or not at all while it holds.
        """
        veto = self.controller.hooks.before_auto_action(action=action, ticket=ticket, controller=self.controller)
        return not self.vetoes.held(action, ticket, veto)

    def verify_done(self, ticket: Ticket, done_sha: str, base_sha: str | None) -> str | None:
        """Ask the plugins whether a DONE claim holds (outside any transaction): the problem, or None."""
        hooks = self.controller.hooks
        return hooks.verify_done_claim(ticket=ticket, done_sha=done_sha, base_sha=base_sha, controller=self.controller)

    def decide(self, ticket: Ticket, run: WorkerRun, review: ShadowReview | None) -> None:
        """Inside the apply transaction: what a report does to its ticket. A death goes down the one
        death path; a DONE goes to ``on_done_sentinel`` (default: complete)."""
        if run.outcome == "died":
            death = Death(run.exit_code, run.signal, run.timed_out, run.log_tail or "", run.death_reason or "died")
            self.controller.apply_death(ticket, death)
            return
        controller = self.controller
        try:
            handled = controller.hooks.on_done_sentinel(
                ticket=ticket, done_sha=run.done_sha, review=review, controller=controller
            )
        except PluginFailed as failure:  # never silently done: hand the ticket to the owner
            self.controller.escalate(ticket, f"{failure}. Needs {self.config.owner_title} decision.")
            return
        if not handled:
            self.controller.complete(ticket)

    # -- stopping and configuration ------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def shutdown_step(self) -> bool:
        """Graceful stop: no new work; workers get ``grace_period``, then are stopped. True when done."""
        now = self.clock()
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
                    process.for_shutdown = True
                    self.watcher.stop(process, "stopped by controller shutdown")
        return not self.watcher.processes

    def close(self) -> None:
        """Release what this controller holds, so another can take over at once (with no database,
        its lease simply expires)."""
        try:
            self.lease.release()
        except LOST as exc:
            if not connection_lost(exc):
                raise
        finally:
            self.watcher.close()
            # What was committed is handed to the effect hooks before the process ends, as far as they take
            # it in time; what is left is delivered by the next controller (their cursors say where).
            self.sync.stop()
            if self.effects.threads:
                self.effects.drain(EFFECTS_DRAIN)
            self.effects.stop()

    def committed(self) -> None:
        """Something this controller did was committed: the effect hooks and the sync pass look now."""
        self.effects.wake()
        self.sync.wake.set()

    def effect_hooks(self, config: Config, plugins: PluginHost) -> EffectHooks:
        """The effect hooks of ``plugins``, each delivered by a thread of its own with a facade of its own."""

        def facade() -> Controller:
            controller = Controller(config, hooks=plugins.hook)
            controller.effects = lambda: self.effects.wake()
            return controller

        return EffectHooks(config, plugins, facade)

    def stop_runs_if_asked(self) -> None:
        """A kill-switch engaged with ``--stop-runs`` stops the runs under way: back to todo, not deaths
        (as at a shutdown), to go on once it is released."""
        if not self.watcher.processes or not self.controller.killswitch_active():
            return
        engaged = self.killswitch_engaged()
        if not engaged or not engaged.get("stop_runs"):
            return
        for process in list(self.watcher.processes.values()):
            if not process.stopped:
                process.for_shutdown = True
                self.watcher.stop(process, "stopped by the kill-switch")

    def killswitch_engaged(self) -> dict[str, Any] | None:
        """Who engaged the kill-switch, when and why (the cluster flag, or this root's file or
        environment), or None while it is released."""
        status = flags.cluster_killswitch() or flags.killswitch_status(self.config.root)
        return status if status.get("engaged", True) else None

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
        self.ctx.config = self.controller.config = config
        self.controller.hooks = plugins.hook
        self.ctx.inherited = run_env(plugins, self.controller)
        self.effects.drain(EFFECTS_DRAIN)
        self.effects.stop()
        self.effects = self.effect_hooks(config, plugins)
        self.controller.effects = self.committed
        self.effects.open()
        self.effects.start()
        self.sync.stop()
        self.sync = Sync(config, plugins)
        if self.sync:
            self.sync.start(me=lambda: self.ctx.me)
        write(lambda: self.controller.record(None, "config", "reloaded config.yaml", kind="host"))


def run_env(plugins: PluginHost, controller: Controller) -> dict[str, str]:
    """What runs inherit from this controller's environment, without the plugins' secrets."""
    secrets = controller.hooks.secret_env(controller=controller) if controller.hooks else []
    return launch_env(name for names in secrets for name in names or ())


def run_controller(config: Config, until_idle: bool = False, quiet: bool = False) -> int:
    """`mc run`: run the controller loop in this process; returns the exit status."""
    return Pickup(config, until_idle=until_idle, quiet=quiet).run()

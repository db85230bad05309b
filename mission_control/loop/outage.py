"""Riding out a lost PostgreSQL connection (the server restarted, a proxy or an administrator killed
the connection): the controller keeps its processes running and their exits in hand, reopens the
connection with backoff, and settles whatever the interrupted pass left half-done from the store, the
way recovery settles a gone controller's tickets. It gives up, with one line, after ``RECONNECT_FOR``."""

from __future__ import annotations

import time
from collections.abc import Callable

import peewee as pw

from mission_control import ticket_runtime as rt
from mission_control.loop.context import LoopContext
from mission_control.loop.lease import Lease
from mission_control.loop.recovery import Recovery
from mission_control.store import database_problem
from mission_control.store.connection import connection_lost, listen_fd, reconnect

RECONNECT_FOR = 300.0  # seconds without a database before the controller stops (its runs are then recovered)
LOST = (pw.OperationalError, pw.InterfaceError)


class Outage:
    """Keeps the controller's connection (and its wake-up socket) and reopens it when it is lost."""

    def __init__(self, ctx: LoopContext, lease: Lease, recovery: Recovery, stopping: Callable[[], bool]) -> None:
        self.ctx = ctx
        self.lease = lease
        self.recovery = recovery
        self.stopping = stopping
        self.wakeups: int | None = None

    def listen(self) -> None:
        """Listen for other controllers' wake-ups on the current connection (PostgreSQL only)."""
        if self.wakeups is not None:
            self.ctx.watcher.unwatch_fd(self.wakeups)
        self.wakeups = listen_fd()
        if self.wakeups is not None:
            self.ctx.watcher.watch_fd(self.wakeups)

    def ride_out(self, exc: BaseException, unrecorded: list[rt.Process]) -> str | None:
        """The connection was lost (``exc``): reconnect and reconcile. Processes that exit meanwhile are
        added to ``unrecorded`` (the loop stores them next). Returns None when the controller can go on,
        or why it cannot (stopped meanwhile, or no database for ``RECONNECT_FOR`` seconds)."""
        self.ctx.say(f"lost the database connection ({database_problem(exc)}); runs go on, reconnecting")
        if self.wakeups is not None:
            self.ctx.watcher.unwatch_fd(self.wakeups)
            self.wakeups = None
        give_up = time.monotonic() + RECONNECT_FOR
        delay, last = 0.25, exc
        while not self.stopping():
            try:
                self.reconcile(unrecorded)
                self.ctx.say("database connection restored")
                return None
            except LOST as again:
                if not connection_lost(again) and not isinstance(again, pw.InterfaceError):
                    raise
                last = again
            if time.monotonic() >= give_up:
                return f"the database has been unreachable for {RECONNECT_FOR:g} s ({database_problem(last)})"
            self.ctx.watcher.enforce_deadlines(self.ctx.clock())
            unrecorded.extend(self.ctx.watcher.wait(delay))
            delay = min(delay * 2, 5.0)
        return f"stopped while the database was unreachable ({database_problem(last)})"

    def reconcile(self, unrecorded: list[rt.Process]) -> None:
        """On a new connection: listen again, renew the lease (re-registering and letting go of what was
        recovered elsewhere if it expired meanwhile), and settle this controller's own tickets that no
        process of its own stands for any more: an attempt claimed but never started goes back to todo,
        one that ended is read from its log, exactly as after a crash."""
        reconnect()
        self.listen()
        if self.ctx.me:
            self.lease.renew()
        else:  # lost while starting up, before it registered
            self.lease.register()
        watched = {p.ticket_id for p in self.ctx.watcher.processes.values()}
        watched |= {p.ticket_id for p in unrecorded}
        if self.recovery.reclaim_unwatched(watched):
            self.ctx.controller.deliver_effects()

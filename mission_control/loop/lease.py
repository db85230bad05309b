"""This controller's lease (register, renew, release) and fencing: it acts only on tickets it still
holds, and lets go of the processes of tickets it lost."""

from __future__ import annotations

import os

from mission_control import proctree
from mission_control.loop.context import LoopContext
from mission_control.store import queries
from mission_control.store.connection import db_time
from mission_control.store.models import ControllerProcess
from mission_control.store.transactions import write


class Lease:
    """Registers this controller and keeps its lease alive."""

    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx

    def register(self) -> None:
        """Take a new lease; its id is this controller's identity in the store."""
        pid = os.getpid()
        row = write(lambda: queries.register_controller(self.ctx.host, pid, proctree.proc_start_time(pid), db_time()))
        self.ctx.me = row.id

    def renew(self) -> bool:
        """Renew the lease. If it expired and another controller recovered our tickets (we were paused
        or cut off), our writes are already refused by their tokens: say so, let go of what we lost
        (fence), and carry on under a new registration. True when that happened."""
        if write(lambda: queries.renew_lease(self.ctx.me, db_time())):
            return False
        self.ctx.say("this controller's lease expired and its tickets were recovered elsewhere; re-registering")
        self.register()
        self.fence()
        return True

    def release(self) -> None:
        """Release what this controller holds, so another can take over at once."""
        if self.ctx.me:
            write(lambda: queries.release_controller(self.ctx.me))

    def fence(self) -> None:
        """Let go of processes whose ticket this controller no longer holds: stop the worker if the
        ticket moved on without it (changed by hand, or recovered as a dead worker elsewhere); only
        stop watching it if another controller adopted the very same run."""
        watcher = self.ctx.watcher
        running = [p for p in watcher.processes.values() if not p.stopped]
        if not running:
            return
        holders = queries.claim_holders({p.ticket_id for p in running})
        runs = queries.run_owners({p.run_id for p in running})
        for process in running:
            claimed_by, token, key = holders.get(process.ticket_id, (None, None, "?"))
            if (claimed_by, token) == (self.ctx.me, process.token):
                continue
            owner, outcome = runs.get(process.run_id, (None, None))
            if owner not in (None, self.ctx.me) and outcome == "running" and process.kind == "worker":
                watcher.forget(process)
                self.ctx.say(f"{key}: attempt now watched by controller {owner}, which adopted it")
            else:
                watcher.stop(process, "stopped: the ticket is no longer this controller's")
                self.ctx.say(
                    f"{key}: lost the ticket (recovered elsewhere or changed by hand); stopping its {process.kind}"
                )

    def dead_controllers(self) -> list[ControllerProcess]:
        """Controllers that are gone: their lease expired (by the database's clock), or, on this
        host, their process is gone (found at once, no need to wait for the lease)."""
        expired = db_time() - self.ctx.config.lease_seconds
        here = self.ctx.host
        return [
            row
            for row in queries.live_controllers(excluding=self.ctx.me)
            if row.heartbeat_at < expired or (row.host == here and not proctree.pid_alive(row.pid, row.proc_start))
        ]

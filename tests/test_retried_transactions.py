"""Transaction bodies are safe to re-run: a body retried after a deadlock or a busy store (``write``
runs it again from the start) leaves the same result as one run."""

from __future__ import annotations

import peewee

from mission_control.mc_pickup import Pickup
from mission_control.store.models import WorkerRun
from mission_control.store.transactions import write


def test_a_death_applied_in_a_retried_transaction_is_counted_once(mc_config, mc_controller, make_ticket) -> None:
    pickup = Pickup(mc_config, quiet=True)
    ticket = make_ticket(status="in_progress", death_count=0)
    run = WorkerRun.create(ticket=ticket.id, attempt=1, profile="default", session="s", outcome="died")
    tries = []

    def apply() -> None:
        pickup.decide(ticket, run, None)
        tries.append(ticket.death_count)
        if len(tries) == 1:
            raise peewee.OperationalError("database is locked")  # as a PostgreSQL deadlock retry would

    write(apply)

    stored = mc_controller.refresh(ticket)
    assert len(tries) == 2 and stored.death_count == 1  # one death: retried, not "died twice"
    assert stored.status == "todo"  # dead_worker_retry's first retry, not an escalation

"""The queries of the sync pass (``mission_control.sync``): tickets by their tracker item, the done work
still to hand back, and the deliveries whose news are still worth reading."""

from __future__ import annotations

import json
import time
from typing import Any

import peewee as pw

from mission_control.store.models import Delivery, Ticket
from mission_control.store.transactions import update_row

ENDED = ("merged", "closed")


def tickets_by_source(sources: list[str]) -> dict[str, Ticket]:
    """The tickets made from these tracker items, by item."""
    if not sources:
        return {}
    return {t.source: t for t in Ticket.select().where(Ticket.source.in_(sources))}


def to_deliver() -> list[Ticket]:
    """Done tickets from a tracker whose done commit was not handed back yet (never delivered, or a
    new commit since), unless their delivery has ended (merged or closed)."""
    undelivered = Delivery.id.is_null() | (Delivery.state.not_in(ENDED) & (Delivery.sha != Ticket.done_sha))
    return list(
        Ticket.select(Ticket)
        .join(Delivery, pw.JOIN.LEFT_OUTER, on=(Delivery.ticket == Ticket.id))
        .where(Ticket.source.is_null(False) & (Ticket.status == "done") & Ticket.done_sha.is_null(False) & undelivered)
        .order_by(Ticket.id)
    )


def deliveries_to_read() -> list[tuple[Ticket, Delivery | None]]:
    """Tickets from a tracker whose news matter: those with an open delivery, and those waiting for a
    person (an answer may come from the tracker)."""
    open_ones = {d.ticket_id: d for d in Delivery.select().where(Delivery.state == "open")}
    waiting = Ticket.select().where(Ticket.source.is_null(False) & (Ticket.status == "needs_input"))
    tickets = {t.id: t for t in waiting}
    if open_ones:
        tickets.update({t.id: t for t in Ticket.select().where(Ticket.id.in_(list(open_ones)))})
    return [(tickets[i], open_ones.get(i)) for i in sorted(tickets)]


def delivery_of(ticket_id: int) -> Delivery | None:
    """The ticket's delivery, if its work was handed back."""
    return Delivery.get_or_none(Delivery.ticket == ticket_id)


def save_delivery(ticket_id: int, plugin: str, url: str, ref: str, sha: str) -> None:
    """Record that ``sha`` was handed back (a new delivery, or a new commit to the same one)."""
    now = time.time()
    found = delivery_of(ticket_id)
    if found is None:
        Delivery.create(ticket=ticket_id, plugin=plugin, url=url, ref=ref, sha=sha, created_at=now, updated_at=now)
    else:
        update_row(Delivery, found.id, plugin=plugin, url=url, ref=ref, sha=sha, state="open", updated_at=now)


def mark_seen(ticket_id: int, plugin: str, ids: list[str]) -> None:
    """Remember that these tracker ids (feedback, answers) were acted on; a ticket not delivered yet
    gets a ``pending`` row to hold them."""
    found = delivery_of(ticket_id)
    if found is None:
        now = time.time()
        seen = json.dumps(sorted(set(ids)))
        Delivery.create(
            ticket=ticket_id, plugin=plugin, sha="", state="pending", seen_json=seen, created_at=now, updated_at=now
        )
    else:
        update_delivery(found, seen=[*found.seen, *ids])


def update_delivery(delivery: Delivery, **fields: Any) -> None:
    """Change a delivery's ``state`` or ``seen`` ids (a list)."""
    if "seen" in fields:
        fields["seen_json"] = json.dumps(sorted(set(fields.pop("seen"))))
    update_row(Delivery, delivery.id, updated_at=time.time(), **fields)

"""The facade's reads and writes of the record around tickets: shadow reviews, the audit trail and
escalations."""

from __future__ import annotations

import json
import time
from typing import Any

from peewee import fn

from mission_control.store import deferred, prepared
from mission_control.store.models import Escalation, Event, ShadowReview
from mission_control.store.prepared import columns, load


def review_for(ticket_id: int, sha: str) -> ShadowReview | None:
    """The latest shadow review of ``sha`` for the ticket, or None."""

    def build(p: Any) -> Any:
        query = ShadowReview.select(*columns(ShadowReview))
        query = query.where((ShadowReview.ticket == p.ticket) & (ShadowReview.done_sha == p.sha))
        return query.order_by(ShadowReview.id.desc()).limit(1)

    found = prepared.rows("review_for", build, ticket=ticket_id, sha=sha)
    return load(ShadowReview, found[0]) if found else None


def reviews(ticket_id: int) -> list[ShadowReview]:
    """The ticket's shadow reviews, oldest first."""
    return list(ShadowReview.select().where(ShadowReview.ticket == ticket_id).order_by(ShadowReview.id))


def latest_review(ticket_id: int) -> ShadowReview | None:
    """The ticket's most recent shadow review, whatever its sha."""
    return ShadowReview.select().where(ShadowReview.ticket == ticket_id).order_by(ShadowReview.id.desc()).first()


def events_since(since: float, actions: tuple[str, ...]) -> list[Event]:
    """Audit events with one of ``actions`` recorded at or after ``since``, across all tickets (those
    recorded in the open transaction included)."""
    deferred.flush()
    return list(Event.select().where((Event.created_at >= since) & Event.action.in_(actions)).order_by(Event.id))


def last_event_at(action: str) -> float | None:
    """When the latest event with ``action`` was recorded, or None."""
    deferred.flush()
    return Event.select(fn.MAX(Event.created_at)).where(Event.action == action).scalar()


def escalations(ticket_id: int) -> list[Escalation]:
    """The ticket's escalations, oldest first."""
    return list(Escalation.select().where(Escalation.ticket == ticket_id).order_by(Escalation.id))


def new_escalation(ticket_id: int, owner: str, reason: str, actor: str) -> int:
    """Record an escalation (handed to ``on_escalate`` once committed: see ``effects``); returns its id."""
    return Escalation.create(ticket=ticket_id, owner=owner, reason=reason, actor=actor, created_at=time.time()).id


def new_review(
    ticket_id: int, sha: str, verdict: str, reasons: list[str], gaps: list[str], reviewer: str, **stats: Any
) -> ShadowReview:
    """Store a shadow review of ``sha``; ``stats``: the reviewer run's ``attempt``, ``session``,
    ``cost_usd``, ``input_tokens``, ``output_tokens``, ``turns``."""
    return prepared.insert(
        ShadowReview,
        ticket=ticket_id,
        done_sha=sha,
        verdict=verdict,
        reasons_json=json.dumps(reasons),
        gaps_json=json.dumps(gaps),
        reviewer=reviewer,
        created_at=time.time(),
        **stats,
    )

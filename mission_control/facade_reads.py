"""What the controller facade lets plugins (and people) read about tickets: one named read each, no
writes. :class:`~mission_control.controller.Controller` inherits these."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mc_hooks import events
from mission_control.store import audit, health, queries, views
from mission_control.store.models import ACTIVE, Escalation, Event, ShadowReview, Ticket, WorkerRun

if TYPE_CHECKING:
    from mission_control.config import Config


class TicketReads:
    """Reads of tickets, runs, reviews, the audit trail and escalations."""

    config: Config

    def ticket(self, key: str) -> Ticket | None:
        """The ticket with ``key`` (case-insensitive), or None."""
        return views.ticket_by_key(key)

    def refresh(self, ticket: Ticket) -> Ticket:
        """The ticket as the database has it now."""
        return queries.ticket_by_id(ticket.id)

    def review_for(self, ticket: Ticket, sha: str | None) -> ShadowReview | None:
        """The latest shadow review of ``sha`` for the ticket, or None."""
        return audit.review_for(ticket.id, sha) if sha else None

    def latest_review(self, ticket: Ticket) -> ShadowReview | None:
        """The ticket's most recent shadow review, whatever its sha."""
        return audit.latest_review(ticket.id)

    def reviews(self, ticket: Ticket) -> list[ShadowReview]:
        """All shadow reviews of the ticket, oldest first."""
        return audit.reviews(ticket.id)

    def runtime_alive(self, ticket: Ticket) -> bool:
        """Whether a worker process for the ticket is still running."""
        return queries.has_running_worker(ticket.id)

    def events_since(self, since: float, actions: tuple[str, ...]) -> list[Event]:
        """Audit events with one of ``actions`` recorded at or after ``since``, across all tickets."""
        return audit.events_since(since, actions)

    def killswitch_changed_at(self) -> float | None:
        """When the kill-switch was last engaged or released (from the audit trail), or None."""
        return audit.last_event_at(events.KILLSWITCH)

    def spent_on(self, ticket: Ticket) -> float:
        """What the ticket's runs (workers and reviews) cost so far, in US dollars."""
        return queries.ticket_spend(ticket.id)

    def budget_of(self, ticket: Ticket) -> float | None:
        """The ticket's spend budget in US dollars: its own, else its worker profile's, else None."""
        return self.config.budget_of(ticket.max_cost_usd, ticket.worker)

    def spend_since(self, since: float) -> float:
        """What all runs that ended at or after ``since`` cost, in US dollars."""
        return health.spend_since(since)[0]

    def ticket_key(self, ticket_id: int | None) -> str:
        """The key of the ticket with this id ('?' if there is none)."""
        return queries.ticket_key(ticket_id) or "?"

    def escalations(self, ticket: Ticket) -> list[Escalation]:
        """The ticket's escalations, oldest first."""
        return audit.escalations(ticket.id)

    def current_run(self, ticket: Ticket) -> WorkerRun | None:
        """The ticket's latest worker run (attempt), or None."""
        return queries.latest_run(ticket.id)

    def active(self, ticket: Ticket) -> bool:
        """Whether the ticket has work in flight (a worker or a review)."""
        return ticket.status in ACTIVE

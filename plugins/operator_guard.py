"""Operator guard (MC-4304 part A): the operator may not reopen a ticket the review loop has
already judged. It keeps recording health either way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mc_hooks import hookimpl

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.controller import Controller
    from mission_control.store.models import Ticket


class OperatorGuard:
    """``before_operator_reopen``: veto when the current done_sha passed review or the ticket
    went through the review loop."""

    def __init__(self, settings: Section) -> None:
        pass

    @hookimpl
    def before_operator_reopen(self, ticket: Ticket, reason: str, controller: Controller) -> str | None:
        sha = ticket.done_sha
        if sha and any(r.verdict == "pass" and r.done_sha == sha for r in controller.reviews(ticket)):
            return f"kept done, shadow review passed {sha[:12]}"
        if ticket.review_cycles >= 1:
            return f"kept done, the review loop already judged it ({ticket.review_cycles} review cycles)"
        return None

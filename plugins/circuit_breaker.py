"""Circuit breaker: when workers die or reviews fail in a storm, or runs spend more than a budget,
across all tickets, engage the kill-switch by itself and tell the owner, so a broken agent CLI, an
expired API key, a bad reviewer or a retry storm of expensive runs cannot burn a night of paid runs.
Only a person (`mc killswitch off`) releases it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mc_hooks import events, hookimpl

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.controller import Controller
    from mission_control.store.models import Event, Ticket


def _is_fail(event: Event) -> bool:
    return event.action == events.VERDICT and event.data.get("verdict") == "fail"


class CircuitBreaker:
    """``before_auto_action``: before a run starts (a dispatch or a review), count the deaths, review
    fails and spend in the window from the store; at a limit, engage the kill-switch, tell the owner and
    hold the run. A decision, taken inside the transaction that would start the run, so no paid run
    starts past a limit however fast the storm."""

    ACTIONS = ("dispatch", "review")

    def __init__(self, settings: Section) -> None:
        self.max_deaths: int = settings.integer("max_deaths", 5, minimum=1)
        self.max_review_fails: int = settings.integer("max_review_fails", 8, minimum=1)
        self.window: float = settings.number("window_seconds", 600)
        has_budget = settings.data.get("max_cost_usd") is not None
        self.max_cost: float | None = settings.number("max_cost_usd", 1.0, unit="US dollars") if has_budget else None
        settings.accept("max_cost_usd")

    @hookimpl
    def before_auto_action(self, action: str, ticket: Ticket | None, controller: Controller) -> str | None:
        if action not in self.ACTIONS or controller.killswitch_active():
            return None
        # Count from the store, since the window began or a person last flipped the kill-switch
        # (whichever is later), so a release starts from zero and a restart forgets nothing.
        since = max(time.time() - self.window, controller.killswitch_changed_at() or 0.0)
        recent = controller.events_since(since, (*events.DEATHS, events.VERDICT))
        deaths = [e for e in recent if e.action in events.DEATHS]
        fails = [e for e in recent if _is_fail(e)]
        if len(deaths) >= self.max_deaths:
            tripped, what = deaths, f"{len(deaths)} worker deaths"
        elif len(fails) >= self.max_review_fails:
            tripped, what = fails, f"{len(fails)} review fails"
        elif self.max_cost is not None and (spent := controller.spend_since(since)) >= self.max_cost:
            reports = controller.events_since(since, (*events.DEATHS, events.DONE, events.VERDICT))
            tripped, what = reports, f"${spent:.2f} spent (limit ${self.max_cost:.2f})"
        else:
            return None
        ids = [e.ticket_id for e in tripped if e.ticket_id is not None]
        keys = sorted({controller.ticket_key(i) for i in ids}, key=lambda key: (len(key), key))
        minutes = f"{self.window / 60:g} minutes"
        reason = f"circuit breaker: {what} within {minutes} (tickets {', '.join(keys)})"
        controller.engage_killswitch(reason)
        last = controller.ticket(controller.ticket_key(ids[-1])) if ids else ticket
        if last is not None:
            controller.notify_owner(
                last,
                f"The circuit breaker engaged the kill-switch: {what} within {minutes} across {', '.join(keys)}. "
                f"Nothing automatic runs until `mc killswitch off`. Needs {controller.owner_title} to look.",
            )
        return reason

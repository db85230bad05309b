"""Dead-worker retry (MC-4304 part B): a worker that dies is retried silently until the ticket
has died ``max_deaths`` times; then it goes to the owner. A standing QA fail keeps its feedback."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mc_hooks import hookimpl

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.controller import Controller, Death
    from mission_control.store.models import Ticket

TIMES = {1: "once", 2: "twice"}


class DeadWorkerRetry:
    """``on_worker_death``: redispatch until ``max_deaths``, then escalate."""

    def __init__(self, settings: Section) -> None:
        self.max_deaths: int = settings.integer("max_deaths", 2, minimum=1)

    @hookimpl
    def on_worker_death(self, ticket: Ticket, death: Death, controller: Controller) -> bool | None:
        deaths = ticket.death_count  # already counts this death
        if deaths >= self.max_deaths:
            times = TIMES.get(deaths, f"{deaths} times")
            controller.record(ticket, "retry_limit", f"death {deaths}/{self.max_deaths} ({death.reason}), escalating")
            controller.escalate(ticket, f"Worker died {times}. Needs {controller.owner_title} to review.")
            return True
        # A QA fail not yet superseded by a newer DONE takes precedence: the retry carries its
        # feedback, exactly as the review loop sent it (its review cycle was already counted).
        review = controller.review_for(ticket, ticket.done_sha)
        if review is not None and review.verdict == "fail":
            feedback = {"sha": review.done_sha, "reasons": review.reasons, "gaps": review.gaps}
            controller.redispatch(
                ticket,
                feedback,
                why=f"worker died ({death.reason}); retry {deaths}/"
                f"{self.max_deaths - 1} with the QA fail feedback for {review.done_sha[:12]}",
            )
        else:
            controller.redispatch(ticket, why=f"worker died ({death.reason}); retry {deaths}/{self.max_deaths - 1}")
        return True

"""Review loop (MC-4302): a failed shadow review sends the work back to its worker with the
reviewer's feedback, up to ``max_review_cycles``; an uncertain review goes to the owner."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mc_hooks import hookimpl

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.controller import Controller
    from mission_control.store.models import ShadowReview, Ticket


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items) or "- (none given)"


def feedback_comment(review: ShadowReview) -> str:
    """The comment that carries a failed review's reasons and gaps to the ticket."""
    return (
        f"Shadow review failed {review.done_sha[:12]}.\n\nReasons:\n{_bullets(review.reasons)}"
        f"\n\nGaps:\n{_bullets(review.gaps)}"
    )


def normalise(gap: str) -> str:
    """A gap's text for comparison: case, whitespace, punctuation and numbers do not count."""
    return " ".join(re.sub(r"[\W\d_]+", " ", gap.lower()).split())


def repeated_gap(review: ShadowReview, earlier: list[ShadowReview]) -> str | None:
    """A gap of ``review`` that an earlier failed review of the same ticket already named, or None."""
    seen = {normalise(gap) for older in earlier for gap in older.gaps} - {""}
    return next((gap for gap in review.gaps if normalise(gap) in seen), None)


def feedback_of(review: ShadowReview) -> dict[str, Any]:
    """What a redispatch appends to the worker's prompt."""
    return {"sha": review.done_sha, "reasons": review.reasons, "gaps": review.gaps}


class ReviewLoop:
    """``on_done_sentinel``: pass -> host default (done); fail -> back to the worker or, at the
    limit, to the owner; uncertain -> to the owner; no review -> host default."""

    def __init__(self, settings: Section) -> None:
        self.max_review_cycles: int = settings.integer("max_review_cycles", 3, minimum=1)
        self.escalate_on_repeat: bool = settings.flag("escalate_on_repeat", True)

    @hookimpl
    def on_done_sentinel(
        self, ticket: Ticket, done_sha: str, review: ShadowReview | None, controller: Controller
    ) -> bool | None:
        if review is None or review.verdict == "pass":
            return None
        if review.verdict == "uncertain":
            reasons = "; ".join(review.reasons) or "no reasons given"
            controller.escalate(
                ticket,
                f"Reviewer is uncertain about {done_sha[:12]}: {reasons}. Needs {controller.owner_title} decision.",
            )
            return True
        controller.comment(ticket, feedback_comment(review))
        cycles = controller.count_review_cycle(ticket)
        if self.escalate_on_repeat:
            earlier = [r for r in controller.reviews(ticket) if r.verdict == "fail" and r.id != review.id]
            gap = repeated_gap(review, earlier)
            if gap is not None:  # not converging: do not spend the remaining cycles
                controller.record(ticket, "review_fail", f"fail {cycles}/{self.max_review_cycles}, a gap came back")
                controller.escalate(ticket, f"The same gap came back: {gap}. Needs {controller.owner_title} decision.")
                return True
        if cycles >= self.max_review_cycles:
            controller.record(ticket, "review_fail", f"fail {cycles}/{self.max_review_cycles}, escalating")
            controller.escalate(ticket, f"Max review cycles reached. Needs {controller.owner_title} decision.")
            return True
        count = len(review.reasons)
        controller.redispatch(
            ticket,
            feedback_of(review),
            why=f"fail {cycles}/{self.max_review_cycles}, sent back to worker with "
            f"{count} reason{'s' if count != 1 else ''}",
        )
        return True

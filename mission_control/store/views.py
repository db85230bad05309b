"""Read views: tickets, their runs, reviews, activity and escalations as JSON-ready dicts, the shapes
`mc ... --json` prints (and the board serves). Reads only; one query per list."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mission_control.store.models import Comment, Escalation, Event, ShadowReview, Ticket, WorkerRun


def when(ts: float | None) -> str | None:
    """An epoch timestamp as local ISO 8601, for people and JSON."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="seconds")


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    """One ticket's card: key, title, status, where it works and its counters."""
    return {
        "key": ticket.key,
        "title": ticket.title,
        "status": ticket.status,
        "worker": ticket.worker,
        "repo": ticket.repo,
        "branch": ticket.branch,
        "worktree": ticket.worktree,
        "review_cycles": ticket.review_cycles,
        "death_count": ticket.death_count,
        "attempts": ticket.attempts,
        "done_sha": ticket.done_sha,
        "created_at": when(ticket.created_at),
        "updated_at": when(ticket.updated_at),
    }


def tickets(status: str | None = None) -> list[Ticket]:
    """All tickets (or those with ``status``), oldest first."""
    query = Ticket.select().order_by(Ticket.id)
    return list(query.where(Ticket.status == status) if status else query)


def ticket_by_key(key: str) -> Ticket | None:
    """The ticket with ``key`` (case-insensitive), or None."""
    return Ticket.get_or_none(Ticket.key == key.strip().upper())


def ticket_details(ticket: Ticket) -> dict[str, Any]:
    """Everything known about a ticket: its summary, body, comments, events, reviews, runs and
    escalations, each oldest first."""
    data = ticket_summary(ticket)
    data["body"] = ticket.body
    data["comments"] = [
        {"author": c.author, "body": c.body, "created_at": when(c.created_at)}
        for c in Comment.select().where(Comment.ticket == ticket.id).order_by(Comment.id)
    ]
    data["events"] = [
        {
            "action": e.action,
            "actor": e.actor,
            "kind": e.kind,
            "detail": e.detail,
            "data": e.data,
            "created_at": when(e.created_at),
        }
        for e in Event.select().where(Event.ticket == ticket.id).order_by(Event.id)
    ]
    data["reviews"] = [
        {
            "done_sha": r.done_sha,
            "verdict": r.verdict,
            "reasons": r.reasons,
            "gaps": r.gaps,
            "reviewer": r.reviewer,
            "created_at": when(r.created_at),
        }
        for r in ShadowReview.select().where(ShadowReview.ticket == ticket.id).order_by(ShadowReview.id)
    ]
    data["runs"] = runs(ticket)
    data["escalations"] = [
        {
            "owner": e.owner,
            "reason": e.reason,
            "by": e.actor,
            "created_at": when(e.created_at),
            "notified_at": when(e.notified_at),
        }
        for e in Escalation.select().where(Escalation.ticket == ticket.id).order_by(Escalation.id)
    ]
    return data


def runs(ticket: Ticket) -> list[dict[str, Any]]:
    """The ticket's runs, oldest first: each worker attempt, then the review of its sha (if any), with
    outcome, reason, the agent's session, its spend and its log."""
    reviews: dict[int | None, ShadowReview] = {
        r.attempt: r for r in ShadowReview.select().where(ShadowReview.ticket == ticket.id).order_by(ShadowReview.id)
    }
    rows: list[dict[str, Any]] = []
    for r in WorkerRun.select().where(WorkerRun.ticket == ticket.id).order_by(WorkerRun.attempt):
        rows.append(
            {
                "attempt": r.attempt,
                "kind": "worker",
                "outcome": r.outcome,
                "reason": r.death_reason,
                "session": r.agent_session,
                "cost_usd": r.cost_usd,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "turns": r.turns,
                "log": r.log_path,
                "done_sha": r.done_sha,
                "leftovers": r.leftovers.splitlines() if r.leftovers else [],
                "workdir": r.workdir,
                "exit_code": r.exit_code,
                "signal": r.signal,
                "timed_out": r.timed_out,
                "death_reason": r.death_reason,
                "pid": r.pid,
                "host": r.host,
                "started_at": when(r.started_at),
                "ended_at": when(r.ended_at),
                "applied_at": when(r.applied_at),
                "log_path": r.log_path,
            }
        )
        review = reviews.get(r.attempt)
        if review is not None and review.done_sha == r.done_sha:
            rows.append(
                {
                    "attempt": r.attempt,
                    "kind": "review",
                    "outcome": review.verdict,
                    "reason": "; ".join(review.reasons) or None,
                    "session": review.session,
                    "cost_usd": review.cost_usd,
                    "input_tokens": review.input_tokens,
                    "output_tokens": review.output_tokens,
                    "turns": review.turns,
                    "log": str(Path(r.log_path).with_name(f"{r.attempt}.review.log")),
                    "done_sha": review.done_sha,
                    "ended_at": when(review.created_at),
                }
            )
    return rows


def activity(ticket: Ticket) -> list[tuple[float, str]]:
    """The ticket's events and comments, oldest first, as (time, one line of text): its activity feed."""
    rows: list[tuple[float, int, str]] = []
    for e in Event.select().where(Event.ticket == ticket.id):
        rows.append((e.created_at, 0, f"{e.actor}: {e.action} {e.detail}".rstrip()))
    for c in Comment.select().where(Comment.ticket == ticket.id):
        body = " ".join(c.body.split())
        rows.append((c.created_at, 1, f"{c.author} commented: {body[:300]}"))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [(ts, text) for ts, _, text in rows]

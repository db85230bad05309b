"""Read views: tickets, their runs, reviews, activity and escalations as JSON-ready dicts, the shapes
`mc ... --json` prints (and the board serves). Reads only; one query per list."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import peewee as pw
from peewee import fn

from mission_control.store.models import (
    Comment,
    ControllerProcess,
    Delivery,
    Escalation,
    Event,
    ShadowReview,
    Ticket,
    WorkerRun,
    db,
)
from mission_control.store.transactions import tuples


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
        "max_cost_usd": ticket.max_cost_usd,
        "done_sha": ticket.done_sha,
        "source": ticket.source,
        "source_url": ticket.source_url,
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


def ticket_details(ticket: Ticket, budget: float | None = None) -> dict[str, Any]:
    """Everything known about a ticket: its summary, its spend budget (``budget``, as the config
    resolves it) and what it spent, body, comments, events, reviews, runs and escalations, each oldest
    first."""
    data = ticket_summary(ticket)
    data["budget_usd"] = budget
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
    data["spent_usd"] = round(sum(r["cost_usd"] or 0 for r in data["runs"]), 6)
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
    data["delivery"] = delivery(ticket)
    return data


def delivery(ticket: Ticket) -> dict[str, Any] | None:
    """Where the ticket's done work was handed back (``url``, ``sha``, ``state``), or None."""
    found = Delivery.get_or_none(Delivery.ticket == ticket.id)
    if found is None or found.state == "pending":
        return None
    return {
        "plugin": found.plugin,
        "url": found.url,
        "sha": found.sha,
        "state": found.state,
        "updated_at": when(found.updated_at),
    }


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
                "base_sha": r.base_sha,
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
                    "log": str(r.review_output()),
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


# -- the board's reads (mc board): a few queries per page, whatever the number of tickets ---------------


def board_cards(status: str | None = None, text: str | None = None) -> list[dict[str, Any]]:
    """Every ticket's card for the board (or those with ``status`` / ``text`` in key or title): key,
    title, status, counters, the attempt running now, what its runs cost, and when it was created and
    last moved (epoch seconds), and for a ticket waiting for a person why. Six queries whatever the number
    of tickets, rows read as tuples."""
    columns = (Ticket.id, Ticket.key, Ticket.title, Ticket.status, Ticket.review_cycles, Ticket.death_count)
    query = Ticket.select(*columns, Ticket.created_at, Ticket.updated_at).order_by(Ticket.id)
    if status:
        query = query.where(Ticket.status == status)
    if text:
        needle = f"%{text}%"
        query = query.where(Ticket.title.ilike(needle) | Ticket.key.ilike(needle))
    running_rows = tuples(WorkerRun.select(WorkerRun.ticket, WorkerRun.attempt).where(WorkerRun.outcome == "running"))
    running: dict[int, int] = {ticket_id: attempt for ticket_id, attempt in running_rows}
    spent: dict[int, float] = {}
    for model in (WorkerRun, ShadowReview):
        for ticket_id, cost in tuples(model.select(model.ticket, fn.SUM(model.cost_usd)).group_by(model.ticket)):
            spent[ticket_id] = spent.get(ticket_id, 0.0) + (cost or 0.0)
    last: dict[int, float] = dict(tuples(Event.select(Event.ticket, fn.MAX(Event.created_at)).group_by(Event.ticket)))
    waiting = Escalation.select(Escalation.ticket, Escalation.reason).join(Ticket).where(Ticket.status == "needs_input")
    why: dict[int, str] = dict(tuples(waiting.order_by(Escalation.id)))  # the latest escalation of each wins
    return [
        {
            "key": key,
            "title": title,
            "status": state,
            "review_cycles": cycles,
            "death_count": deaths,
            "attempt_running": running.get(ticket_id),
            "cost_usd": spent.get(ticket_id) or None,
            "waiting_because": why.get(ticket_id) if state == "needs_input" else None,
            "created_ts": created,
            "last_ts": max(last.get(ticket_id) or 0.0, updated),
        }
        for ticket_id, key, title, state, cycles, deaths, created, updated in tuples(query)
    ]


def last_activity(ticket: Ticket) -> float:
    """When anything last happened to the ticket (its latest event, or its last change)."""
    latest = tuples(Event.select(fn.MAX(Event.created_at)).where(Event.ticket == ticket.id))[0][0]
    return max(latest or 0.0, ticket.updated_at)


def change_marker() -> tuple[Any, ...]:
    """Something that changes whenever anything a board page shows may have changed (one query)."""
    return tuple(
        db.execute_sql(
            "SELECT (SELECT MAX(id) FROM event), (SELECT MAX(updated_at) FROM ticket), (SELECT COUNT(*) FROM ticket),"
            " (SELECT MAX(id) FROM worker_run), (SELECT MAX(ended_at) FROM worker_run),"
            " (SELECT MAX(id) FROM shadow_review), (SELECT MAX(heartbeat_at) FROM controller)"
        ).fetchone()
    )


def live_outputs() -> list[str]:
    """The output files of the workers and reviewers running now, as MC recorded them."""
    reviewing = (WorkerRun.outcome == "done") & WorkerRun.applied_at.is_null()
    query = WorkerRun.select(WorkerRun.log_path, WorkerRun.attempt, WorkerRun.outcome, WorkerRun.review_stage).where(
        (WorkerRun.outcome == "running") | reviewing
    )
    return [
        path if outcome == "running" else str(WorkerRun(log_path=path, attempt=attempt).review_output(stage))
        for path, attempt, outcome, stage in tuples(query)
    ]


def run_output_path(ticket: Ticket, attempt: int, kind: str) -> str | None:
    """Where the output of the ticket's run ``attempt`` (``kind``: worker or review) is, from MC's own
    records (never a path a request names), or None when there is no such run."""
    row = WorkerRun.get_or_none((WorkerRun.ticket == ticket.id) & (WorkerRun.attempt == attempt))
    if row is None:
        return None
    return row.log_path if kind == "worker" else str(row.review_output())


def events_after(cursor: int, limit: int = 500) -> list[dict[str, Any]]:
    """Audit events with an id above ``cursor``, oldest first (at most ``limit``), each with its id (the
    next cursor) and its ticket's key."""
    query = (
        Event.select(
            Event.id, Ticket.key, Event.action, Event.actor, Event.kind, Event.detail, Event.data_json, Event.created_at
        )
        .join(Ticket, pw.JOIN.LEFT_OUTER)
        .where(Event.id > cursor)
        .order_by(Event.id)
        .limit(limit)
    )
    names = ("id", "ticket", "action", "actor", "kind", "detail", "data", "created_at")
    rows = [dict(zip(names, row, strict=True)) for row in tuples(query)]
    for row in rows:
        row["data"] = json.loads(row["data"]) if row["data"] else {}
        row["created_at"] = when(row["created_at"])
    return rows


def controllers() -> list[dict[str, Any]]:
    """Controllers whose lease has not ended: host, pid, when they started and their last heartbeat."""
    return [
        {
            "id": c.id,
            "host": c.host,
            "pid": c.pid,
            "started_at": when(c.started_at),
            "heartbeat_at": when(c.heartbeat_at),
        }
        for c in ControllerProcess.select().where(ControllerProcess.stopped_at.is_null()).order_by(ControllerProcess.id)
    ]

"""The operator's reads: what a health snapshot holds, agent spend, and the snapshots themselves."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from peewee import fn

from mission_control.store.models import STATUSES, VERDICTS, HealthSnapshot, ShadowReview, Ticket, WorkerRun
from mission_control.store.transactions import tuples


def snapshot_data(now: float, timeout_of: Callable[[str], float]) -> dict[str, Any]:
    """Tickets by status, workers running, the last hour's deaths and verdicts, and the keys of tickets
    in progress whose running worker is past its profile's timeout (``timeout_of(profile)``)."""
    hour = now - 3600
    by_status = dict.fromkeys(STATUSES, 0)
    for status, count in tuples(Ticket.select(Ticket.status, fn.COUNT(Ticket.id)).group_by(Ticket.status)):
        by_status[status] = count
    running = tuples(
        WorkerRun.select(WorkerRun.ticket, WorkerRun.profile, WorkerRun.started_at).where(
            WorkerRun.outcome == "running"
        )
    )
    stuck_ids = {ticket_id for ticket_id, profile, started in running if now - started > timeout_of(profile)}
    in_progress = Ticket.id.in_(stuck_ids or {0}) & (Ticket.status == "in_progress")
    stuck = tuples(Ticket.select(Ticket.key).where(in_progress))
    deaths = WorkerRun.select().where((WorkerRun.outcome == "died") & (WorkerRun.ended_at > hour)).count()
    verdicts = dict.fromkeys(VERDICTS, 0)
    query = (
        ShadowReview.select(ShadowReview.verdict, fn.COUNT(ShadowReview.id))
        .where(ShadowReview.created_at > hour)
        .group_by(ShadowReview.verdict)
    )
    for verdict, count in tuples(query):
        verdicts[verdict] = count
    return {
        "tickets": by_status,
        "workers_running": len(running),
        "deaths_last_hour": deaths,
        "verdicts_last_hour": verdicts,
        "stuck": [key for (key,) in stuck],
    }


def save_snapshot(now: float, data: dict[str, Any]) -> None:
    """Store a health snapshot taken at ``now``."""
    HealthSnapshot.create(created_at=now, data=json.dumps(data))


def latest_snapshot() -> tuple[float, dict[str, Any]] | None:
    """(when, data) of the most recent health snapshot, or None."""
    row = HealthSnapshot.select().order_by(HealthSnapshot.id.desc()).first()
    return None if row is None else (row.created_at, json.loads(row.data))


def spend_since(since: float) -> tuple[float, int, int]:
    """(cost in USD, input tokens, output tokens) of worker runs that ended and reviews stored after
    ``since``, as the agents' CLIs reported them."""
    totals = [
        tuples(
            model.select(fn.SUM(model.cost_usd), fn.SUM(model.input_tokens), fn.SUM(model.output_tokens)).where(
                ended > since
            )
        )[0]
        for model, ended in ((WorkerRun, WorkerRun.ended_at), (ShadowReview, ShadowReview.created_at))
    ]
    cost, inputs, outputs = (sum(value or 0 for value in column) for column in zip(*totals, strict=True))
    return float(cost), int(inputs), int(outputs)


def recent_snapshots(limit: int = 24) -> list[tuple[float, dict[str, Any]]]:
    """The latest ``limit`` health snapshots, newest first, as (when, data)."""
    rows = HealthSnapshot.select().order_by(HealthSnapshot.id.desc()).limit(limit)
    return [(row.created_at, json.loads(row.data)) for row in rows]

"""The queries the loop and the facade run, as named functions: what each one reads or changes is in
its name and docstring, and no module above the store builds SQL of its own."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import peewee as pw
from peewee import fn

from mission_control.store import prepared
from mission_control.store.models import ACTIVE, ControllerProcess, Meta, ShadowReview, Ticket, WorkerRun, db
from mission_control.store.prepared import columns, load, load_joined
from mission_control.store.transactions import tuples, update_row


def new_ticket(prefix: str, **fields: Any) -> Ticket:
    """Insert a ticket and give it the next key (``PREFIX-<id>``) in the same transaction."""
    now = time.time()
    ticket = Ticket.create(created_at=now, updated_at=now, **fields)
    ticket.key = f"{prefix}-{ticket.id}"
    Ticket.update(key=ticket.key).where(Ticket.id == ticket.id).execute()
    return ticket


# -- controllers (leases) ---------------------------------------------------------------------------


def register_controller(host: str, pid: int, proc_start: str, now: float) -> ControllerProcess:
    """A new lease for a controller process, held from ``now``."""
    return ControllerProcess.create(host=host, pid=pid, proc_start=proc_start, started_at=now, heartbeat_at=now)


def renew_lease(controller_id: int, now: float) -> bool:
    """Move the controller's heartbeat to ``now``; False when its lease was already ended (recovered)."""
    return bool(
        ControllerProcess.update(heartbeat_at=now)
        .where((ControllerProcess.id == controller_id) & ControllerProcess.stopped_at.is_null())
        .execute()
    )


def release_controller(controller_id: int) -> None:
    """End the controller's lease and let go of every ticket it claims."""
    Ticket.update(claimed_by=None).where(Ticket.claimed_by == controller_id).execute()
    ControllerProcess.update(stopped_at=time.time()).where(ControllerProcess.id == controller_id).execute()


def live_controllers(excluding: int) -> list[ControllerProcess]:
    """Controllers whose lease has not been ended, other than ``excluding``."""
    return list(
        ControllerProcess.select().where(ControllerProcess.stopped_at.is_null() & (ControllerProcess.id != excluding))
    )


def syncing_controller(fresh_since: float) -> int | None:
    """The one controller that runs the sync pass for the whole store: the oldest whose lease is held and
    was renewed since ``fresh_since``; None when there is none."""
    row = (
        ControllerProcess.select(ControllerProcess.id)
        .where(ControllerProcess.stopped_at.is_null() & (ControllerProcess.heartbeat_at >= fresh_since))
        .order_by(ControllerProcess.id)
        .first()
    )
    return row.id if row is not None else None


def end_leases(controller_ids: list[int]) -> None:
    """Mark gone controllers stopped (once)."""
    (
        ControllerProcess.update(stopped_at=time.time())
        .where(ControllerProcess.id.in_(controller_ids) & ControllerProcess.stopped_at.is_null())
        .execute()
    )


# -- claims and runs --------------------------------------------------------------------------------


def claim_holders(ticket_ids: set[int]) -> dict[int, tuple[int | None, int, str]]:
    """For each ticket: (controller holding its claim, claim token, key)."""
    query = Ticket.select(Ticket.id, Ticket.claimed_by, Ticket.claim_token, Ticket.key).where(Ticket.id.in_(ticket_ids))
    return {ticket_id: (by, token, key) for ticket_id, by, token, key in tuples(query)}


def run_owners(run_ids: set[int]) -> dict[int, tuple[int | None, str]]:
    """For each run: (controller watching it, outcome)."""
    query = WorkerRun.select(WorkerRun.id, WorkerRun.controller, WorkerRun.outcome).where(WorkerRun.id.in_(run_ids))
    return {run_id: (by, outcome) for run_id, by, outcome in tuples(query)}


def todo_tickets(limit: int, lock: bool = False) -> list[Ticket]:
    """The oldest ``limit`` todo tickets. With ``lock`` (PostgreSQL, inside a transaction), locked in
    one round trip, skipping rows another controller is claiming rather than waiting for them."""

    def build(p: Any) -> Any:
        query = Ticket.select(*columns(Ticket)).where(Ticket.status == "todo").order_by(Ticket.id).limit(p.limit)
        # peewee's stubs type for_update() as a flag; it takes the clause as text too, as here.
        return query.for_update("FOR UPDATE SKIP LOCKED") if lock else query  # type: ignore[arg-type]

    return [load(Ticket, row) for row in prepared.rows(f"todo_tickets:{lock}", build, limit=limit)]


def _set(model: type[Any], fields: dict[str, Any], p: Any) -> dict[Any, Any]:
    return {getattr(model, name): getattr(p, f"set_{name}") for name in fields}


def take_todo(ticket: Ticket, fields: dict[str, Any]) -> bool:
    """Apply ``fields`` to a ticket still todo under the claim token it was read with."""
    values = {f"set_{name}": value for name, value in fields.items()}
    return bool(
        prepared.count(
            "take_todo",
            lambda p: Ticket.update(_set(Ticket, fields, p)).where(
                (Ticket.id == p.id) & (Ticket.status == "todo") & (Ticket.claim_token == p.token)
            ),
            id=ticket.id,
            token=ticket.claim_token,
            **values,
        )
    )


def new_run(**fields: Any) -> WorkerRun:
    """Insert a worker run (an attempt)."""
    return prepared.insert(WorkerRun, **fields)


def runs_with_tickets(run_ids: list[int]) -> dict[int, WorkerRun]:
    """The runs with these ids, each with its ticket loaded."""
    ids = {f"id{index}": run_id for index, run_id in enumerate(run_ids)}

    def build(p: Any) -> Any:
        wanted = [getattr(p, name) for name in ids]
        return WorkerRun.select(*columns(WorkerRun, Ticket)).join(Ticket).where(WorkerRun.id.in_(wanted))

    found = [load_joined(WorkerRun, Ticket, "ticket", row) for row in prepared.rows("runs_with_tickets", build, **ids)]
    return {run.id: run for run in found}


def latest_run(ticket_id: int) -> WorkerRun | None:
    """The ticket's latest attempt."""
    return WorkerRun.select().where(WorkerRun.ticket == ticket_id).order_by(WorkerRun.attempt.desc()).first()


def earlier_runs(run: WorkerRun) -> list[tuple[int, str, str | None, str | None]]:
    """(attempt, outcome, death_reason, agent_session) of the ticket's earlier runs of the same
    profile, newest first."""
    query = (
        WorkerRun.select(WorkerRun.attempt, WorkerRun.outcome, WorkerRun.death_reason, WorkerRun.agent_session)
        .where(
            (WorkerRun.ticket == run.ticket_id) & (WorkerRun.attempt < run.attempt) & (WorkerRun.profile == run.profile)
        )
        .order_by(WorkerRun.attempt.desc())
    )
    return [(attempt, outcome, reason, session) for attempt, outcome, reason, session in tuples(query)]


def run_token(run_id: int) -> int | None:
    """The claim token a run currently belongs to."""
    return prepared.scalar(
        "run_token", lambda p: WorkerRun.select(WorkerRun.token).where(WorkerRun.id == p.id), id=run_id
    )


def ticket_token(ticket_id: int) -> int | None:
    """The ticket's current claim token."""
    build = lambda p: Ticket.select(Ticket.claim_token).where(Ticket.id == p.id)  # noqa: E731
    return prepared.scalar("ticket_token", build, id=ticket_id)


def store_run_report(run_id: int, token: int, fields: dict[str, Any]) -> bool:
    """Write a report on a run still running under ``token``; False if it was already reported or the
    attempt now belongs to another claim (fencing)."""
    values = {f"set_{name}": value for name, value in fields.items()}
    return bool(
        prepared.count(
            "store_run_report",
            lambda p: WorkerRun.update(_set(WorkerRun, fields, p)).where(
                (WorkerRun.id == p.id) & (WorkerRun.outcome == "running") & (WorkerRun.token == p.token)
            ),
            id=run_id,
            token=token,
            **values,
        )
    )


def unapplied_reports(controller_id: int) -> list[WorkerRun]:
    """Stored, unapplied reports of the tickets this controller holds, under their current claim,
    oldest first, each with its ticket loaded."""

    def build(p: Any) -> Any:
        return (
            WorkerRun.select(*columns(WorkerRun, Ticket))
            .join(Ticket)
            .where(
                (Ticket.claimed_by == p.controller)
                & (WorkerRun.outcome != "running")
                & WorkerRun.applied_at.is_null()
                & (WorkerRun.token == Ticket.claim_token)
            )
            .order_by(WorkerRun.id)
        )

    found = prepared.rows("unapplied_reports", build, controller=controller_id)
    return [load_joined(WorkerRun, Ticket, "ticket", row) for row in found]


def reviews_by_sha(ticket_ids: set[int]) -> dict[tuple[int, str], ShadowReview]:
    """The latest shadow review of each (ticket, sha) of these tickets."""
    if not ticket_ids:
        return {}
    ids = {f"id{index}": ticket_id for index, ticket_id in enumerate(sorted(ticket_ids))}

    def build(p: Any) -> Any:
        wanted = [getattr(p, name) for name in ids]
        return (
            ShadowReview.select(*columns(ShadowReview)).where(ShadowReview.ticket.in_(wanted)).order_by(ShadowReview.id)
        )

    found = [load(ShadowReview, row) for row in prepared.rows("reviews_by_sha", build, **ids)]
    return {(review.ticket_id, review.done_sha): review for review in found}


def mark_applied(run_id: int, ticket_id: int, controller_id: int) -> bool:
    """Mark a run's report applied, once, and only while the controller's claim on the ticket is the
    run's (fencing). True if this call is the one that applies it."""

    def build(p: Any) -> Any:
        claim = Ticket.select(Ticket.claim_token).where((Ticket.id == p.ticket) & (Ticket.claimed_by == p.controller))
        return WorkerRun.update(applied_at=p.now).where(
            (WorkerRun.id == p.run) & WorkerRun.applied_at.is_null() & (WorkerRun.token == claim)
        )

    return bool(
        prepared.count("mark_applied", build, run=run_id, ticket=ticket_id, controller=controller_id, now=time.time())
    )


def tickets_by_key(keys: set[str]) -> dict[str, Ticket]:
    """The tickets with these keys."""
    return {str(t.key): t for t in Ticket.select().where(Ticket.key.in_(keys))} if keys else {}


def orphaned_tickets(dead_controllers: list[int]) -> list[Ticket]:
    """Active tickets nobody holds, or held by one of these gone controllers."""
    held_by_dead = Ticket.claimed_by.in_(dead_controllers or [0])
    return list(Ticket.select().where(Ticket.status.in_(ACTIVE) & (Ticket.claimed_by.is_null() | held_by_dead)))


def transfer_claim(ticket: Ticket, controller_id: int, run: WorkerRun | None) -> int | None:
    """Take over an active ticket under a new claim token (and its latest run, if it belonged to the
    old claim). Returns the new token, or None if the ticket changed since it was read."""
    token = ticket.claim_token + 1
    taken = (
        Ticket.update(claimed_by=controller_id, claim_token=token)
        .where((Ticket.id == ticket.id) & (Ticket.claim_token == ticket.claim_token) & Ticket.status.in_(ACTIVE))
        .execute()
    )
    if not taken:
        return None
    if run is not None and run.token == ticket.claim_token:
        WorkerRun.update(controller=controller_id, token=token).where(WorkerRun.id == run.id).execute()
    return token


def requeue_unstarted(run: WorkerRun, ticket: Ticket, outcome: str = "died", reason: str = "never started") -> None:
    """An attempt that never started (or that its own controller stopped): closed (applied, not a
    death), the ticket back to todo, unclaimed, with the feedback the attempt was given."""
    now = time.time()
    WorkerRun.update(outcome=outcome, death_reason=reason, ended_at=now, applied_at=now).where(
        WorkerRun.id == run.id
    ).execute()
    Ticket.update(status="todo", claimed_by=None, pending_feedback=run.feedback, updated_at=now).where(
        Ticket.id == ticket.id
    ).execute()


def note_worker_started(
    run_id: int, ticket_id: int, pid: int, start: str, base_sha: str | None, workdir: Path, branch: str | None
) -> None:
    """Where and as which process a worker runs (for recovery), and the ticket's worktree and branch."""
    update_row(WorkerRun, run_id, pid=pid, proc_start=start, base_sha=base_sha, workdir=str(workdir))
    if branch:
        update_row(Ticket, ticket_id, worktree=str(workdir), branch=branch)
    else:
        update_row(Ticket, ticket_id, worktree=str(workdir))


def note_review_started(run_id: int, pid: int, start: str) -> None:
    """Which process reviews the run's sha (for recovery)."""
    update_row(WorkerRun, run_id, review_pid=pid, review_proc_start=start)


def forget_worktree(ticket_id: int) -> None:
    """The ticket's worktree was removed."""
    update_row(Ticket, ticket_id, worktree=None)


def review_ended(run_id: int) -> None:
    """The run's reviewer is no longer running."""
    update_row(WorkerRun, run_id, review_pid=None)


def end_review(run_id: int, token: int) -> bool:
    """The run's reviewer is no longer running, if the run still belongs to the claim ``token``; False
    (and nothing changed) if it belongs to another one now (fencing)."""

    def build(p: Any) -> Any:
        return WorkerRun.update(review_pid=None).where((WorkerRun.id == p.id) & (WorkerRun.token == p.token))

    return prepared.count("end_review", build, id=run_id, token=token) > 0


def advance_review_stage(run: WorkerRun, stage: int, cost: float | None) -> bool:
    """The run's review stage ``stage`` passed: the next one is due (started afresh, its own start
    count), and the stage's cost is added to the review's. Conditional on the stage, so it happens
    once; False if it already did."""
    spent = (run.review_spent_usd or 0.0) + (cost or 0.0)
    changed = (
        WorkerRun.update(review_stage=stage + 1, review_pid=None, review_starts=0, review_spent_usd=spent)
        .where((WorkerRun.id == run.id) & (WorkerRun.review_stage == stage))
        .execute()
    )
    return bool(changed)


def count_review_start(run: WorkerRun) -> None:
    """One more start of the run's review (reviews that never finish must not loop)."""
    update_row(WorkerRun, run.id, review_starts=run.review_starts + 1)  # from the row as read: safe to re-run


def set_done_sha(ticket_id: int, token: int, sha: str, status: str) -> bool:
    """A held ticket's reported sha, and the status it waits in, if the ticket is still under the claim
    ``token``; False (and nothing changed) if it moved on (fencing)."""

    def build(p: Any) -> Any:
        changes = {Ticket.done_sha: p.sha, Ticket.status: p.status, Ticket.updated_at: p.now}
        return Ticket.update(changes).where((Ticket.id == p.id) & (Ticket.claim_token == p.token))

    values = {"id": ticket_id, "token": token, "sha": sha, "status": status, "now": time.time()}
    return prepared.count("set_done_sha", build, **values) > 0


def consume_report(run_id: int) -> float:
    """Mark a stored report consumed without applying it (its ticket moved on without it); returns when."""
    now = time.time()
    update_row(WorkerRun, run_id, applied_at=now)
    return now


# -- tickets ----------------------------------------------------------------------------------------


def ticket_by_id(ticket_id: int) -> Ticket:
    """The ticket as the database has it now."""
    return Ticket.get_by_id(ticket_id)


def ticket_key(ticket_id: int | None) -> str | None:
    """The key of the ticket with this id, or None."""
    return Ticket.select(Ticket.key).where(Ticket.id == ticket_id).scalar()


def add_to_counter(ticket: Ticket, name: str) -> int:
    """Add one to a ticket counter (``death_count``, ``review_cycles``) in the store and return the new
    value: counted by the database, so a transaction retried after a deadlock counts once."""
    field = getattr(Ticket, name)
    if isinstance(db.obj, pw.SqliteDatabase) and sqlite3.sqlite_version_info < (3, 35):  # no RETURNING before
        Ticket.update({field: field + 1}).where(Ticket.id == ticket.id).execute()
        return Ticket.select(field).where(Ticket.id == ticket.id).scalar()

    def build(p: Any) -> Any:
        return Ticket.update({field: field + p.step}).where(Ticket.id == p.id).returning(field)

    return int(prepared.scalar(f"add_to_counter:{name}", build, id=ticket.id, step=1))


def has_running_worker(ticket_id: int) -> bool:
    """Whether a worker run of the ticket has not reported yet."""
    return WorkerRun.select().where((WorkerRun.ticket == ticket_id) & (WorkerRun.outcome == "running")).exists()


def unjudged_done_tickets(limit: int) -> list[Ticket]:
    """Done tickets the operator has not judged yet, oldest first, at most ``limit``."""
    query = Ticket.select().where((Ticket.status == "done") & (Ticket.operator_checked == False))  # noqa: E712
    return list(query.order_by(Ticket.id).limit(limit))


def mark_operator_checked(ticket_ids: list[int]) -> None:
    """The operator has judged these done tickets."""
    Ticket.update(operator_checked=True).where(Ticket.id.in_(ticket_ids)).execute()


# -- facts about the store itself ------------------------------------------------------------------


def meta_value(key: str) -> str | None:
    """The store-wide fact ``key`` (e.g. the cluster kill-switch flag), or None."""
    return prepared.scalar("meta_value", lambda p: Meta.select(Meta.value).where(Meta.key == p.key), key=key)


def set_meta(key: str, value: str | None) -> None:
    """Set (or, with None, remove) the store-wide fact ``key``."""
    Meta.delete().where(Meta.key == key).execute()
    if value is not None:
        Meta.insert(key=key, value=value).execute()


def local_processes() -> list[tuple[str, int, str]]:
    """(what, pid, start time) of every process the store knows to be running: live controllers,
    running workers and running reviewers (a pid is only that process with that start time)."""
    rows: list[tuple[str, int, str]] = []
    live = ControllerProcess.select(ControllerProcess.pid, ControllerProcess.proc_start)
    rows += [("a controller", pid, start) for pid, start in tuples(live.where(ControllerProcess.stopped_at.is_null()))]
    running = WorkerRun.select(WorkerRun.pid, WorkerRun.proc_start).where(
        (WorkerRun.outcome == "running") & WorkerRun.pid.is_null(False)
    )
    rows += [("a worker run", pid, start) for pid, start in tuples(running)]
    reviewing = WorkerRun.select(WorkerRun.review_pid, WorkerRun.review_proc_start).where(
        WorkerRun.review_pid.is_null(False)
    )
    rows += [("a reviewer run", pid, start) for pid, start in tuples(reviewing)]
    return rows


def database_id_text() -> str:
    """The store's own id (made at `mc init`), as in ``MC_RUN_ID=<id>:<run>``."""
    return meta_value("db_id") or "unknown"


def running_run_ids(db_id: str) -> list[str]:
    """``<db id>:<run id>`` of every worker run still running, or reported and not yet applied (its review
    may be running), as in a worker's or reviewer's environment."""
    pending = (WorkerRun.outcome == "running") | WorkerRun.applied_at.is_null()
    query = WorkerRun.select(WorkerRun.id).where(pending | WorkerRun.review_pid.is_null(False))
    return [f"{db_id}:{run_id}" for (run_id,) in tuples(query)]


def ticket_spend(ticket_id: int) -> float:
    """What the ticket's worker and review runs cost, in US dollars, as the agents' CLIs reported it."""
    total = 0.0
    for model in (WorkerRun, ShadowReview):
        cost = model.select(fn.SUM(model.cost_usd)).where(model.ticket == ticket_id).scalar()
        total += cost or 0.0
    return float(total)


def session_spend(ticket_id: int, session: str, before_attempt: int) -> tuple[float, int, int]:
    """(cost, input tokens, output tokens) the ticket's runs before ``before_attempt`` in the agent
    session ``session`` were charged: what a CLI that reports a resumed session's running total had
    already counted."""
    query = WorkerRun.select(
        fn.SUM(WorkerRun.cost_usd), fn.SUM(WorkerRun.input_tokens), fn.SUM(WorkerRun.output_tokens)
    ).where(
        (WorkerRun.ticket == ticket_id) & (WorkerRun.agent_session == session) & (WorkerRun.attempt < before_attempt)
    )
    cost, inputs, outputs = tuples(query)[0]
    return float(cost or 0.0), int(inputs or 0), int(outputs or 0)


def waiting_keys() -> list[str]:
    """The keys of the tickets that wait for a person (``needs_input``), oldest first."""
    query = Ticket.select(Ticket.key).where(Ticket.status == "needs_input").order_by(Ticket.id)
    return [str(row.key) for row in query]

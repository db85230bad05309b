"""The operator (`mc operator`, and a sweep every ``operator.interval`` inside `mc run`).

Each sweep records a health snapshot, then looks for weak completions among done tickets and
reopens them unless a plugin vetoes. Health is recorded even when every move is vetoed. A done
ticket is judged once per completion; a kill-switch veto leaves it to be judged again later.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from peewee import fn

from mc_hooks.config import Config
from mc_hooks.manager import load_plugins
from mission_control.controller import Controller, short
from mission_control.models import HealthSnapshot, ShadowReview, Ticket, WorkerRun, write

SWEEP_BATCH = 500
SCAN_CHUNK = 1 << 20
SCAN_OVERLAP = 4096


def _log_matches(path: str, patterns: tuple[re.Pattern[str], ...]) -> str | None:
    """The first weak pattern found in a log file (read in overlapping chunks), or None."""
    if not patterns or not path:
        return None
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError:
        return None
    with handle:
        previous = ""
        while chunk := handle.read(SCAN_CHUNK):
            text = previous + chunk.decode("utf-8", errors="replace")
            for pattern in patterns:
                if pattern.search(text):
                    return pattern.pattern
            previous = text[-SCAN_OVERLAP:]
    return None


def is_commit(repo: str, sha: str) -> bool | None:
    """Whether ``sha`` names a commit in the git repository ``repo`` (None: cannot tell)."""
    try:
        result = subprocess.run(
            ["git", "-C", repo, "cat-file", "-e", f"{sha}^{{commit}}"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode == 0:
        return True
    inside = subprocess.run(["git", "-C", repo, "rev-parse", "--git-dir"], capture_output=True, timeout=30, check=False)
    return False if inside.returncode == 0 else None


class Operator:
    """Health recording and weak-completion reopening, asking plugins before every move."""

    def __init__(self, controller: Controller, hook: Any) -> None:
        self.controller = controller
        self.hook = hook
        self.logged: dict[int, str] = {}

    @property
    def config(self) -> Config:
        return self.controller.config

    def weak_reason(self, ticket: Ticket) -> str | None:
        """Why a done ticket looks like a weak completion, or None."""
        if not ticket.done_sha:
            return "done without a done_sha"
        if ticket.repo and Path(ticket.repo).is_dir() and is_commit(ticket.repo, ticket.done_sha) is False:
            return f"done_sha {ticket.done_sha[:12]} is not a commit in {ticket.repo}"
        last = (
            WorkerRun.select(WorkerRun.log_path)
            .where(WorkerRun.ticket == ticket.id)
            .order_by(WorkerRun.attempt.desc())
            .first()
        )
        if last is not None:
            pattern = _log_matches(last.log_path, self.config.operator.weak_patterns)
            if pattern:
                return f"the last worker log matches {pattern!r}"
        return None

    def sweep(self) -> dict[str, Any]:
        """Record health, then judge unjudged done tickets. Returns the health snapshot."""
        snapshot = record_health(self.config)
        self.controller.refresh_cluster_killswitch()
        previous, self.controller.actor = self.controller.actor, "operator"
        try:
            self.judge_done_tickets()
        finally:
            self.controller.actor = previous
        return snapshot

    def judge_done_tickets(self) -> None:
        tickets = list(
            Ticket.select()
            .where((Ticket.status == "done") & (Ticket.operator_checked == False))  # noqa: E712
            .order_by(Ticket.id)
            .limit(SWEEP_BATCH)
        )
        judged = []
        for ticket in tickets:
            reason = self.weak_reason(ticket)
            if reason is None:
                judged.append(ticket.id)
                continue
            write(lambda t=ticket, r=reason: self.decide(t, r))
        if judged:
            write(lambda: Ticket.update(operator_checked=True).where(Ticket.id.in_(judged)).execute())

    def decide(self, ticket: Ticket, reason: str) -> None:
        """In one transaction: ask the plugins, then reopen the ticket or record the veto.

        A ``before_operator_reopen`` veto settles this completion; a ``before_auto_action`` veto
        (e.g. the kill-switch) leaves the ticket to be judged again once it lifts.
        """
        current = Ticket.get_by_id(ticket.id)
        if current.status != "done" or current.operator_checked or current.done_sha != ticket.done_sha:
            return  # changed since we looked
        controller = self.controller
        veto = self.hook.before_auto_action(action="reopen", ticket=current, controller=controller)
        if veto:
            if self.logged.get(ticket.id) != veto:
                self.logged[ticket.id] = veto
                controller.record(ticket, "veto", f"reopen held: {veto}", kind="veto", actor=veto.plugin or "host")
            return
        Ticket.update(operator_checked=True).where(Ticket.id == ticket.id).execute()
        veto = self.hook.before_operator_reopen(ticket=current, reason=reason, controller=controller)
        if veto:
            controller.record(
                ticket, "veto", f"{veto} (weak completion: {reason})", kind="veto", actor=veto.plugin or "host"
            )
            return
        controller.set_status(current, "todo", f"reopened: {short(reason)}")
        controller.comment(current, f"Reopened by the operator: {reason}.")


def record_health(config: Config) -> dict[str, Any]:
    """Store and return a health snapshot: tickets by status, workers, last hour's deaths and
    verdicts, and tickets stuck in_progress past their worker timeout."""
    now = time.time()
    hour = now - 3600
    by_status = {status: 0 for status in ("todo", "in_progress", "in_review", "done", "needs_input")}
    for row in Ticket.select(Ticket.status, fn.COUNT(Ticket.id).alias("n")).group_by(Ticket.status).dicts():
        by_status[row["status"]] = row["n"]
    running = list(
        WorkerRun.select(WorkerRun.ticket, WorkerRun.profile, WorkerRun.started_at).where(
            WorkerRun.outcome == "running"
        )
    )
    stuck_ids = {
        r.ticket_id
        for r in running
        if now - r.started_at > config.workers.get(r.profile, config.workers["default"]).timeout
    }
    stuck = [
        t.key
        for t in Ticket.select(Ticket.key).where(Ticket.id.in_(stuck_ids or {0}) & (Ticket.status == "in_progress"))
    ]
    deaths = WorkerRun.select().where((WorkerRun.outcome == "died") & (WorkerRun.ended_at > hour)).count()
    verdicts = {v: 0 for v in ("pass", "fail", "uncertain")}
    for row in (
        ShadowReview.select(ShadowReview.verdict, fn.COUNT(ShadowReview.id).alias("n"))
        .where(ShadowReview.created_at > hour)
        .group_by(ShadowReview.verdict)
        .dicts()
    ):
        verdicts[row["verdict"]] = row["n"]
    data = {
        "tickets": by_status,
        "workers_running": len(running),
        "deaths_last_hour": deaths,
        "verdicts_last_hour": verdicts,
        "stuck": stuck,
    }
    write(lambda: HealthSnapshot.create(created_at=now, data=json.dumps(data)))
    return {"at": _iso(now), **data}


def spend(now: float | None = None) -> dict[str, Any]:
    """Agent spend (USD, as the agents' CLIs reported it) and tokens of worker and reviewer runs that
    ended in the last hour and the last day."""
    now = time.time() if now is None else now
    result: dict[str, Any] = {}
    for label, since in (("last_hour", now - 3600), ("last_day", now - 86400)):
        totals = [
            model.select(fn.SUM(model.cost_usd), fn.SUM(model.input_tokens), fn.SUM(model.output_tokens))
            .where(ended > since)
            .tuples()
            .first()
            for model, ended in ((WorkerRun, WorkerRun.ended_at), (ShadowReview, ShadowReview.created_at))
        ]
        cost, inputs, outputs = (sum(value or 0 for value in column) for column in zip(*totals, strict=True))
        result[label] = {"cost_usd": round(float(cost), 6), "input_tokens": int(inputs), "output_tokens": int(outputs)}
    return result


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="seconds")


def latest_health() -> dict[str, Any] | None:
    """The most recent health snapshot, or None."""
    row = HealthSnapshot.select().order_by(HealthSnapshot.id.desc()).first()
    if row is None:
        return None
    return {"at": _iso(row.created_at), **json.loads(row.data)}


def run_operator(config: Config, once: bool = False) -> int:
    """`mc operator`: sweep once, or every ``operator.interval`` seconds until SIGINT/SIGTERM."""
    plugins = load_plugins(config)
    controller = Controller(config, hooks=plugins.hook, actor="operator")
    operator = Operator(controller, plugins.hook)
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            snapshot = operator.sweep()
            controller.flush_escalations()
            if once or stop["now"]:
                counts = ", ".join(f"{k} {v}" for k, v in snapshot["tickets"].items())
                print(f"health recorded at {snapshot['at']}: {counts}")
                return 0
            deadline = time.time() + config.operator.interval
            while not stop["now"] and time.time() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.time())))
            if stop["now"]:
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

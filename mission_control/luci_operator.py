"""The operator (`mc operator`, and a sweep every ``operator.interval`` inside `mc run`).

Each sweep records a health snapshot, then looks for weak completions among done tickets and
reopens them unless a plugin vetoes. Health is recorded even when every move is vetoed. A done
ticket is judged once per completion; a kill-switch veto leaves it to be judged again later.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

from mc_hooks.manager import load_plugins
from mission_control.config import Config
from mission_control.controller import Controller, short
from mission_control.effects import EffectHooks
from mission_control.store import health, queries
from mission_control.store.models import Ticket
from mission_control.store.transactions import write
from mission_control.store.views import when

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

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
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
        last = queries.latest_run(ticket.id)
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
        tickets = queries.unjudged_done_tickets(SWEEP_BATCH)
        judged = []
        for ticket in tickets:
            reason = self.weak_reason(ticket)
            if reason is None:
                judged.append(ticket.id)
                continue
            write(partial(self.decide, ticket, reason))
        if judged:
            write(lambda: queries.mark_operator_checked(judged))

    def decide(self, ticket: Ticket, reason: str) -> None:
        """In one transaction: ask the plugins, then reopen the ticket or record the veto.

        A ``before_operator_reopen`` veto settles this completion; a ``before_auto_action`` veto
        (e.g. the kill-switch) leaves the ticket to be judged again once it lifts.
        """
        current = queries.ticket_by_id(ticket.id)
        if current.status != "done" or current.operator_checked or current.done_sha != ticket.done_sha:
            return  # changed since we looked
        controller = self.controller
        veto = controller.hooks.before_auto_action(action="reopen", ticket=current, controller=controller)
        if veto:
            if self.logged.get(ticket.id) != veto:
                self.logged[ticket.id] = veto
                controller.record(ticket, "veto", f"reopen held: {veto}", kind="veto", actor=veto.plugin or "host")
            return
        queries.mark_operator_checked([ticket.id])
        veto = controller.hooks.before_operator_reopen(ticket=current, reason=reason, controller=controller)
        if veto:
            controller.record(
                ticket, "veto", f"{veto} (weak completion: {reason})", kind="veto", actor=veto.plugin or "host"
            )
            return
        controller.set_status(current, "todo", f"reopened: {short(reason)}")
        controller.comment(current, f"Reopened by the operator: {reason}.")


def failing_deliveries() -> list[dict[str, Any]]:
    """Effect-hook deliveries that failed and will be tried again (a notification a receiver refused),
    oldest first, with their times as ISO 8601."""
    from mission_control.effects import all_failing

    return [
        {**entry, "since": when(entry.get("since")), "retry_at": when(entry.get("retry_at"))} for entry in all_failing()
    ]


def health_report(config: Config) -> dict[str, Any]:
    """What `mc health` and the board's ``/api/health`` show: the latest snapshot (or one as of now), the
    spend live, the effect deliveries and the sync pass's calls that fail or wait."""
    from mission_control.sync import failing_now

    snapshot = latest_health() or live_health(config)  # none recorded yet: as of now
    snapshot["spend"] = spend()  # live, not as of the snapshot
    snapshot["spend_budget"] = spend_budget(config)
    snapshot["failing_deliveries"] = failing_deliveries()
    snapshot["sync_failing"] = [{**entry, "since": when(entry.get("since"))} for entry in failing_now()]
    return snapshot


def live_health(config: Config) -> dict[str, Any]:
    """A health snapshot as of now, not stored (for `mc health` before any was recorded)."""
    now = time.time()
    data = health.snapshot_data(now, lambda profile: config.workers.get(profile, config.workers["default"]).timeout)
    return {"at": when(now), **data}


def record_health(config: Config) -> dict[str, Any]:
    """Store and return a health snapshot: tickets by status, workers, last hour's deaths and
    verdicts, and tickets stuck in_progress past their worker timeout."""
    now = time.time()
    data = health.snapshot_data(now, lambda profile: config.workers.get(profile, config.workers["default"]).timeout)
    write(lambda: health.save_snapshot(now, data))
    return {"at": when(now), **data}


def spend(now: float | None = None) -> dict[str, Any]:
    """Agent spend (USD, as the agents' CLIs reported it) and tokens of worker and reviewer runs that
    ended in the last hour and the last day."""
    now = time.time() if now is None else now
    result: dict[str, Any] = {}
    for label, since in (("last_hour", now - 3600), ("last_day", now - 86400)):
        cost, inputs, outputs = health.spend_since(since)
        result[label] = {"cost_usd": round(cost, 6), "input_tokens": inputs, "output_tokens": outputs}
    return result


def spend_budget(config: Config, now: float | None = None) -> dict[str, Any] | None:
    """The circuit breaker's spend limit (when one is set and the breaker is on) with what was spent
    in its window: ``{"max_cost_usd", "window_seconds", "spent_usd"}``, or None."""
    settings = config.plugins.get("circuit_breaker", {})
    if not config.plugin_enabled("circuit_breaker") or settings.get("max_cost_usd") is None:
        return None
    window = float(settings.get("window_seconds", 600))
    now = time.time() if now is None else now
    spent = health.spend_since(now - window)[0]
    return {"max_cost_usd": float(settings["max_cost_usd"]), "window_seconds": window, "spent_usd": round(spent, 6)}


def latest_health() -> dict[str, Any] | None:
    """The most recent health snapshot, or None."""
    latest = health.latest_snapshot()
    return None if latest is None else {"at": when(latest[0]), **latest[1]}


def run_operator(config: Config, once: bool = False) -> int:
    """`mc operator`: sweep once, or every ``operator.interval`` seconds until SIGINT/SIGTERM."""
    plugins = load_plugins(config)
    controller = Controller(config, hooks=plugins.hook, actor="operator")
    effects = EffectHooks(config, plugins, lambda: Controller(config, hooks=plugins.hook, actor="operator"))
    effects.open()
    controller.effects = effects.deliver_now  # a command of its own: what it commits is delivered here
    operator = Operator(controller)
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            snapshot = operator.sweep()
            controller.deliver_effects()
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

"""What the board's pages show, as plain data: cards, a ticket's header and status line, health. Store
reads go through ``store/views.py`` (and the operator's health reads); nothing here writes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from mission_control import mc_orchestrator_flags as flags
from mission_control import mirrors, worktrees
from mission_control import ticket_runtime as rt
from mission_control.board.readable import readable
from mission_control.config import Config
from mission_control.luci_operator import latest_health, spend
from mission_control.store import health, views
from mission_control.store.models import STATUSES

LOG_TAIL_BYTES = 256 * 1024  # the most of a run's output a page or a log request shows
LIVE_TAIL_BYTES = 8 * 1024

# Markdown without raw HTML: ticket text is untrusted. markdown-it also refuses javascript:/data: links.
_markdown = MarkdownIt("commonmark", {"html": False})


def render_markdown(text: str) -> str:
    """Ticket text as HTML, with any HTML in it escaped (never passed through)."""
    return _markdown.render(text or "")


def ago(ts: float | None, now: float) -> str:
    """``17d ago``, ``3h 5m ago``, ``just now``."""
    return "never" if not ts else f"{span(now - ts)} ago" if now - ts >= 60 else "just now"


def span(seconds: float) -> str:
    """A duration as people read it: ``16d 18h``, ``3h 5m``, ``4m``, ``12s``."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{secs}s"


def next_action(status: str, attempt_running: int | None, owner: str, held: bool) -> str:
    """Who or what a ticket waits on."""
    if status == "todo":
        return "held by the kill-switch" if held else "waiting for a worker"
    if status == "in_progress":
        if attempt_running:
            return f"worker running (attempt {attempt_running})"
        return "retry held by the kill-switch" if held else "between attempts"
    if status == "in_review":
        return "in review"
    if status == "needs_input":
        return f"needs {owner}"
    return "closed"


def killswitch(config: Config) -> dict[str, Any] | None:
    """Who engaged the kill-switch, when and why (this root's file or the cluster flag), or None."""
    status = flags.killswitch_status(config.root)
    cluster = flags.cluster_killswitch()
    if cluster is not None:
        status = {**status, **{k: v for k, v in cluster.items() if v not in (None, "")}, "engaged": True}
    if not status.get("engaged"):
        return None
    since = status.get("since")
    return {**status, "since_text": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else None}


def board(config: Config, status: str | None, text: str | None) -> dict[str, Any]:
    """The board: a column per status (with counts) of ticket cards, and the kill-switch."""
    now = time.time()
    held = killswitch(config)
    columns: dict[str, list[dict[str, Any]]] = {name: [] for name in STATUSES}
    for card in views.board_cards(status, text):
        card["next_action"] = next_action(card["status"], card["attempt_running"], config.owner_title, bool(held))
        card["age"] = ago(card.pop("created_ts"), now)
        card["last_activity"] = ago(card.pop("last_ts"), now)
        columns[card["status"]].append(card)
    return {"columns": columns, "killswitch": held, "status": status or "", "text": text or ""}


def ticket(config: Config, key: str) -> dict[str, Any] | None:
    """A ticket's page: its details, header, status line, activity (newest first) and, while a
    worker or reviewer runs, the tail of its output. None when there is no such ticket."""
    found = views.ticket_by_key(key)
    if found is None:
        return None
    now = time.time()
    data = views.ticket_details(found, config.budget_of(found.max_cost_usd, found.worker))
    runs = views.runs(found)
    running = next((r for r in runs if r["kind"] == "worker" and r["outcome"] == "running"), None)
    reviewing = next(
        (r for r in runs if r["kind"] == "worker" and r["outcome"] == "done" and not r["applied_at"]), None
    )
    live = None
    if running is not None:
        live = {
            "what": f"worker, attempt {running['attempt']}",
            "text": readable(rt.read_tail(running["log_path"], LIVE_TAIL_BYTES)),
        }
    elif reviewing is not None and found.status == "in_review":
        path = views.run_output_path(found, reviewing["attempt"], "review") or ""
        text = readable(rt.read_tail(path, LIVE_TAIL_BYTES))
        live = {"what": f"reviewer, attempt {reviewing['attempt']}", "text": text}
    last = views.last_activity(found)
    started = found.created_at if running is None else _epoch(running["started_at"], found.created_at)
    data.update(
        next_action=next_action(
            found.status, running["attempt"] if running else None, config.owner_title, killswitch(config) is not None
        ),
        owner=config.owner_title,
        runtime="running" if running else "closed" if found.status == "done" else "idle",
        age=ago(found.created_at, now),
        uptime=span(now - started) if running else None,
        last_activity=ago(last, now),
        profile=found.worker or "default",
        body_html=render_markdown(found.body or ""),
        feed=list(reversed(data["events"])),
        live=live,
        runs=[{**r, "duration": _duration(r)} for r in runs],
        diff=done_diff(config, found, runs),
    )
    return data


DIFF_CHARS = 200_000  # of a done commit's diff shown on its page


def done_diff(config: Config, ticket: Any, runs: list[dict[str, Any]]) -> str | None:
    """What the ticket's done commit changed against the commit its run started from (``git diff --stat
    --patch``, no external diff or textconv drivers, at most :data:`DIFF_CHARS`), or None."""
    if not ticket.done_sha:
        return None
    base = next((r["base_sha"] for r in runs if r.get("done_sha") == ticket.done_sha and r.get("base_sha")), None)
    if base is None:
        return None
    args = ("diff", "--no-ext-diff", "--no-textconv", "--no-color", "--stat", "--patch", base, ticket.done_sha)
    repo = mirrors.local(config.root, ticket.repo)
    if repo and Path(repo).is_dir():
        result = worktrees.git(repo, *args, timeout=5)
    else:
        verified = worktrees.verified_path(config.root, ticket.key)
        if not verified.is_dir():
            return None
        result = worktrees.own_git(verified, *args)
    if result.returncode != 0:
        return None
    text = result.stdout
    return text if len(text) <= DIFF_CHARS else text[:DIFF_CHARS] + f"\n… ({len(text) - DIFF_CHARS} more characters)"


def _epoch(iso: str | None, default: float) -> float:
    return datetime.fromisoformat(iso).timestamp() if iso else default


def _duration(run: dict[str, Any]) -> str | None:
    if not run.get("started_at"):
        return None
    start = _epoch(run["started_at"], 0)
    end = _epoch(run["ended_at"], time.time()) if run.get("ended_at") else time.time()
    return span(end - start)


def run_output(key: str, attempt: int, kind: str) -> str | None:
    """The tail of a run's output, found through MC's records of (ticket, attempt), or None."""
    found = views.ticket_by_key(key)
    path = views.run_output_path(found, attempt, kind) if found is not None else None
    return None if path is None else rt.read_tail(path, LOG_TAIL_BYTES)


def health_page() -> dict[str, Any]:
    """The latest health snapshot, recent ones (deaths and verdicts over time), spend, controllers."""
    history = [{"at": views.when(at), **snapshot} for at, snapshot in health.recent_snapshots(24)]
    return {"latest": latest_health(), "history": history, "spend": spend(), "controllers": views.controllers()}

"""`mc ticket …` and `mc review record`: adding, listing, showing and changing tickets by hand, through
read views and facade methods only."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mission_control import worktrees
from mission_control.cli_support import (
    UsageError,
    emit_json,
    manual,
    open_store,
    refuse_inside_a_run,
    shown,
    ticket_by_key,
    user,
    valid_sha,
)
from mission_control.config import Config
from mission_control.controller import Controller, short
from mission_control.store import views
from mission_control.store.connection import notify_controllers
from mission_control.store.models import Ticket
from mission_control.store.transactions import write


def _ticket_fields(
    config: Config, title: Any, body: Any, repo: Any, worker: Any, branch: Any = None, budget: Any = None
) -> dict[str, Any]:
    if not isinstance(title, str) or not title.strip():
        raise UsageError("title: expected a non-empty string")
    if body is not None and not isinstance(body, str):
        raise UsageError("body: expected a string")
    for name, text in (("title", title), ("body", body or "")):
        if "\x00" in text:  # PostgreSQL cannot store it, and no tracker needs it
            raise UsageError(f"{name}: expected text without NUL characters")
    worker = worker or "default"
    if not isinstance(worker, str) or worker not in config.workers:
        raise UsageError(
            f"worker: expected one of the profiles in {config.file} ({', '.join(config.workers)}), got {worker!r}"
        )
    fields: dict[str, Any] = {"title": title, "body": body or "", "worker": worker}
    if repo is not None:
        if not isinstance(repo, str) or not Path(repo).expanduser().is_dir():
            raise UsageError(f"repo: expected an existing directory, got {repo!r}")
        fields["repo"] = str(Path(repo).expanduser().resolve())
        if worktrees.head(fields["repo"]) is None:
            raise UsageError(f"repo: expected a git repository with a commit (its runs get a worktree), got {repo!r}")
    if branch is not None:
        valid = isinstance(branch, str) and not branch.startswith("-")
        if not valid or worktrees.git(".", "check-ref-format", "--branch", branch).returncode != 0:
            raise UsageError(f"branch: expected a valid git branch name, got {branch!r}")
        fields["branch"] = branch
    if budget is not None:
        fields["max_cost_usd"] = _budget(budget)
    return fields


def _budget(value: Any) -> float:
    """A spend budget given by a person: a finite amount of US dollars above 0."""
    try:
        amount = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        amount = math.nan
    if not math.isfinite(amount) or amount <= 0:
        raise UsageError(f"max_cost_usd: expected an amount of US dollars above 0, got {value!r}")
    return amount


def cmd_ticket_add(args: argparse.Namespace, config: Config) -> int:
    fields = _ticket_fields(config, args.title, args.body, args.repo, args.worker, args.branch, args.max_cost_usd)
    open_store(config)
    controller = manual(config)
    ticket = write(lambda: controller.add_ticket(fields, f"worker profile {fields['worker']}"))
    notify_controllers()
    print(ticket.key)
    return 0


MAX_IMPORT_LINE = 1 << 20  # bytes: a ticket's JSON line, body included


def _json_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of ``path``, read a line at a time, each at most
    :data:`MAX_IMPORT_LINE` bytes (UsageError otherwise, or when the file cannot be read)."""
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(iter(lambda: handle.readline(MAX_IMPORT_LINE + 1), b""), start=1):
                if len(raw) > MAX_IMPORT_LINE:
                    raise UsageError(f"{path}:{number}: longer than {MAX_IMPORT_LINE} bytes; nothing was added")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UsageError(f"{path}:{number}: not UTF-8 ({exc.reason}); nothing was added") from None
                if line.strip():
                    yield number, line
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def cmd_ticket_import(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.file)
    allowed = {"title", "body", "repo", "worker", "branch", "max_cost_usd"}
    rows = []
    for number, line in _json_lines(path):
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: invalid JSON ({getattr(exc, 'msg', exc)}); nothing was added") from None
        except RecursionError:
            raise UsageError(f"{path}:{number}: JSON nested too deeply; nothing was added") from None
        if not isinstance(item, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object; nothing was added")
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise UsageError(
                f"{path}:{number}: unknown field {unknown[0]!r} (expected {', '.join(sorted(allowed))}); "
                "nothing was added"
            )
        try:
            rows.append(
                _ticket_fields(
                    config,
                    item.get("title"),
                    item.get("body"),
                    item.get("repo"),
                    item.get("worker"),
                    item.get("branch"),
                    item.get("max_cost_usd"),
                )
            )
        except UsageError as exc:
            raise UsageError(f"{path}:{number}: {exc}; nothing was added") from None
    open_store(config)
    controller = manual(config)

    write(lambda: [controller.add_ticket(fields, f"imported from {path.name}") for fields in rows])
    notify_controllers()
    print(f"added {len(rows)} tickets")
    return 0


def cmd_ticket_list(args: argparse.Namespace, config: Config) -> int:
    open_store(config)
    tickets = views.tickets(args.status)
    if args.json:
        emit_json([views.ticket_summary(t) for t in tickets])
        return 0
    for t in tickets:
        title = " ".join(t.title.split())
        print(f"{t.key:<10} {t.status:<12} cycles={t.review_cycles} deaths={t.death_count}  {shown(title[:80])}")
    return 0


def _run_line(run: dict[str, Any]) -> str:
    cost = f"${run['cost_usd']:.4f}" if run["cost_usd"] is not None else "$-"
    tokens = ""
    if run["input_tokens"] is not None:
        tokens = f" · tokens in {run['input_tokens']} out {run['output_tokens'] or 0}"
    what = run["outcome"] + (f" {run['done_sha'][:12]}" if run["outcome"] == "done" and run["done_sha"] else "")
    reason = f": {short(run['reason'], 120)}" if run["reason"] else ""
    return f"  {run['attempt']:>2} {run['kind']:<6} {what}{reason} · {cost}{tokens}"


def timeline(ticket: Ticket) -> list[str]:
    """The ticket's activity feed, oldest first, one line each."""
    return [f"{datetime.fromtimestamp(ts).strftime('%H:%M:%S')}  {text}" for ts, text in views.activity(ticket)]


def cmd_ticket_show(args: argparse.Namespace, config: Config) -> int:
    open_store(config)
    controller = manual(config)
    ticket = ticket_by_key(controller, args.key)
    if args.json:
        emit_json(views.ticket_details(ticket, controller.budget_of(ticket)))
        return 0
    print(f"{ticket.key}  {shown(ticket.title)}")
    print(
        f"status {ticket.status} · review cycles {ticket.review_cycles} · deaths {ticket.death_count} · "
        f"attempts {ticket.attempts} · done_sha {ticket.done_sha or '-'} · worker {ticket.worker}"
    )
    print(f"branch {ticket.branch or '-'} · worktree {ticket.worktree or '-'} · repo {ticket.repo or '-'}")
    if ticket.body:
        print()
        print(shown(ticket.body, keep_lines=True))
    ran = views.runs(ticket)
    budget = controller.budget_of(ticket)
    if ran or budget is not None:
        spent = sum(r["cost_usd"] or 0 for r in ran)
        print()
        print(f"runs (spent ${spent:.4f}" + (f" of its ${budget:.2f} budget):" if budget is not None else "):"))
        for run in ran:
            print(shown(_run_line(run)))
    print()
    for line in timeline(ticket):
        print(shown(line))
    return 0


def _a_persons_change(config: Config, key: str, what: str) -> tuple[Controller, Ticket]:
    """The facade driven by the person at the terminal and the ticket they name, for a change only a
    person may make (refused from inside a run or a controller)."""
    open_store(config)
    refuse_inside_a_run(what)
    controller = manual(config)
    return controller, ticket_by_key(controller, key)


def cmd_ticket_set(args: argparse.Namespace, config: Config) -> int:
    controller, ticket = _a_persons_change(config, args.key, "ticket set")
    fields: dict[str, Any] = {}
    if args.done_sha:
        fields["done_sha"] = valid_sha(args.done_sha)
    if args.max_cost_usd is not None:
        fields["max_cost_usd"] = _budget(args.max_cost_usd)
    if args.status == "todo":
        write(lambda: controller.requeue_by_hand(ticket, "set by hand", **fields))
    else:
        write(lambda: controller.set_status(ticket, args.status, "set by hand", **fields))
    notify_controllers()
    print(f"{ticket.key} {ticket.status}")
    return 0


def cmd_ticket_comment(args: argparse.Namespace, config: Config) -> int:
    open_store(config)
    controller = manual(config)
    ticket = ticket_by_key(controller, args.key)
    write(lambda: controller.comment(ticket, args.text, author=user()))
    print(f"{ticket.key} commented")
    return 0


# -- reviews -----------------------------------------------------------------------------------


def cmd_review_record(args: argparse.Namespace, config: Config) -> int:
    controller, ticket = _a_persons_change(config, args.key, "review record")
    sha = valid_sha(args.sha)
    reviewer = args.reviewer or f"mc:{user()}"
    write(lambda: controller.record_review(ticket, sha, args.verdict, args.reason or [], args.gap or [], reviewer))
    notify_controllers()
    print(f"{ticket.key} {args.verdict} {sha}")
    return 0

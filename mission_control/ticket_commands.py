"""`mc ticket …` and `mc review record`: argument handling and output. Reads go through the read views;
every change is a person's action in :mod:`mission_control.service`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mission_control.cli_support import (
    UsageError,
    emit_json,
    manual,
    open_store,
    refuse_inside_a_run,
    shown,
    ticket_by_key,
    user,
)
from mission_control.config import Config
from mission_control.controller import short
from mission_control.service import Refused, Service, sha_of
from mission_control.store import views
from mission_control.store.models import Ticket


def person(config: Config) -> Service:
    """The service, acting for the person at the terminal: a person's change is refused from inside a
    run or a controller (by the process tree)."""
    open_store(config)
    return Service(config, actor=f"mc:{user()}", guard=refuse_inside_a_run)


def cmd_ticket_add(args: argparse.Namespace, config: Config) -> int:
    values = {
        "title": args.title, "body": args.body, "repo": args.repo, "worker": args.worker,
        "branch": args.branch, "max_cost_usd": args.max_cost_usd,
    }  # fmt: skip
    service = person(config)
    print(service.add({k: v for k, v in values.items() if v is not None}).key)
    return 0


MAX_IMPORT_LINE = 16 << 20  # bytes: a ticket's JSON line, body included


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
    service = person(config)
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
        try:
            rows.append(service.ticket_fields(item))
        except Refused as exc:
            raise UsageError(f"{path}:{number}: {exc}; nothing was added") from None
    service.add_many(rows, f"imported from {path.name}")
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
    if ticket.source:
        print(f"from {ticket.source}" + (f" · {shown(ticket.source_url)}" if ticket.source_url else ""))
    delivered = views.delivery(ticket)
    if delivered:
        print(f"delivered {delivered['sha'][:12]} · {delivered['state']} · {shown(delivered['url'])}")
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


def cmd_ticket_set(args: argparse.Namespace, config: Config) -> int:
    ticket = person(config).set_status(args.key, args.status, done_sha=args.done_sha, max_cost_usd=args.max_cost_usd)
    print(f"{ticket.key} {args.status}")
    return 0


def cmd_ticket_comment(args: argparse.Namespace, config: Config) -> int:
    ticket = person(config).comment(args.key, args.text)
    print(f"{ticket.key} commented")
    return 0


def cmd_ticket_answer(args: argparse.Namespace, config: Config) -> int:
    ticket = person(config).answer(args.key, args.text)
    print(f"{ticket.key} answered: back to todo, to its worker's session with your answer")
    return 0


def cmd_ticket_edit(args: argparse.Namespace, config: Config) -> int:
    ticket = person(config).edit(args.key, title=args.title, body=args.body)
    print(f"{ticket.key} edited")
    return 0


def cmd_ticket_stop(args: argparse.Namespace, config: Config) -> int:
    ticket = person(config).stop(args.key)
    print(f"{ticket.key} stopped: its run (if any) ends now; `mc ticket answer` or `ticket set --status todo` resumes")
    return 0


# -- reviews -----------------------------------------------------------------------------------


def cmd_review_record(args: argparse.Namespace, config: Config) -> int:
    service = person(config)
    reviewer = args.reviewer or f"mc:{user()}"
    ticket = service.record_verdict(args.key, args.sha, args.verdict, args.reason or [], args.gap or [], reviewer)
    print(f"{ticket.key} {args.verdict} {sha_of(args.sha, '--sha')}")
    return 0

"""The ``mc`` command. Results go to stdout, diagnostics to stderr.

A user mistake (bad config, bad argument, unknown ticket) prints one line ``mc: ...`` on stderr
and exits with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import peewee as pw

from mc_hooks.config import DEFAULT_CONFIG_TEXT, Config, ConfigError, config_path, load_config
from mission_control import mc_orchestrator_flags as flags
from mission_control import worktrees
from mission_control.controller import Controller, short
from mission_control.models import (
    STATUSES,
    VERDICTS,
    Comment,
    Escalation,
    Event,
    ShadowReview,
    StoreError,
    Ticket,
    WorkerRun,
    init_schema,
    new_ticket,
    notify_controllers,
    open_database,
    write,
)

SHA = re.compile(r"[0-9a-fA-F]{7,40}")
MANUAL_STATUSES = ("todo", "done", "needs_input")


class UsageError(Exception):
    """A mistake in what the user typed; one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def when(ts: float | None) -> str | None:
    """An epoch timestamp as local ISO 8601, for people and JSON."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "someone"


def _open(config: Config, create: bool = False) -> None:
    open_database(config.database, create=create)


def _manual(config: Config) -> Controller:
    return Controller(config, actor=f"mc:{_user()}", manual=True)


def _ticket(controller: Controller, key: str) -> Ticket:
    ticket = controller.ticket(key)
    if ticket is None:
        raise UsageError(f"no ticket {key!r} (see `mc ticket list`)")
    return ticket


def _emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


# -- init --------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    if not path.exists():
        if not path.parent.is_dir():
            raise UsageError(f"{path}: the directory {path.parent} does not exist")
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(DEFAULT_CONFIG_TEXT)
        except OSError as exc:
            raise UsageError(f"{path}: cannot write the default config: {exc.strerror}") from None
        print(f"wrote the default config to {path}", file=sys.stderr)
    config = load_config(path)
    _open(config, create=True)
    added = init_schema()
    where = config.database if config.is_sqlite else config.database.split("@")[-1]
    if added:
        print(f"migrated {where}: {', '.join(added)}")
    else:
        print(f"database ready: {where}")
    return 0


# -- tickets -----------------------------------------------------------------------------------


def _ticket_fields(config: Config, title: Any, body: Any, repo: Any, worker: Any, branch: Any = None) -> dict[str, Any]:
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
    return fields


def cmd_ticket_add(args: argparse.Namespace, config: Config) -> int:
    fields = _ticket_fields(config, args.title, args.body, args.repo, args.worker, args.branch)
    _open(config)
    controller = _manual(config)

    def add() -> Ticket:
        ticket = new_ticket(config.ticket_prefix, **fields)
        controller.record(ticket, "created", f"worker profile {ticket.worker}")
        return ticket

    ticket = write(add)
    notify_controllers()
    print(ticket.key)
    return 0


def cmd_ticket_import(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read: {exc}") from None
    allowed = {"title", "body", "repo", "worker", "branch"}
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: invalid JSON ({exc.msg}); nothing was added") from None
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
                )
            )
        except UsageError as exc:
            raise UsageError(f"{path}:{number}: {exc}; nothing was added") from None
    _open(config)
    controller = _manual(config)

    def add_all() -> None:
        for fields in rows:
            ticket = new_ticket(config.ticket_prefix, **fields)
            controller.record(ticket, "created", f"imported from {path.name}")

    write(add_all)
    notify_controllers()
    print(f"added {len(rows)} tickets")
    return 0


def _summary(ticket: Ticket) -> dict[str, Any]:
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


def cmd_ticket_list(args: argparse.Namespace, config: Config) -> int:
    _open(config)
    query = Ticket.select().order_by(Ticket.id)
    if args.status:
        query = query.where(Ticket.status == args.status)
    tickets = list(query)
    if args.json:
        _emit_json([_summary(t) for t in tickets])
        return 0
    for t in tickets:
        title = " ".join(t.title.split())
        print(f"{t.key:<10} {t.status:<12} cycles={t.review_cycles} deaths={t.death_count}  {title[:80]}")
    return 0


def ticket_details(ticket: Ticket) -> dict[str, Any]:
    """Everything known about a ticket, as JSON-ready data."""
    data = _summary(ticket)
    data["body"] = ticket.body
    data["comments"] = [
        {"author": c.author, "body": c.body, "created_at": when(c.created_at)}
        for c in Comment.select().where(Comment.ticket == ticket.id).order_by(Comment.id)
    ]
    data["events"] = [
        {"action": e.action, "actor": e.actor, "kind": e.kind, "detail": e.detail, "created_at": when(e.created_at)}
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


def _run_line(run: dict[str, Any]) -> str:
    cost = f"${run['cost_usd']:.4f}" if run["cost_usd"] is not None else "$-"
    tokens = ""
    if run["input_tokens"] is not None:
        tokens = f" · tokens in {run['input_tokens']} out {run['output_tokens'] or 0}"
    what = run["outcome"] + (f" {run['done_sha'][:12]}" if run["outcome"] == "done" and run["done_sha"] else "")
    reason = f": {short(run['reason'], 120)}" if run["reason"] else ""
    return f"  {run['attempt']:>2} {run['kind']:<6} {what}{reason} · {cost}{tokens}"


def timeline(ticket: Ticket) -> list[str]:
    """The ticket's events and comments, oldest first, one line each (an activity feed)."""
    rows: list[tuple[float, int, str]] = []
    for e in Event.select().where(Event.ticket == ticket.id):
        rows.append((e.created_at, 0, f"{e.actor}: {e.action} {e.detail}".rstrip()))
    for c in Comment.select().where(Comment.ticket == ticket.id):
        body = " ".join(c.body.split())
        rows.append((c.created_at, 1, f"{c.author} commented: {body[:300]}"))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [f"{datetime.fromtimestamp(ts).strftime('%H:%M:%S')}  {text}" for ts, _, text in rows]


def cmd_ticket_show(args: argparse.Namespace, config: Config) -> int:
    _open(config)
    ticket = _ticket(_manual(config), args.key)
    if args.json:
        _emit_json(ticket_details(ticket))
        return 0
    print(f"{ticket.key}  {ticket.title}")
    print(
        f"status {ticket.status} · review cycles {ticket.review_cycles} · deaths {ticket.death_count} · "
        f"attempts {ticket.attempts} · done_sha {ticket.done_sha or '-'} · worker {ticket.worker}"
    )
    print(f"branch {ticket.branch or '-'} · worktree {ticket.worktree or '-'} · repo {ticket.repo or '-'}")
    if ticket.body:
        print()
        print(ticket.body)
    ran = runs(ticket)
    if ran:
        spent = sum(r["cost_usd"] or 0 for r in ran)
        print()
        print(f"runs (spent ${spent:.4f}):")
        for run in ran:
            print(_run_line(run))
    print()
    for line in timeline(ticket):
        print(line)
    return 0


def _valid_sha(value: str) -> str:
    if not SHA.fullmatch(value):
        raise UsageError(f"--sha/--done-sha: expected 7 to 40 hex digits, got {value!r}")
    return value.lower()


def cmd_ticket_set(args: argparse.Namespace, config: Config) -> int:
    _open(config)
    controller = _manual(config)
    ticket = _ticket(controller, args.key)
    fields: dict[str, Any] = {}
    if args.done_sha:
        fields["done_sha"] = _valid_sha(args.done_sha)
    if args.status == "todo" and ticket.status == "needs_input":
        fields.update(review_cycles=0, death_count=0)  # a person re-queued it: a fresh budget
    write(lambda: controller.set_status(ticket, args.status, "set by hand", **fields))
    notify_controllers()
    print(f"{ticket.key} {ticket.status}")
    return 0


def cmd_ticket_comment(args: argparse.Namespace, config: Config) -> int:
    _open(config)
    controller = _manual(config)
    ticket = _ticket(controller, args.key)
    write(lambda: controller.comment(ticket, args.text, author=_user()))
    print(f"{ticket.key} commented")
    return 0


# -- reviews -----------------------------------------------------------------------------------


def cmd_review_record(args: argparse.Namespace, config: Config) -> int:
    if os.environ.get("MC_TICKET"):
        raise UsageError("review record: refused inside a worker (MC_TICKET is set): a worker cannot review itself")
    _open(config)
    controller = _manual(config)
    ticket = _ticket(controller, args.key)
    sha = _valid_sha(args.sha)

    def record() -> None:
        ShadowReview.create(
            ticket=ticket.id,
            done_sha=sha,
            verdict=args.verdict,
            reasons_json=json.dumps(args.reason or []),
            gaps_json=json.dumps(args.gap or []),
            reviewer=args.reviewer or f"mc:{_user()}",
        )
        controller.record(ticket, "review", f"{args.verdict} for {sha[:12]} recorded by hand", kind="report")

    write(record)
    notify_controllers()
    print(f"{ticket.key} {args.verdict} {sha}")
    return 0


# -- kill-switch -------------------------------------------------------------------------------


def _switch(config: Config, change: Callable[[], object], what: str, file_only: Callable[[], object]) -> object:
    """Flip the kill-switch (file and cluster flag) while holding the store's write lock, with its
    audit event, so every automatic action commits either before the change or after it."""
    try:
        _open(config)
    except StoreError:
        return file_only()  # no store yet: nothing automatic can be running against it
    controller = _manual(config)

    def flip() -> object:
        result = change()
        controller.record(None, "killswitch", what)
        return result

    result = write(flip)
    notify_controllers()
    return result


def cmd_killswitch(args: argparse.Namespace, config: Config) -> int:
    root = config.root
    if args.state == "on":
        reason = args.reason or ""
        info = {"who": _user(), "host": socket.gethostname(), "since": time.time(), "reason": reason}

        def engage() -> None:
            flags.engage_killswitch(root, who=info["who"], reason=reason)
            flags.set_cluster_killswitch(info)

        _switch(
            config,
            engage,
            "engaged" + (f": {reason}" if reason else ""),
            file_only=lambda: flags.engage_killswitch(root, who=info["who"], reason=reason),
        )
        print("kill-switch engaged: no automatic dispatch, review, harvest or reopen until `mc killswitch off`")
        return 0
    if args.state == "off":

        def release() -> bool:
            was_file = flags.release_killswitch(root)
            was_flag = flags.cluster_killswitch() is not None
            flags.set_cluster_killswitch(None)
            return was_file or was_flag

        was = _switch(config, release, "released", file_only=lambda: flags.release_killswitch(root))
        print("kill-switch released" if was else "kill-switch was not engaged")
        if flags.killswitch_active(root):
            print("mc: still engaged through MC_KILLSWITCH in this environment", file=sys.stderr)
        return 0
    status = flags.killswitch_status(root)
    try:
        _open(config)
        cluster = flags.cluster_killswitch()
    except StoreError:
        cluster = None
    if cluster is not None:
        status.update(engaged=True, cluster=True, source=status.get("source") or "the store (cluster-wide)")
        for key in ("who", "host", "reason", "since"):
            if cluster.get(key) not in (None, ""):
                status[key] = cluster[key]
    if args.json:
        _emit_json({**status, "since": when(status.get("since"))})
        return 0
    if status["engaged"]:
        parts = [
            f"since {when(status['since'])}" if status.get("since") else None,
            f"by {status['who']}" if status.get("who") else None,
            f"on {status['host']}" if status.get("host") else None,
            f"({status['reason']})" if status.get("reason") else None,
            f"via {status['source']}" if status.get("source") else None,
        ]
        print("engaged " + " ".join(p for p in parts if p))
    else:
        print("released")
    return 0


# -- plugins -----------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace, config: Config) -> int:
    from mc_hooks.manager import load_plugins

    host = load_plugins(config)
    if args.json:
        _emit_json(
            {
                "plugins": [{"name": i.name, "source": i.source, "hooks": i.hooks} for i in host.infos],
                "call_order": {hook: host.call_order(hook) for hook in sorted(vars(host.hook))},
            }
        )
        return 0
    for info in host.infos:
        print(f"{info.name:<20} {info.source}")
        print(f"{'':<20} hooks: {', '.join(info.hooks) or '(none)'}")
    print()
    print("call order:")
    for hook in sorted(vars(host.hook)):
        print(f"  {hook}: {', '.join(host.call_order(hook)) or '(none)'}")
    return 0


# -- the loop ----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from mission_control.doctor import missing_executables
    from mission_control.mc_pickup import run_controller

    missing = missing_executables(config)
    if missing:
        raise UsageError(missing[0])
    _open(config)
    return run_controller(config, until_idle=args.until_idle, quiet=args.quiet)


def cmd_doctor(args: argparse.Namespace) -> int:
    from mission_control.doctor import run_checks

    return run_checks(args.config)


def cmd_operator(args: argparse.Namespace, config: Config) -> int:
    from mission_control.luci_operator import run_operator

    _open(config)
    return run_operator(config, once=args.once)


def cmd_health(args: argparse.Namespace, config: Config) -> int:
    from mission_control.luci_operator import latest_health, spend

    _open(config)
    snapshot = latest_health()
    if snapshot is None:
        raise UsageError("no health snapshot yet (run `mc operator --once` or `mc run`)")
    snapshot["spend"] = spend()  # live, not as of the snapshot
    if args.json:
        _emit_json(snapshot)
        return 0
    print(f"health at {snapshot['at']}")
    print("  tickets: " + ", ".join(f"{k} {v}" for k, v in snapshot["tickets"].items()))
    print(f"  workers running: {snapshot['workers_running']}")
    print(
        f"  last hour: {snapshot['deaths_last_hour']} deaths, verdicts "
        + ", ".join(f"{k} {v}" for k, v in snapshot["verdicts_last_hour"].items())
    )
    print(f"  stuck: {', '.join(snapshot['stuck']) or 'none'}")
    for label, row in snapshot["spend"].items():
        print(
            f"  spend {label.replace('_', ' ')}: ${row['cost_usd']:.4f} "
            f"(tokens in {row['input_tokens']}, out {row['output_tokens']})"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mission_control.demo import run_demo

    return run_demo(keep=args.keep)


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mc", description="Mission Control: run AI coding agents on a ticket board.")
    parser.add_argument("--config", help="config file (default: $MC_CONFIG or ./config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("init", help="write the default config.yaml if missing; create or migrate the database")
    sub.add_parser("demo", help="run every path once in a temporary MC root").add_argument(
        "--keep", action="store_true", help="keep the temporary MC root and print where it is"
    )

    ticket = sub.add_parser("ticket", help="add, list, show and change tickets").add_subparsers(
        dest="ticket_command", required=True, parser_class=_Parser
    )
    add = ticket.add_parser("add", help="add a ticket; prints its key")
    add.add_argument("title")
    add.add_argument("--body", default="")
    add.add_argument("--repo")
    add.add_argument("--worker", help="worker profile (default: default)")
    add.add_argument("--branch", help="the branch the worker's commit must be on")
    imp = ticket.add_parser("import", help="add tickets from a JSON Lines file, all or none")
    imp.add_argument("file")
    lst = ticket.add_parser("list", help="list tickets")
    lst.add_argument("--status", choices=STATUSES)
    lst.add_argument("--json", action="store_true")
    show = ticket.add_parser("show", help="a ticket with its timeline")
    show.add_argument("key")
    show.add_argument("--json", action="store_true")
    tset = ticket.add_parser("set", help="change a ticket's status by hand")
    tset.add_argument("key")
    # in_progress and in_review belong to the loop (they mean a process or review is in flight)
    tset.add_argument("--status", choices=MANUAL_STATUSES, required=True)
    tset.add_argument("--done-sha")
    com = ticket.add_parser("comment", help="comment on a ticket")
    com.add_argument("key")
    com.add_argument("text")

    review = sub.add_parser("review", help="record a review verdict from outside MC").add_subparsers(
        dest="review_command", required=True, parser_class=_Parser
    )
    rec = review.add_parser("record")
    rec.add_argument("key")
    rec.add_argument("--sha", required=True)
    rec.add_argument("--verdict", choices=VERDICTS, required=True)
    rec.add_argument("--reason", action="append")
    rec.add_argument("--gap", action="append")
    rec.add_argument("--reviewer")

    kill = sub.add_parser("killswitch", help="engage, release or show the kill-switch")
    kill.add_argument("state", choices=("on", "off", "status"))
    kill.add_argument("--reason")
    kill.add_argument("--json", action="store_true")

    sub.add_parser("plugins", help="registered plugins, their sources and hooks").add_argument(
        "--json", action="store_true"
    )
    run = sub.add_parser("run", help="the controller: pickup, harvest, reviews, operator sweeps")
    run.add_argument("--until-idle", action="store_true", help="exit 0 once nothing more can happen unaided")
    run.add_argument("--quiet", action="store_true", help="no line per decision on stderr")
    sub.add_parser("doctor", help="check config, database, agent CLIs, git and the worktree root; exit 1 on a failure")
    op = sub.add_parser("operator", help="record health and reopen weak completions")
    op.add_argument("--once", action="store_true")
    sub.add_parser("health", help="the latest health snapshot").add_argument("--json", action="store_true")
    return parser


COMMANDS = {
    ("ticket", "add"): cmd_ticket_add,
    ("ticket", "import"): cmd_ticket_import,
    ("ticket", "list"): cmd_ticket_list,
    ("ticket", "show"): cmd_ticket_show,
    ("ticket", "set"): cmd_ticket_set,
    ("ticket", "comment"): cmd_ticket_comment,
    ("review", "record"): cmd_review_record,
    ("killswitch", None): cmd_killswitch,
    ("plugins", None): cmd_plugins,
    ("run", None): cmd_run,
    ("operator", None): cmd_operator,
    ("health", None): cmd_health,
}


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "init":
        return cmd_init(args)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "doctor":
        return cmd_doctor(args)
    sub = getattr(args, f"{args.command}_command", None)
    config = load_config(args.config)
    return COMMANDS[(args.command, sub)](args, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mc`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except (ConfigError, StoreError, UsageError) as exc:
        print(f"mc: {exc}", file=sys.stderr)
        return 2
    except pw.DatabaseError as exc:  # not the user's mistake (an outage, say), but still one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mc: database error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

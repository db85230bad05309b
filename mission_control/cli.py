"""The ``mc`` command. Results go to stdout, diagnostics to stderr.

A user mistake (bad config, bad argument, unknown ticket) prints one line ``mc: ...`` on stderr
and exits with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

import peewee as pw

from mc_hooks.settings import ConfigError
from mission_control import mc_orchestrator_flags as flags
from mission_control.cli_support import Parser, UsageError, emit_json, open_store, refuse_inside_a_run, user
from mission_control.config import DEFAULT_CONFIG_TEXT, Config, config_path, load_config
from mission_control.service import Refused, Service
from mission_control.store import StoreError, database_problem
from mission_control.store.migration import init_schema
from mission_control.store.models import STATUSES, VERDICTS
from mission_control.store.views import when
from mission_control.ticket_commands import (
    cmd_review_record,
    cmd_ticket_add,
    cmd_ticket_answer,
    cmd_ticket_comment,
    cmd_ticket_edit,
    cmd_ticket_import,
    cmd_ticket_list,
    cmd_ticket_set,
    cmd_ticket_show,
    cmd_ticket_stop,
)

MANUAL_STATUSES = ("todo", "done", "needs_input")


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
    open_store(config, create=True)
    added = init_schema()
    where = config.database if config.is_sqlite else config.database.split("@")[-1]
    if added:
        print(f"migrated {where}: {', '.join(added)}")
    else:
        print(f"database ready: {where}")
    return 0


# -- kill-switch -------------------------------------------------------------------------------


def cmd_killswitch(args: argparse.Namespace, config: Config) -> int:
    root = config.root
    if args.state in ("on", "off"):
        try:
            open_store(config)
            store = True
        except StoreError:
            store = False  # no store yet: the file is all there is (nothing automatic can run against it)
        service = Service(config, actor=f"mc:{user()}", guard=refuse_inside_a_run)
    if args.state == "on":
        try:
            service.killswitch_on(args.reason or "", stop_runs=args.stop_runs, store=store)
        except pw.DatabaseError as exc:
            print(
                f"mc: engaged on this root ({flags.killswitch_path(root)}), but the store could not be told "
                f"({database_problem(exc)}), so other hosts go on; run `mc killswitch on` again",
                file=sys.stderr,
            )
        stopped = "; runs under way are stopped (back to todo)" if args.stop_runs else ""
        print(
            f"kill-switch engaged: no automatic dispatch, review, harvest or reopen until `mc killswitch off`{stopped}"
        )
        return 0
    if args.state == "off":
        was = service.killswitch_off(store=store)
        print("kill-switch released" if was else "kill-switch was not engaged")
        if flags.killswitch_active(root):
            print("mc: still engaged through MC_KILLSWITCH in this environment", file=sys.stderr)
        return 0
    status = flags.killswitch_status(root)
    try:
        open_store(config)
        cluster = flags.cluster_killswitch()
    except StoreError:
        cluster = None
    if cluster is not None:
        status.update(engaged=True, cluster=True, source=status.get("source") or "the store (cluster-wide)")
        for key in ("who", "host", "reason", "since"):
            if cluster.get(key) not in (None, ""):
                status[key] = cluster[key]
    if args.json:
        emit_json({**status, "since": when(status.get("since"))})
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
        emit_json(
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
    open_store(config)
    return run_controller(config, until_idle=args.until_idle, quiet=args.quiet)


def cmd_doctor(args: argparse.Namespace) -> int:
    from mission_control.doctor import run_checks

    return run_checks(args.config)


def cmd_operator(args: argparse.Namespace, config: Config) -> int:
    from mission_control.luci_operator import run_operator

    open_store(config)
    return run_operator(config, once=args.once)


def cmd_health(args: argparse.Namespace, config: Config) -> int:
    from mission_control.luci_operator import health_report

    open_store(config)
    snapshot = health_report(config)
    if args.json:
        emit_json(snapshot)
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
    for entry in snapshot["failing_deliveries"]:
        ticket = f" for {entry['ticket_key']}" if entry.get("ticket_key") else ""
        print(
            f"  failing: {entry['plugin']} {entry['hook']}{ticket} since {entry['since']}, {entry['attempts']} "
            f"attempt(s), next at {entry['retry_at']}: {entry['error']}"
        )
    for entry in snapshot["sync_failing"]:
        ticket = f" for {entry['ticket']}" if entry.get("ticket") else ""
        tries = " (waiting, not a failure)" if entry.get("waiting") else f", {entry['attempts']} attempt(s)"
        print(f"  sync: {entry['plugin']} {entry['hook']}{ticket} since {entry['since']}{tries}: {entry['error']}")
    budget = snapshot["spend_budget"]
    if budget is not None:
        print(
            f"  circuit breaker budget: ${budget['spent_usd']:.4f} of ${budget['max_cost_usd']:.2f} spent in the last "
            f"{budget['window_seconds'] / 60:g} minutes"
        )
    return 0


def cmd_sync(args: argparse.Namespace, config: Config) -> int:
    """`mc sync`: one pass of the sources and deliveries (see ``mission_control.sync``); what it did on
    stdout, what failed on stderr (exit 1)."""
    from mc_hooks.manager import load_plugins
    from mission_control.controller import Controller
    from mission_control.effects import EffectHooks
    from mission_control.sync import Sync

    open_store(config)
    plugins = load_plugins(config)
    sync = Sync(config, plugins, by_hand=True)
    if not sync:
        raise UsageError(f"{config.file}: no plugin is a source or delivery (add `github:` under plugins:)")
    effects = EffectHooks(config, plugins, lambda: Controller(config, hooks=plugins.hook))
    effects.open()
    summary = sync.run_once()
    effects.deliver_now()  # what the pass committed (an escalation, say) reaches the effect hooks now
    for line in summary.done:
        print(line)
    for line in summary.failed:
        print(f"mc: sync: {line}", file=sys.stderr)
    if not summary.done and not summary.failed:
        print("nothing new")
    return 1 if summary.failed else 0


def cmd_board(args: argparse.Namespace, config: Config) -> int:
    try:
        from mission_control.board.serve import serve
    except ImportError as exc:
        raise UsageError(f"mc board needs the web extra ({exc.name} is missing): pip install 'mc-hooks[web]'") from None
    open_store(config)
    token = args.token or config.board_token
    return serve(config, host=args.host, port=args.port, token=token, allowed_hosts=args.allowed_host)


def cmd_demo(args: argparse.Namespace) -> int:
    from mission_control.demo import run_demo

    return run_demo(keep=args.keep)


# -- parser ------------------------------------------------------------------------------------


def _version() -> str:
    try:
        return importlib.metadata.version("mc-hooks")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mc", description="Mission Control: run AI coding agents on a ticket board.")
    parser.add_argument("--config", help="config file (default: $MC_CONFIG or ./config.yaml)")
    parser.add_argument("--version", action="version", version=f"mc {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sub.add_parser("init", help="write the default config.yaml if missing; create or migrate the database")
    sub.add_parser("demo", help="run every path once in a temporary MC root").add_argument(
        "--keep", action="store_true", help="keep the temporary MC root and print where it is"
    )

    ticket = sub.add_parser("ticket", help="add, list, show and change tickets").add_subparsers(
        dest="ticket_command", required=True, parser_class=Parser
    )
    add = ticket.add_parser("add", help="add a ticket; prints its key")
    add.add_argument("title")
    add.add_argument("--body", default="")
    add.add_argument("--repo")
    add.add_argument("--worker", help="worker profile (default: default)")
    add.add_argument("--branch", help="the branch the worker's commit must be on")
    add.add_argument(
        "--max-cost-usd", help="stop starting runs once the ticket's runs cost this much (default: the profile's)"
    )
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
    tset.add_argument("--max-cost-usd", help="a new spend budget for the ticket (US dollars)")
    com = ticket.add_parser("comment", help="comment on a ticket")
    com.add_argument("key")
    com.add_argument("text")
    ans = ticket.add_parser(
        "answer", help="answer a ticket that waits for you: back to its worker's session with your words"
    )
    ans.add_argument("key")
    ans.add_argument("text")
    edit = ticket.add_parser("edit", help="change a ticket's title or body (its next run gets them)")
    edit.add_argument("key")
    edit.add_argument("--title")
    edit.add_argument("--body")
    stop = ticket.add_parser("stop", help="stop a ticket's run now (not a death) and park it with its owner")
    stop.add_argument("key")

    review = sub.add_parser("review", help="record a review verdict from outside MC").add_subparsers(
        dest="review_command", required=True, parser_class=Parser
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
    kill.add_argument(
        "--stop-runs", action="store_true", help="with on: also stop the runs under way (back to todo, not deaths)"
    )
    kill.add_argument("--json", action="store_true")

    sub.add_parser("plugins", help="registered plugins, their sources and hooks").add_argument(
        "--json", action="store_true"
    )
    run = sub.add_parser("run", help="the controller: pickup, harvest, reviews, operator sweeps")
    run.add_argument("--until-idle", action="store_true", help="exit 0 once nothing more can happen unaided")
    run.add_argument("--quiet", action="store_true", help="no line per decision on stderr")
    sub.add_parser("sync", help="one pass of the trackers: new issues in, done work out, feedback back")
    sub.add_parser("doctor", help="check config, database, agent CLIs, git and the worktree root; exit 1 on a failure")
    op = sub.add_parser("operator", help="record health and reopen weak completions")
    op.add_argument("--once", action="store_true")
    sub.add_parser("health", help="the latest health snapshot").add_argument("--json", action="store_true")
    board = sub.add_parser("board", help="serve the live web board (read-only; needs the web extra)")
    board.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    board.add_argument("--port", type=int, default=8700, help="port (default 8700)")
    board.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the board is reached by (a Host it answers to besides loopback and --host)",
    )
    board.add_argument("--token", help="require this bearer token (or board.token in config.yaml); needed off loopback")
    _config_after_the_command(parser)
    return parser


def _config_after_the_command(parser: argparse.ArgumentParser) -> None:
    """Accept ``--config`` after the command too (`mc doctor --config x.yaml`), as people type it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _config_after_the_command(child)
            return
    if parser.prog != "mc":
        parser.add_argument("--config", default=argparse.SUPPRESS, help="config file (as `mc --config`)")


COMMANDS = {
    ("ticket", "add"): cmd_ticket_add,
    ("ticket", "import"): cmd_ticket_import,
    ("ticket", "list"): cmd_ticket_list,
    ("ticket", "show"): cmd_ticket_show,
    ("ticket", "set"): cmd_ticket_set,
    ("ticket", "comment"): cmd_ticket_comment,
    ("ticket", "answer"): cmd_ticket_answer,
    ("ticket", "edit"): cmd_ticket_edit,
    ("ticket", "stop"): cmd_ticket_stop,
    ("review", "record"): cmd_review_record,
    ("killswitch", None): cmd_killswitch,
    ("plugins", None): cmd_plugins,
    ("run", None): cmd_run,
    ("operator", None): cmd_operator,
    ("health", None): cmd_health,
    ("board", None): cmd_board,
    ("sync", None): cmd_sync,
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
    except (ConfigError, StoreError, UsageError, Refused, flags.KillSwitchError) as exc:
        print(f"mc: {exc}", file=sys.stderr)
        return 2
    except (pw.DatabaseError, pw.InterfaceError) as exc:  # not the user's mistake (an outage), still one line
        print(f"mc: database error: {database_problem(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

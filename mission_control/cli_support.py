"""What the `mc` command's modules share: the one-line user error, opening the store, the person at the
terminal as the facade's actor, and JSON output."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from typing import Any, NoReturn

from mission_control import proctree
from mission_control.config import Config
from mission_control.controller import Controller
from mission_control.store import queries
from mission_control.store.connection import open_database
from mission_control.store.models import Ticket
from mission_control.text import printable, utf8_safe

SHA = re.compile(r"[0-9a-fA-F]{7,40}")


class UsageError(Exception):
    """A mistake in what the user typed; one line."""


class Parser(argparse.ArgumentParser):
    """argparse, exiting 2 with one line on a usage mistake."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def user() -> str:
    """Who runs this command (the audit trail's actor for manual changes)."""
    try:
        return getpass.getuser()
    except Exception:
        return "someone"


def open_store(config: Config, create: bool = False) -> None:
    """Open the config's store (raises StoreError with one line)."""
    open_database(config.database, create=create)


def manual(config: Config) -> Controller:
    """The facade, driven by the person at the terminal."""
    return Controller(config, actor=f"mc:{user()}", manual=True)


def ticket_by_key(controller: Controller, key: str) -> Ticket:
    """The ticket ``key``, or a UsageError naming it."""
    ticket = controller.ticket(key)
    if ticket is None:
        raise UsageError(f"no ticket {key!r} (see `mc ticket list`)")
    return ticket


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON (valid UTF-8 whatever text it holds: a lone surrogate is U+FFFD)."""
    sys.stdout.write(utf8_safe(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")


def valid_sha(value: str) -> str:
    """``value`` as a lowercase sha, or a UsageError."""
    if not SHA.fullmatch(value):
        raise UsageError(f"--sha/--done-sha: expected 7 to 40 hex digits, got {value!r}")
    return value.lower()


def refuse_inside_a_run(what: str) -> None:
    """Refuse a person's command (recording a verdict, changing a ticket, releasing the kill-switch)
    when it comes from inside a run or a controller: checked through the process tree (this process's
    ancestors against the processes the store knows), not through an environment variable a run can
    drop. The controller is a child subreaper, so even a run's orphans stay in its tree."""
    if os.environ.get("MC_TICKET"):
        raise UsageError(f"{what}: refused inside a run (MC_TICKET is set): a run cannot decide about itself")
    chain = proctree.ancestors(os.getpid())
    ancestors = set(chain)
    for kind, pid, start in queries.local_processes():
        if pid in ancestors and proctree.pid_alive(pid, start):
            raise UsageError(f"{what}: refused: this command runs inside {kind} (pid {pid}); only a person may")
    # A run whose controller died before it noted the run's pid: known by the run id it was started with.
    running = set(queries.running_run_ids(queries.database_id_text()))
    if running & proctree.run_ids_of(chain):
        raise UsageError(f"{what}: refused: this command runs inside a worker or reviewer run; only a person may")


def shown(text: str, keep_lines: bool = False) -> str:
    """Untrusted text as it may be printed to a terminal (see :func:`text.printable`)."""
    return printable(text, keep_lines)

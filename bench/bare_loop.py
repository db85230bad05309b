"""A reference between the floor and Mission Control: a bare Python loop that runs the lifecycle's
commands (a worker, then a reviewer for each ticket, 4 at a time) and keeps their state in SQLite as a
controller with no policy would. Per batch of exits it stores what ended in one transaction, applies it
in another (each with its audit events), and claims todo tickets in a third; each run gets its log files
and its ticket a directory. No plugins, no hooks, no recovery data, no narration, no fencing.

What it costs per ticket is what Python, SQLite and the processes themselves cost; what Mission Control
costs beyond it is its own.
"""

from __future__ import annotations

import json
import os
import selectors
import sqlite3
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Events = list[tuple[int, str, str, float]]
Ended = list[tuple[str, int, str, int, bytes]]

SCHEMA = """
CREATE TABLE ticket (id INTEGER PRIMARY KEY, key TEXT UNIQUE, status TEXT, claim_token INTEGER, updated_at REAL);
CREATE INDEX ticket_status ON ticket (status, id);
CREATE TABLE run (id INTEGER PRIMARY KEY, ticket_id INTEGER, pid INTEGER, outcome TEXT, sha TEXT,
                  verdict TEXT, applied_at REAL, started_at REAL, ended_at REAL);
CREATE INDEX run_ticket ON run (ticket_id);
CREATE TABLE event (id INTEGER PRIMARY KEY, ticket_id INTEGER, action TEXT, detail TEXT, created_at REAL);
CREATE INDEX event_ticket ON event (ticket_id);
CREATE INDEX event_created ON event (created_at);
"""


class BareLoop:
    """The loop, its store and its running processes."""

    def __init__(self, root: Path, worker: list[str], reviewer: list[str], concurrency: int) -> None:
        self.root, self.worker, self.reviewer, self.concurrency = root, worker, reviewer, concurrency
        self.store = sqlite3.connect(root / "bare.db", isolation_level=None)
        self.store.execute("PRAGMA journal_mode = wal")
        self.store.execute("PRAGMA synchronous = normal")
        self.store.executescript(SCHEMA)
        self.selector = selectors.DefaultSelector()
        self.running = 0
        self.stdin = os.open(os.devnull, os.O_RDONLY)
        self.env = dict(os.environ)

    def transaction(self, body: Callable[[Events], T]) -> T:
        """``body(events)`` in one transaction; the events it appends are inserted before the commit."""
        self.store.execute("BEGIN IMMEDIATE")
        events: Events = []
        result = body(events)
        if events:
            insert = "INSERT INTO event (ticket_id, action, detail, created_at) VALUES (?, ?, ?, ?)"
            self.store.executemany(insert, events)
        self.store.execute("COMMIT")
        return result

    def spawn(self, kind: str, ticket: int, key: str, run: int) -> None:
        logs = self.root / "logs" / key
        if kind == "worker":
            logs.mkdir(mode=0o700, parents=True)
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
        out = os.open(logs / f"{run}.{kind}.log", flags, 0o600)
        err = os.open(logs / f"{run}.{kind}.err", flags, 0o600)
        env = {**self.env, "MC_TICKET": key, "MC_RUN_ID": str(run)}
        argv = self.worker if kind == "worker" else self.reviewer
        proc = subprocess.Popen(
            argv, cwd=logs, env=env, stdin=self.stdin, stdout=out, stderr=err, start_new_session=True
        )
        pidfd = os.pidfd_open(proc.pid)
        self.selector.register(pidfd, selectors.EVENT_READ, (proc, kind, ticket, key, run, out, err, pidfd))
        self.running += 1

    def claim(self, events: Events) -> list[tuple[int, str, int]]:
        free = self.concurrency - self.running
        rows = self.store.execute("SELECT id, key FROM ticket WHERE status = 'todo' ORDER BY id LIMIT ?", (free,))
        claimed = []
        for ticket, key in rows.fetchall():
            self.store.execute(
                "UPDATE ticket SET status = 'in_progress', claim_token = claim_token + 1, updated_at = ? "
                "WHERE id = ? AND status = 'todo'",
                (time.time(), ticket),
            )
            run = self.store.execute("INSERT INTO run (ticket_id, started_at) VALUES (?, ?)", (ticket, time.time()))
            events.append((ticket, "dispatch", "attempt 1 started", time.time()))
            claimed.append((ticket, key, int(run.lastrowid or 0)))
        return claimed

    def exited(self) -> Ended:
        ended: Ended = []
        for selected, _ in self.selector.select(1.0):
            proc, kind, ticket, key, run, out, err, pidfd = selected.data
            if proc.poll() is None:
                continue
            self.selector.unregister(pidfd)
            os.close(pidfd)
            self.running -= 1
            said = os.pread(out, 1 << 16, 0)
            os.close(out)
            os.close(err)
            ended.append((kind, ticket, key, run, said))
        return ended

    def store_reports(self, ended: Ended, events: Events) -> None:
        for kind, ticket, _, run, said in ended:
            now = time.time()
            if kind == "worker":
                sha = said.split(b"DONE: ", 1)[1].split()[0].decode()
                update = "UPDATE run SET outcome = 'done', sha = ?, ended_at = ? WHERE id = ?"
                self.store.execute(update, (sha, now, run))
                events.append((ticket, "done", f"reported DONE {sha}", now))
            else:
                verdict = json.loads(said)["verdict"]
                self.store.execute("UPDATE run SET verdict = ?, ended_at = ? WHERE id = ?", (verdict, now, run))
                events.append((ticket, "verdict", verdict, now))

    def apply(self, ended: Ended, events: Events) -> list[tuple[int, str, int]]:
        review = []
        for kind, ticket, key, run, _ in ended:
            now = time.time()
            self.store.execute("UPDATE run SET applied_at = ? WHERE id = ? AND applied_at IS NULL", (now, run))
            status = "in_review" if kind == "worker" else "done"
            self.store.execute("UPDATE ticket SET status = ?, updated_at = ? WHERE id = ?", (status, now, ticket))
            events.append((ticket, "status", status, now))
            if kind == "worker":
                review.append((ticket, key, run))
        return review

    def run(self, tickets: int) -> None:
        """Take ``tickets`` tickets through a worker and a reviewer each."""
        self.store.executemany(
            "INSERT INTO ticket (key, status, claim_token, updated_at) VALUES (?, 'todo', 0, 0)",
            [(f"MC-{number}",) for number in range(1, tickets + 1)],
        )
        done = 0
        while done < tickets:
            if self.running < self.concurrency:
                for ticket, key, run in self.transaction(self.claim):
                    self.spawn("worker", ticket, key, run)
            ended = self.exited()
            if not ended:
                continue
            self.transaction(partial(self.store_reports, ended))
            for ticket, key, run in self.transaction(partial(self.apply, ended)):
                self.spawn("review", ticket, key, run)
            done += sum(1 for kind, *_ in ended if kind == "review")


def bare_loop(workdir: Path, tickets: int, worker: list[str], reviewer: list[str], concurrency: int = 4) -> float:
    """Seconds the bare loop takes for ``tickets`` tickets."""
    root = workdir / "bare-loop"
    root.mkdir()
    loop = BareLoop(root, worker, reviewer, concurrency)
    start = time.perf_counter()
    loop.run(tickets)
    return time.perf_counter() - start

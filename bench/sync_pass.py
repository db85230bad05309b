"""The sync pass's own cost (`mission_control.sync`), in process on SQLite: what `mc run` pays every second
while no tracker has anything new (the queries over tickets from trackers, most of them merged long ago),
and how fast new tracker items become tickets against the floor of inserting as many tickets directly,
in one transaction, without their events."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from mc_hooks import hookimpl
from mc_hooks.work import WorkItem


class Idle:
    """A source and delivery with nothing new (what a plugin pacing itself returns between looks)."""

    def __init__(self, items: list[WorkItem] | None = None) -> None:
        self.items = items

    @hookimpl
    def list_work_items(self) -> list[WorkItem] | None:
        items, self.items = self.items, None
        return items

    @hookimpl
    def read_work_news(self, ticket: Any, delivered: Any) -> None:
        return None


def sync_pass(tickets: int, new_items: int) -> dict[str, Any]:
    """The time of a pass that only asks the sources (nothing new) and of one that also scans the store, with
    ``tickets`` tracker tickets (2% open deliveries, 98% merged); the rate of taking ``new_items`` items
    against direct inserts."""
    from mc_hooks.manager import load_plugins
    from mission_control.config import DEFAULT_CONFIG_TEXT, load_config
    from mission_control.store import queries
    from mission_control.store.connection import close_database, open_database
    from mission_control.store.migration import init_schema
    from mission_control.store.transactions import write
    from mission_control.sync import Sync

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
        config = load_config(path, env={})
        open_database(str(config.root / "mc.db"), create=True)
        init_schema()
        _fill(config.root / "mc.db", tickets)
        source = Idle()
        sync = Sync(config, load_plugins(config, extra=[("tracker", source)]))
        sync.run_once()
        rounds = 20
        started = time.perf_counter()
        for _ in range(rounds):
            sync.run_once(scan=False)
        idle_ms = (time.perf_counter() - started) / rounds * 1000
        started = time.perf_counter()
        for _ in range(rounds):
            sync.run_once()
        scan_ms = (time.perf_counter() - started) / rounds * 1000

        source.items = [WorkItem(source=f"bench:{i}", title=f"item {i}", body="text") for i in range(new_items)]
        started = time.perf_counter()
        sync.run_once()
        taken = time.perf_counter() - started
        started = time.perf_counter()
        write(
            lambda: [
                queries.new_ticket("MC", title=f"floor {i}", body="text", source=f"f:{i}") for i in range(new_items)
            ]
        )
        floor = time.perf_counter() - started
        close_database()
    return {
        "tickets": tickets,
        "idle_pass_ms": idle_ms,  # every second under `mc run`
        "scan_ms": scan_ms,  # every 5 s, or after this controller commits (at most every 0.5 s)
        "items": new_items,
        "items_per_s": new_items / taken,
        "floor_items_per_s": new_items / floor,
        "ratio": floor / taken,
        "target_idle_ms": 1.0,
        "target_scan_ms": 50.0,
    }


def _fill(database: Path, tickets: int) -> None:
    db = sqlite3.connect(database)
    now = time.time()
    db.executemany(
        "INSERT INTO ticket (key, title, body, worker, status, done_sha, source, attempts, operator_checked, "
        "created_at, updated_at, review_cycles, death_count, claim_token) "
        "VALUES (?, ?, '', 'default', 'done', ?, ?, 1, 1, ?, ?, 0, 0, 1)",
        [(f"MC-{i}", f"ticket {i}", f"{i:040x}", f"bench:old{i}", now, now) for i in range(1, tickets + 1)],
    )
    db.executemany(
        "INSERT INTO delivery (ticket_id, plugin, url, ref, sha, state, seen, created_at, updated_at) "
        "VALUES (?, 'tracker', 'u', 'pull/1', ?, ?, '[]', ?, ?)",
        [(i, f"{i:040x}", "open" if i % 50 == 0 else "merged", now, now) for i in range(1, tickets + 1)],
    )
    db.commit()
    db.close()

"""Rows inserted at the end of their transaction, all in one statement: the audit trail's events.

An event recorded inside a transaction opened by :func:`transactions.write`, ``one_transaction`` or a
plugin's hook call is held here and inserted, with the rest of that transaction's events, just before
it commits: one INSERT per batch instead of one per event. Nothing is lost or reordered by waiting:

* a read of the events inside the transaction (the circuit breaker counting deaths) calls
  :func:`flush` first, so it sees them;
* a savepoint rolled back (a plugin that raised) drops the events recorded inside it, and queues again
  the earlier ones it had flushed, since its rollback undid their INSERT as well;
* a transaction that ends without committing drops them all (``write`` re-runs its body, which records
  them again).

Outside such a transaction an event is inserted at once. The state is per thread, like peewee's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mission_control.store.models import Event, db

CHUNK = 100  # rows per INSERT: 700 parameters, well under any SQLite's limit
COLUMNS = ("ticket", "action", "actor", "kind", "detail", "created_at", "data_json")


class _State(threading.local):
    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.flushed = 0  # rows[:flushed] are inserted (in the open transaction)
        self.marks: list[tuple[int, int]] = []  # per open scope: (len(rows), flushed) when it began


_STATE = _State()
_SQL: dict[tuple[type, int], str] = {}
_FIELDS = [Event._meta.fields[name] for name in COLUMNS]


def _sql(count: int) -> str:
    key = (type(db.obj), count)
    sql = _SQL.get(key)
    if sql is None:
        names = ", ".join(field.column_name.join(db.quote) for field in _FIELDS)
        group = "(" + ", ".join([db.param] * len(_FIELDS)) + ")"
        sql = _SQL[key] = f"INSERT INTO {Event._meta.table_name.join(db.quote)} ({names}) VALUES " + ", ".join(
            [group] * count
        )
    return sql


def _insert(rows: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        params = [field.db_value(value) for row in chunk for field, value in zip(_FIELDS, row, strict=True)]
        db.execute_sql(_sql(len(chunk)), params)


def add_event(row: tuple[Any, ...]) -> None:
    """An event row (values in :data:`COLUMNS` order): held until its transaction ends, or inserted now
    when none is open."""
    if _STATE.marks:
        _STATE.rows.append(row)
    else:
        _insert([row])


def flush() -> None:
    """Insert the events held so far, in the open transaction (before reading the events back)."""
    state = _STATE
    if len(state.rows) > state.flushed:
        _insert(state.rows[state.flushed :])
        state.flushed = len(state.rows)


@contextmanager
def scope() -> Iterator[None]:
    """Around a transaction or savepoint (inside its ``atomic`` block): the events recorded in it are
    inserted before the outermost one commits, and dropped with a rollback."""
    state = _STATE
    state.marks.append((len(state.rows), state.flushed))
    committed = False
    try:
        yield
        if len(state.marks) == 1:
            flush()
        committed = True
    finally:
        size, flushed = state.marks.pop()
        if not state.marks:
            state.rows, state.flushed = [], 0  # committed, or every row rolled back with the transaction
        elif not committed:
            del state.rows[size:]
            state.flushed = min(state.flushed, flushed)

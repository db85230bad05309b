"""Transactions: :func:`write` runs a body in one transaction and re-runs it while the store is busy,
and the cached single-row statements the hot paths use (:func:`insert_row`, :func:`update_row`)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import peewee as pw

from mission_control.store import deferred
from mission_control.store.models import BaseModel, db

T = TypeVar("T")

RETRYABLE_PGCODES = frozenset({"40001", "40P01", "55P03"})  # serialization failure, deadlock, lock not available


def is_locked_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "try the transaction again": SQLite busy/locked, PostgreSQL deadlock or
    serialization failure."""
    if not isinstance(exc, pw.DatabaseError):
        return False
    for candidate in (exc, *exc.args[:1], exc.__cause__, exc.__context__):
        if getattr(candidate, "pgcode", None) in RETRYABLE_PGCODES:
            return True
    text = str(exc).lower()
    return isinstance(exc, pw.OperationalError) and ("locked" in text or "busy" in text)


def write(fn: Callable[[], T], attempts: int = 8) -> T:
    """Run ``fn`` in one transaction, retrying with backoff while the database is locked.

    ``fn`` must be safe to re-run from the start (it only touches the database).
    """
    delay = 0.01
    for attempt in range(attempts):
        try:
            with atomic():
                return fn()
        except pw.DatabaseError as exc:
            if not is_locked_error(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


def one_transaction() -> AbstractContextManager[Any]:
    """A transaction for a write made on its own; inside one already open (the loop's, or the savepoint
    a plugin's hook call runs in), nothing more: that one makes the write atomic with the rest, and a
    savepoint of its own would cost two more statements for nothing."""
    return contextlib.nullcontext() if db.in_transaction() else atomic()


class _AfterCommit(threading.local):
    def __init__(self) -> None:
        self.callbacks: list[Callable[[], object]] = []


_AFTER_COMMIT = _AfterCommit()


def after_commit(callback: Callable[[], object]) -> None:
    """Call ``callback`` once the open transaction commits (once, however often it is asked for; never
    if it rolls back). Outside a transaction, call it now."""
    if not db.in_transaction():
        callback()
    elif callback not in _AFTER_COMMIT.callbacks:
        _AFTER_COMMIT.callbacks.append(callback)


@contextlib.contextmanager
def atomic() -> Iterator[None]:
    """A transaction, or a savepoint inside one, that also inserts the audit events recorded in it (held
    until then: see :mod:`.deferred`) before committing, and drops them when it rolls back; once the
    outermost one committed, what :func:`after_commit` asked for runs. Every transaction the controller
    opens is one of these."""
    outermost = not db.in_transaction()
    try:
        with db.atomic(), deferred.scope():
            yield
    except BaseException:
        if outermost:
            _AFTER_COMMIT.callbacks = []
        raise
    if outermost and _AFTER_COMMIT.callbacks:
        callbacks, _AFTER_COMMIT.callbacks = _AFTER_COMMIT.callbacks, []
        for callback in callbacks:
            callback()


_STATEMENTS: dict[tuple[Any, ...], tuple[str, tuple[pw.Field, ...]]] = {}


def _statement(kind: str, model: type[BaseModel], names: frozenset[str]) -> tuple[str, tuple[pw.Field, ...]]:
    key = (kind, model, names, type(db.obj))
    cached = _STATEMENTS.get(key)
    if cached is None:
        fields = tuple(f for f in model._meta.sorted_fields if f.name in names)
        if len(fields) != len(names):
            raise ValueError(f"{model.__name__} has no field(s) {sorted(names - {f.name for f in fields})}")
        sample = {f: None for f in fields}
        query = model.insert(sample) if kind == "insert" else model.update(sample).where(model._meta.primary_key == 0)
        cached = _STATEMENTS[key] = (query.sql()[0], fields)
    return cached


def insert_row(model: type[BaseModel], **values: Any) -> None:
    """INSERT one row. The statement is built by peewee once per model and set of columns and then
    reused: on the controller's hot path, building SQL cost more than running it (see bench/)."""
    sql, fields = _statement("insert", model, frozenset(values))
    db.execute_sql(sql, [f.db_value(values[f.name]) for f in fields])


def update_row(model: type[BaseModel], row_id: int, **values: Any) -> int:
    """UPDATE the row with primary key ``row_id`` (statement cached like :func:`insert_row`);
    returns the number of rows changed."""
    sql, fields = _statement("update", model, frozenset(values))
    return db.execute_sql(sql, [*(f.db_value(values[f.name]) for f in fields), row_id]).rowcount


def tuples(query: Any) -> list[tuple[Any, ...]]:
    """The rows of a select as plain tuples: no model objects are built."""
    return list(query.tuples())

"""Opening and closing the store (a SQLite file or a PostgreSQL URL), its clock, its id, and the
wake-ups controllers send each other through it (PostgreSQL LISTEN/NOTIFY)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

import peewee as pw

from mission_control.store import StoreError
from mission_control.store.migration import schema_gaps
from mission_control.store.models import Meta, db


def open_database(database: str, create: bool = False) -> pw.Database:
    """Open the store named by a config's ``database`` (a SQLite path or a postgresql:// URL).

    A SQLite file that does not exist is only created when ``create`` is true (``mc init``).
    """
    if database.startswith("postgresql://"):
        try:
            from playhouse.db_url import connect, register_database
        except ImportError as exc:  # pragma: no cover - peewee always ships db_url
            raise StoreError(str(exc)) from None
        shown = redacted(database)
        register_database(PostgresStore, "postgresql")  # connect() parses the URL into our class
        try:
            real = connect(database)
        except ImportError:
            raise StoreError("postgresql needs a driver: pip install 'mc-hooks[postgres]'") from None
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{shown}: not a valid postgresql:// URL ({exc})") from None
        try:
            real.connect(reuse_if_open=True)
        except (ImportError, pw.ImproperlyConfigured):  # peewee says "Postgres driver not installed!"
            raise StoreError("postgresql needs a driver: pip install 'mc-hooks[postgres]'") from None
        except (pw.OperationalError, pw.InterfaceError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot connect to {shown}: {first}") from None
    else:
        path = Path(database)
        if not path.parent.is_dir():
            raise StoreError(f"{database}: the directory {path.parent} does not exist")
        if not path.exists():
            if not create:
                raise StoreError(f"{database}: no database here yet (run `mc init`)")
            if not os.access(path.parent, os.W_OK):
                raise StoreError(f"{database}: the directory {path.parent} is not writable")
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StoreError(f"{database}: cannot create the database: {exc.strerror}") from None
        real = pw.SqliteDatabase(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "busy_timeout": 10_000,
                "foreign_keys": 1,
                "synchronous": "normal",
            },
            lock_type="IMMEDIATE",
        )
        try:
            real.connect(reuse_if_open=True)
        except pw.OperationalError as exc:
            raise StoreError(f"{database}: cannot open: {exc}") from None
        found = path.stat()
        _OPENED[str(path)] = (found.st_dev, found.st_ino)
    db.initialize(real)
    if not create:
        missing = schema_gaps()
        if missing:
            where = database if not database.startswith("postgresql://") else database.split("@")[-1]
            if missing == ["(no tables)"]:
                raise StoreError(f"{where}: no Mission Control schema here yet (run `mc init`)")
            raise StoreError(
                f"{where}: the schema is older than this mc (no {missing[0]}); run `mc init` to migrate it"
            )
    return real


class PostgresStore(pw.PostgresqlDatabase):
    """PostgreSQL with each transaction's ``BEGIN`` sent in the round trip of its first statement: there,
    a statement costs mostly its round trip (about a tenth of the controller's round trips were BEGINs).

    Every statement goes through :meth:`execute_sql`, so none can run outside the transaction it is in.
    A transaction that runs no statement sends neither ``BEGIN`` nor ``COMMIT``."""

    # peewee's own, not in its type stubs: the connection's state, the driver adapter, the default isolation
    _state: Any
    _adapter: Any
    _isolation_level: Any

    def begin(self, isolation_level: Any = None) -> None:
        """Start a transaction: its ``BEGIN`` goes with the first statement."""
        level = self._isolation_level if isolation_level is None else isolation_level
        isolation = f" ISOLATION LEVEL {self._adapter.isolation_level_str(level)}" if level else ""
        self._state.deferred_begin = f"BEGIN TRANSACTION{isolation}"

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        """Run ``sql``, after the ``BEGIN`` of the transaction it opens, in one round trip."""
        begin = self._take_begin()
        if begin is not None and self._state.transactions:
            sql = f"{begin}; {sql}"
        return super().execute_sql(sql, params)

    def commit(self) -> None:
        """Commit the transaction, if a statement started it."""
        if self._take_begin() is None:
            super().commit()

    def rollback(self) -> None:
        """Roll the transaction back, if a statement started it."""
        if self._take_begin() is None:
            super().rollback()

    def _take_begin(self) -> str | None:
        begin: str | None = getattr(self._state, "deferred_begin", None)
        self._state.deferred_begin = None
        return begin


_OPENED: dict[str, tuple[int, int]] = {}  # SQLite files as they were when opened: (device, inode)


def store_gone() -> str | None:
    """Why the open SQLite file is no longer the store at its path (deleted, or replaced by a new one, e.g.
    by `mc init` after a deletion), or None. A controller that kept writing to a deleted file would
    lose everything it did; it checks this with its heartbeat and stops."""
    for path, identity in _OPENED.items():
        if not isinstance(db.obj, pw.SqliteDatabase) or db.obj.database != path:
            continue
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return f"the database {path} was deleted while this controller had it open"
        except OSError:
            return None
        if (found.st_dev, found.st_ino) != identity:
            return f"the database {path} was replaced by another file while this controller had it open"
    return None


def wait_for_locks_at_most(seconds: float) -> None:
    """From now on, give up on a lock held by someone else after ``seconds`` (for commands that must
    answer at once, like `mc killswitch on`)."""
    if is_postgres():
        db.obj.execute_sql(f"SET lock_timeout = {int(seconds * 1000)}")
    else:
        db.obj.execute_sql(f"PRAGMA busy_timeout = {int(seconds * 1000)}")


def redacted(url: str) -> str:
    """A database URL as it may be shown: any password replaced by ``***``."""
    return re.sub(r"^([a-z]+://[^:/@]*):[^@]*@", r"\1:***@", url)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the PostgreSQL connection itself is gone (the server restarted, or the
    connection was killed), as opposed to a statement that failed on a live connection."""
    if not is_postgres() or not isinstance(exc, (pw.OperationalError, pw.InterfaceError)):
        return False
    conn = db.obj._state.conn
    return conn is None or bool(getattr(conn, "closed", 0))


def reconnect() -> None:
    """Drop a lost connection and open a new one. Raises ``pw.OperationalError`` (or
    ``pw.InterfaceError``) while the server cannot be reached; callers retry with a bound."""
    state = db.obj._state
    if state.conn is not None:
        with contextlib.suppress(Exception):  # it is already broken; all that matters is forgetting it
            state.conn.close()
    state.reset()  # forgets the broken connection and any transaction peewee thought was open
    db.obj.connect()


def close_database() -> None:
    """Close the current connection, if any."""
    if db.obj is not None and not db.is_closed():
        db.close()


def db_time() -> float:
    """Now, by the database's clock when it has one of its own (PostgreSQL), so that leases compare
    heartbeats from several hosts on one clock; by this host's clock for SQLite (one host)."""
    if is_postgres():
        return float(db.obj.execute_sql("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
    return time.time()


WAKEUP_CHANNEL = "mc_wakeup"


def is_postgres() -> bool:
    """Whether the open store is PostgreSQL."""
    return isinstance(db.obj, pw.PostgresqlDatabase)


def notify_controllers() -> None:
    """Wake every controller listening on this store (PostgreSQL NOTIFY); polling covers SQLite."""
    if is_postgres():
        db.obj.execute_sql(f"NOTIFY {WAKEUP_CHANNEL}")


def listen_fd() -> int | None:
    """Start listening for wake-ups; the socket to watch for them, or None where there are none."""
    if not is_postgres():
        return None
    db.obj.execute_sql(f"LISTEN {WAKEUP_CHANNEL}")
    return db.obj.connection().fileno()


def drain_wakeups() -> bool:
    """Consume pending wake-ups; True if there were any."""
    if not is_postgres():
        return False
    conn = db.obj.connection()
    with pw.__exception_wrapper__:  # type: ignore[attr-defined]  # a lost connection raises peewee's error, like any statement
        conn.poll()
    woke = bool(conn.notifies)
    conn.notifies.clear()
    return woke


def database_id() -> str:
    """A random id made at ``mc init``; keeps worker sessions of different MC roots apart."""
    row = Meta.get_or_none(Meta.key == "db_id")
    return row.value if row else "unknown"

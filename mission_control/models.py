"""The ticket store: peewee models, opening the database, schema migration and transactions.

The store knows nothing above it. Timestamps are float epoch seconds (portable and cheap to
compare); JSON lists are stored as text.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

STATUSES = ("todo", "in_progress", "in_review", "done", "needs_input")
VERDICTS = ("pass", "fail", "uncertain")
ACTIVE = ("in_progress", "in_review")

db = pw.DatabaseProxy()
T = TypeVar("T")


class StoreError(Exception):
    """The database cannot be opened or used; the message is one line for the user."""


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Meta(BaseModel):
    """Key/value facts about the database itself (its id, schema version, flags)."""

    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


class Ticket(BaseModel):
    key = pw.CharField(max_length=40, unique=True, null=True)
    title = pw.TextField()
    body = pw.TextField(default="")
    repo = pw.TextField(null=True)
    worker = pw.CharField(max_length=64, default="default")
    branch = pw.TextField(null=True)
    status = pw.CharField(max_length=16, default="todo", index=True)
    review_cycles = pw.IntegerField(default=0)
    death_count = pw.IntegerField(default=0)
    attempts = pw.IntegerField(default=0)
    done_sha = pw.CharField(max_length=40, null=True)
    # Reviewer feedback waiting for the next dispatch (JSON {"sha", "reasons", "gaps"}).
    pending_feedback = pw.TextField(null=True)
    # The controller responsible for the ticket's in-flight work, and the fencing token of its claim.
    claimed_by = pw.IntegerField(null=True, index=True)
    claim_token = pw.IntegerField(default=0)
    operator_checked = pw.BooleanField(default=False)
    created_at = pw.DoubleField(default=time.time)
    updated_at = pw.DoubleField(default=time.time)
    worktree = pw.TextField(null=True)  # where its runs work (removed when done, for repo tickets)

    class Meta:
        indexes = ((("status", "id"), False), (("status", "operator_checked"), False))

    def __str__(self) -> str:
        return self.key or f"#{self.id}"


class Comment(BaseModel):
    ticket = pw.ForeignKeyField(Ticket, backref="comments", on_delete="CASCADE")
    author = pw.CharField(max_length=64)
    body = pw.TextField()
    created_at = pw.DoubleField(default=time.time)


class ShadowReview(BaseModel):
    ticket = pw.ForeignKeyField(Ticket, backref="reviews", on_delete="CASCADE")
    done_sha = pw.CharField(max_length=40)
    verdict = pw.CharField(max_length=16)
    reasons_json = pw.TextField(default="[]", column_name="reasons")
    gaps_json = pw.TextField(default="[]", column_name="gaps")
    reviewer = pw.CharField(max_length=64, default="reviewer")
    created_at = pw.DoubleField(default=time.time, index=True)
    attempt = pw.IntegerField(null=True)  # the worker attempt whose sha it judged (None: recorded by hand)
    session = pw.TextField(null=True)  # what the reviewer's agent CLI reported about its run
    cost_usd = pw.DoubleField(null=True)
    input_tokens = pw.IntegerField(null=True)
    output_tokens = pw.IntegerField(null=True)
    turns = pw.IntegerField(null=True)

    class Meta:
        indexes = ((("ticket", "done_sha"), False),)

    @property
    def reasons(self) -> list[str]:
        return json.loads(self.reasons_json)

    @property
    def gaps(self) -> list[str]:
        return json.loads(self.gaps_json)


class Event(BaseModel):
    """The audit trail: who (host or plugin name) decided what, about which ticket, when."""

    ticket = pw.ForeignKeyField(Ticket, backref="events", null=True, on_delete="CASCADE")
    action = pw.CharField(max_length=64)
    actor = pw.CharField(max_length=128)
    # report (a worker or reviewer said something), action (an automatic decision),
    # veto, manual (a person's command), error (a plugin or the host failed).
    kind = pw.CharField(max_length=16, default="action")
    detail = pw.TextField(default="")
    created_at = pw.DoubleField(default=time.time, index=True)


class HealthSnapshot(BaseModel):
    created_at = pw.DoubleField(default=time.time, index=True)
    data = pw.TextField()


class Controller(BaseModel):
    """A running `mc run` / `mc operator` process, for recovery of what it leaves behind."""

    host = pw.CharField(max_length=255)
    pid = pw.IntegerField()
    proc_start = pw.CharField(max_length=32, default="")
    started_at = pw.DoubleField(default=time.time)
    heartbeat_at = pw.DoubleField(default=time.time)
    stopped_at = pw.DoubleField(null=True)


class WorkerRun(BaseModel):
    """One attempt of one ticket. (ticket, attempt) keys its effect: applied exactly once."""

    ticket = pw.ForeignKeyField(Ticket, backref="runs", on_delete="CASCADE")
    attempt = pw.IntegerField()
    profile = pw.CharField(max_length=64)
    session = pw.CharField(max_length=64)
    controller = pw.IntegerField(null=True)
    token = pw.IntegerField(default=0)
    host = pw.CharField(max_length=255, default="")
    pid = pw.IntegerField(null=True)
    proc_start = pw.CharField(max_length=32, default="")
    started_at = pw.DoubleField(default=time.time)
    ended_at = pw.DoubleField(null=True, index=True)
    exit_code = pw.IntegerField(null=True)
    signal = pw.IntegerField(null=True)
    timed_out = pw.BooleanField(default=False)
    log_path = pw.TextField(default="")
    # running -> done | died (the report, stored before anything acts on it)
    outcome = pw.CharField(max_length=16, default="running", index=True)
    done_sha = pw.CharField(max_length=40, null=True)
    death_reason = pw.TextField(null=True)
    log_tail = pw.TextField(null=True)
    feedback = pw.TextField(null=True)
    applied_at = pw.DoubleField(null=True)
    review_pid = pw.IntegerField(null=True)
    review_starts = pw.IntegerField(default=0)
    base_sha = pw.CharField(max_length=40, null=True)  # the branch head when the worker started
    review_proc_start = pw.CharField(max_length=32, default="")
    workdir = pw.TextField(null=True)  # where it ran (the ticket's worktree or scratch directory)
    # What an agent preset's CLI reported: its session (resumed by the next run), spend and turns.
    agent_session = pw.TextField(null=True)
    cost_usd = pw.DoubleField(null=True)
    input_tokens = pw.IntegerField(null=True)
    output_tokens = pw.IntegerField(null=True)
    turns = pw.IntegerField(null=True)
    leftovers = pw.TextField(null=True)  # uncommitted changes left beside a new commit (git status lines)

    class Meta:
        indexes = ((("ticket", "attempt"), True), (("outcome", "applied_at"), False))


class Escalation(BaseModel):
    """A ticket handed to a person; ``notified_at`` is set once ``on_escalate`` ran (outbox)."""

    ticket = pw.ForeignKeyField(Ticket, backref="escalations", on_delete="CASCADE")
    owner = pw.CharField(max_length=64)
    reason = pw.TextField()
    actor = pw.CharField(max_length=128)
    created_at = pw.DoubleField(default=time.time)
    notified_at = pw.DoubleField(null=True, index=True)


MODELS: tuple[type[BaseModel], ...] = (
    Meta,
    Ticket,
    Comment,
    ShadowReview,
    Event,
    HealthSnapshot,
    Controller,
    WorkerRun,
    Escalation,
)


def open_database(database: str, create: bool = False) -> pw.Database:
    """Open the store named by a config's ``database`` (a SQLite path or a postgresql:// URL).

    A SQLite file that does not exist is only created when ``create`` is true (``mc init``).
    """
    if database.startswith("postgresql://"):
        try:
            from playhouse.db_url import connect
        except ImportError as exc:  # pragma: no cover - peewee always ships db_url
            raise StoreError(str(exc)) from None
        try:
            real = connect(database)
            real.connect(reuse_if_open=True)
        except ImportError:
            raise StoreError("postgresql needs a driver: pip install 'mc-hooks[postgres]'") from None
        except pw.OperationalError as exc:
            raise StoreError(f"cannot connect to {database}: {str(exc).strip().splitlines()[0]}") from None
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


def schema_gaps() -> list[str]:
    """Tables and columns the models expect that the open database lacks (``["(no tables)"]`` if empty)."""
    tables = set(db.obj.get_tables())
    if Ticket._meta.table_name not in tables:
        return ["(no tables)"]
    gaps = []
    for model in MODELS:
        table = model._meta.table_name
        if table not in tables:
            gaps.append(table)
            continue
        columns = {column.name for column in db.obj.get_columns(table)}
        gaps += [f"{table}.{f.column_name}" for f in model._meta.sorted_fields if f.column_name not in columns]
    return gaps


def close_database() -> None:
    """Close the current connection, if any."""
    if db.obj is not None and not db.is_closed():
        db.close()


def _migrator(database: pw.Database) -> SchemaMigrator:
    if isinstance(database, pw.PostgresqlDatabase):
        return PostgresqlMigrator(database)
    return SqliteMigrator(database)


def init_schema() -> list[str]:
    """Create missing tables and add missing columns (with their defaults), keeping every row.

    Returns what was added, as ``table.column`` strings, for the user.
    """
    real = db.obj
    added: list[str] = []
    operations = []
    tables = set(real.get_tables())
    with db.atomic():
        migrator = _migrator(real)
        for model in MODELS:
            table = model._meta.table_name
            if table not in tables:
                continue
            columns = {column.name: column for column in real.get_columns(table)}
            existing = set(columns)
            for fld in model._meta.sorted_fields:
                column = columns.get(fld.column_name)
                widen = isinstance(real, pw.PostgresqlDatabase) and isinstance(fld, pw.DoubleField)
                if column is not None and widen and column.data_type.lower() == "real":
                    # Early PostgreSQL schemas stored timestamps as 4-byte floats (2-minute resolution).
                    operations.append(migrator.alter_column_type(table, fld.column_name, pw.DoubleField()))
                    added.append(f"{table}.{fld.column_name} (as double precision)")
                    continue
                if fld.column_name in existing:
                    continue
                if not fld.null and fld.default is None:
                    raise StoreError(f"cannot add {table}.{fld.column_name}: it has no default")
                operations.append(migrator.add_column(table, fld.column_name, fld))
                added.append(f"{table}.{fld.column_name}")
    if operations:
        sqlite = isinstance(real, pw.SqliteDatabase)
        if sqlite:  # SQLite rebuilds tables for NOT NULL columns; references must not fire meanwhile
            real.pragma("foreign_keys", 0)
        try:
            with db.atomic():
                migrate(*operations)
                if sqlite and real.execute_sql("PRAGMA foreign_key_check").fetchall():
                    raise StoreError("migration left rows whose references do not resolve; nothing was changed")
        finally:
            if sqlite:
                real.pragma("foreign_keys", 1)
    with db.atomic():
        db.create_tables(MODELS, safe=True)
        Meta.insert(key="db_id", value=uuid.uuid4().hex).on_conflict_ignore().execute()
        Meta.insert(key="schema_version", value="1").on_conflict_ignore().execute()
    return added


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
    conn.poll()
    woke = bool(conn.notifies)
    conn.notifies.clear()
    return woke


def database_id() -> str:
    """A random id made at ``mc init``; keeps worker sessions of different MC roots apart."""
    row = Meta.get_or_none(Meta.key == "db_id")
    return row.value if row else "unknown"


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
            with db.atomic():
                return fn()
        except pw.DatabaseError as exc:
            if not is_locked_error(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


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


def new_ticket(prefix: str, **fields: Any) -> Ticket:
    """Insert a ticket and give it the next key (``PREFIX-<id>``) in the same transaction."""
    now = time.time()
    ticket = Ticket.create(created_at=now, updated_at=now, **fields)
    ticket.key = f"{prefix}-{ticket.id}"
    Ticket.update(key=ticket.key).where(Ticket.id == ticket.id).execute()
    return ticket

"""The schema: what the open database lacks (:func:`schema_gaps`) and adding it, keeping every row
(:func:`init_schema`, run by `mc init`)."""

from __future__ import annotations

import uuid

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

from mission_control.store import StoreError
from mission_control.store.models import MODELS, Meta, Ticket, db
from mission_control.store.transactions import write


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
    write(_create_missing)
    return added


def _create_missing() -> None:
    """Create the tables and indexes that are missing, and nothing else: on a store that controllers are
    using, ``CREATE INDEX IF NOT EXISTS`` on every table would lock them all in one transaction (a
    deadlock with a running controller, seen on PostgreSQL)."""
    real = db.obj
    tables = set(real.get_tables())
    db.create_tables([m for m in MODELS if m._meta.table_name not in tables], safe=True)
    for model in MODELS:
        table = model._meta.table_name
        if table not in tables:
            continue
        present = {index.name for index in real.get_indexes(table)}
        for index in model._meta.fields_to_index():
            if index._name not in present:
                db.execute(model._schema._create_index(index, safe=True))  # type: ignore[attr-defined]
    Meta.insert(key="db_id", value=uuid.uuid4().hex).on_conflict_ignore().execute()
    Meta.insert(key="schema_version", value="1").on_conflict_ignore().execute()

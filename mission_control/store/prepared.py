"""Statements built once. peewee builds a hot query's SQL the first time it runs, with sample values
standing in for its parameters; every later run executes that SQL with its own values, in the positions
the samples took. Rows come back as tuples, or as model objects built straight from them.

On the controller's hot path building SQL and wrapping rows cost ten times what running the statements
did (see docs/benchmarks.md): this keeps peewee as the one place SQL is written, and pays for it once.

A statement is cached per name, database kind, and the kind of each value (a None or a bool is part of
the key: ``IS NULL`` and ``= 1`` are different SQL). Strings are made storable the way the models'
text columns make them (:func:`models.storable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee as pw

from mission_control.store.models import BaseModel, db, storable

M = TypeVar("M", bound=BaseModel)
Build = Callable[[Any], Any]  # given the samples (attribute per value), the peewee query


class _Samples:
    """Hands out a unique sample for each named value; remembers which sample stands for which name."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values
        self.names: dict[Any, str] = {}

    def __getattr__(self, name: str) -> Any:
        value = self._values[name]
        if value is None or isinstance(value, bool):
            return value  # part of the cache key: it may change the SQL itself
        number = len(self.names) + 1
        # Distinct from each other and from any constant of a query; floats exact (a fraction of .25).
        if isinstance(value, int):
            sample: Any = -987_654_321 - number
        elif isinstance(value, float):
            sample = -987_654.25 - number
        elif isinstance(value, str):
            sample = f"mc-sample-{number}-\u2042"
        else:
            raise TypeError(f"a prepared statement takes int, float, str, bool or None, not {type(value).__name__}")
        if sample in self.names:  # never: the samples are made distinct
            raise AssertionError(f"sample {sample!r} stands for two values")
        self.names[sample] = name
        return sample


_CACHE: dict[tuple[Any, ...], tuple[str, tuple[tuple[bool, Any], ...]]] = {}


def _statement(name: str, build: Build, values: dict[str, Any]) -> tuple[str, tuple[tuple[bool, Any], ...]]:
    shape = tuple((k, type(v), v if v is None or isinstance(v, bool) else 0) for k, v in sorted(values.items()))
    key = (name, type(db.obj), shape)
    cached = _CACHE.get(key)
    if cached is None:
        samples = _Samples(values)
        sql, params = build(samples).sql()
        slots = tuple((True, samples.names[p]) if p in samples.names else (False, p) for p in params)
        used = {name for is_value, name in slots if is_value}
        if used != set(samples.names.values()):  # a value peewee put into the SQL text instead of a parameter
            raise ValueError(
                f"prepared statement {name!r}: {sorted(set(samples.names.values()) - used)} not parameters"
            )
        cached = _CACHE[key] = (sql, slots)
    return cached


def execute(name: str, build: Build, **values: Any) -> Any:
    """Run the statement ``build`` makes (built once per shape) with ``values``; the driver's cursor."""
    sql, slots = _statement(name, build, values)
    params = [storable(values[ref]) if is_value else ref for is_value, ref in slots]
    return db.execute_sql(sql, params)


def rows(name: str, build: Build, **values: Any) -> list[tuple[Any, ...]]:
    """The rows of a prepared select, as tuples."""
    return list(execute(name, build, **values).fetchall())


def scalar(name: str, build: Build, **values: Any) -> Any:
    """The first column of the first row of a prepared select, or None."""
    row = execute(name, build, **values).fetchone()
    return None if row is None else row[0]


def count(name: str, build: Build, **values: Any) -> int:
    """How many rows a prepared UPDATE or DELETE changed."""
    return int(execute(name, build, **values).rowcount)


def inserted_id(name: str, build: Build, **values: Any) -> int:
    """Run a prepared INSERT and return the new row's id."""
    cursor = execute(name, build, **values)
    if isinstance(db.obj, pw.PostgresqlDatabase):  # peewee adds RETURNING "id"
        return int(cursor.fetchone()[0])
    return int(cursor.lastrowid)


def columns(*models: type[BaseModel]) -> list[pw.Field]:
    """Every column of ``models``, in the order :func:`load` reads them back."""
    return [field for model in models for field in model._meta.sorted_fields]


def load(model: type[M], row: Sequence[Any], offset: int = 0) -> M:
    """A model object from ``row[offset:]`` (its columns in :func:`columns` order), built without
    peewee's per-row machinery: the values are the driver's, booleans made bool."""
    fields = model._meta.sorted_fields
    data = {}
    for index, field in enumerate(fields, offset):
        value = row[index]
        data[field.name] = bool(value) if value is not None and isinstance(field, pw.BooleanField) else value
    return _model(model, data)


def load_joined(model: type[M], related: type[BaseModel], via: str, row: Sequence[Any]) -> M:
    """A ``model`` object with its ``via`` relation (a ``related`` object) loaded, from a row of
    ``columns(model, related)``."""
    obj = load(model, row)
    obj.__rel__[via] = load(related, row, len(model._meta.sorted_fields))
    return obj


def insert(model: type[M], **values: Any) -> M:
    """INSERT a row (statement built once per model and set of columns) and return it as a model
    object with its id. Every column is given: defaults are filled in here, per row, never frozen
    into the cached statement (a ``created_at=time.time`` default included)."""
    for name, default in model._meta.defaults.items():
        if name.name not in values:
            values[name.name] = default() if callable(default) else default
    fields = [model._meta.fields[name] for name in sorted(values)]
    params = {f"v_{field.name}": _db_value(field, values[field.name]) for field in fields}
    new_id = inserted_id(
        f"insert:{model.__name__}",
        lambda p: model.insert({field: getattr(p, f"v_{field.name}") for field in fields}),
        **params,
    )
    return _model(model, {**values, "id": new_id})


def _model(model: type[M], data: dict[str, Any]) -> M:
    """A model object holding ``data`` as read from its row (what peewee's own row reading leaves)."""
    obj = model.__new__(model)
    obj.__data__ = data
    obj._dirty = set()  # type: ignore[attr-defined]  # peewee's, set in Model.__init__
    obj.__rel__ = {}
    return obj


def _db_value(field: pw.Field, value: Any) -> Any:
    """A value as its column stores it, where that is not the value itself (a related row is its id)."""
    if isinstance(value, BaseModel):
        return value.id
    return value

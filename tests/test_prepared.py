"""Statements built once (mission_control/store/prepared.py): peewee builds a hot query's SQL the first
time, later runs reuse it with their own values, and rows come back as the models peewee would build."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from mission_control.store import prepared
from mission_control.store.connection import open_database
from mission_control.store.migration import init_schema
from mission_control.store.models import Ticket, WorkerRun, db
from mission_control.store.prepared import columns, load, load_joined


@pytest.fixture
def store(tmp_path: Path) -> Iterator[None]:
    open_database(str(tmp_path / "mc.db"), create=True)
    init_schema()
    prepared._CACHE.clear()
    yield
    db.close()


def ticket(title: str, status: str = "todo", checked: bool = False) -> Ticket:
    return Ticket.create(title=title, key=f"MC-{title}", status=status, operator_checked=checked)


def by_status(p: Any) -> Any:
    return Ticket.select(Ticket.title).where(Ticket.status == p.status).order_by(Ticket.id)


def test_a_statement_is_built_once_and_run_with_each_calls_values(store: None, mocker: Any) -> None:
    ticket("a")
    ticket("b", status="done")
    build = mocker.Mock(side_effect=by_status)
    assert prepared.rows("by_status", build, status="todo") == [("a",)]
    assert prepared.rows("by_status", build, status="done") == [("b",)]
    assert build.call_count == 1


def test_a_none_value_is_its_own_statement(store: None) -> None:
    ticket("a").update(claimed_by=None).execute()

    def claimed(p: Any) -> Any:
        return Ticket.select(Ticket.title).where(Ticket.claimed_by == p.by)

    assert prepared.rows("claimed", claimed, by=None) == [("a",)]  # IS NULL, not = NULL
    assert prepared.rows("claimed", claimed, by=7) == []


def test_a_value_peewee_writes_into_the_sql_text_is_refused(store: None) -> None:
    def inlined(p: Any) -> Any:
        return Ticket.select().where(pw.SQL(f"title = '{p.title}'"))

    with pytest.raises(ValueError, match="not parameters"):
        prepared.rows("inlined", inlined, title="x")


def test_strings_are_stored_as_the_text_columns_store_them(store: None) -> None:
    made = ticket("a")
    retitle = lambda p: Ticket.update(title=p.title).where(Ticket.id == p.id)  # noqa: E731
    prepared.count("retitle", retitle, title="x\x00y", id=made.id)
    assert Ticket.get_by_id(made.id).title == "x\\0y"


def test_loaded_rows_equal_what_peewee_builds(store: None) -> None:
    made = ticket("a", checked=True)
    run = WorkerRun.create(ticket=made, attempt=1, profile="default", session="s", log_path="/l", host="h")
    row = prepared.rows("one", lambda p: WorkerRun.select(*columns(WorkerRun, Ticket)).join(Ticket), **{})[0]
    fast = load_joined(WorkerRun, Ticket, "ticket", row)
    assert fast.__data__ == WorkerRun.get_by_id(run.id).__data__
    assert fast.ticket.__data__ == Ticket.get_by_id(made.id).__data__ and fast.ticket.operator_checked is True
    assert load(Ticket, prepared.rows("t", lambda p: Ticket.select(*columns(Ticket)), **{})[0]).title == "a"


def test_an_insert_fills_defaults_per_row_never_frozen_into_the_statement(store: None) -> None:
    made = ticket("a")
    first = prepared.insert(WorkerRun, ticket=made.id, attempt=1, profile="p", session="s", log_path="/l", host="h")
    time.sleep(0.01)
    second = prepared.insert(WorkerRun, ticket=made.id, attempt=2, profile="p", session="s", log_path="/l", host="h")
    stored = [WorkerRun.get_by_id(r.id) for r in (first, second)]
    assert stored[1].started_at > stored[0].started_at  # time.time() each time
    assert [r.outcome for r in stored] == ["running", "running"] and second.id == first.id + 1

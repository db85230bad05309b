"""The PostgreSQL store's transactions: each one's BEGIN travels with its first statement (one round trip
fewer), and a transaction is still all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mission_control.store import queries
from mission_control.store.connection import close_database, open_database
from mission_control.store.migration import init_schema
from mission_control.store.models import Ticket, db
from mission_control.store.transactions import write


@pytest.fixture
def sent(fresh_postgres: str) -> Iterator[list[str]]:
    """The SQL the store sends the server, one entry per round trip, on a fresh PostgreSQL store."""
    import psycopg2.extensions

    open_database(fresh_postgres, create=True)
    init_schema()
    trips: list[str] = []

    class Recording(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            trips.append(query if isinstance(query, str) else query.decode())
            return super().execute(query, vars)

    db.obj.connection().cursor_factory = Recording
    yield trips
    close_database()


def test_a_transaction_sends_its_begin_with_its_first_statement(sent: list[str]) -> None:
    write(lambda: queries.new_ticket("MC", title="first"))
    assert "BEGIN" not in sent  # never a round trip of its own
    assert sent[0].startswith("BEGIN TRANSACTION; INSERT INTO")
    assert sent[-1] == "COMMIT"


def test_a_transaction_that_runs_no_statement_sends_nothing(sent: list[str]) -> None:
    write(lambda: None)
    assert sent == []


def test_a_transaction_that_fails_undoes_its_first_statement(sent: list[str]) -> None:
    def half_done() -> None:
        queries.new_ticket("MC", title="half")
        raise RuntimeError("the body failed after its first statement")

    with pytest.raises(RuntimeError):
        write(half_done)
    assert sent[-1] == "ROLLBACK"
    assert Ticket.select().where(Ticket.title == "half").count() == 0


def test_a_statement_outside_a_transaction_goes_alone(sent: list[str]) -> None:
    write(lambda: queries.new_ticket("MC", title="first"))
    sent.clear()
    assert Ticket.select().count() == 1
    assert len(sent) == 1 and sent[0].startswith("SELECT")

"""A transaction's audit events are inserted in one statement when it commits
(mission_control/store/deferred.py), and none is lost, duplicated or left behind by the wait."""

from __future__ import annotations

from typing import Any

import peewee as pw
import pytest

from mc_hooks import hookimpl
from mc_hooks.manager import load_plugins
from mission_control.controller import Controller
from mission_control.store import deferred
from mission_control.store.models import Event
from mission_control.store.transactions import write


def events() -> list[str]:
    return [e.detail for e in Event.select().order_by(Event.id)]


@pytest.fixture
def inserts(mocker: Any) -> list[str]:
    """The INSERT INTO event statements run from here on."""
    seen: list[str] = []
    execute = pw.Database.execute_sql

    def counted(self: pw.Database, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith('INSERT INTO "event"'):
            seen.append(sql)
        return execute(self, sql, params, *args, **kwargs)

    mocker.patch.object(pw.Database, "execute_sql", counted)
    return seen


def test_a_transactions_events_are_inserted_in_one_statement(mc_controller, make_ticket, inserts) -> None:
    ticket = make_ticket()
    write(lambda: [mc_controller.record(ticket, "note", f"event {n}") for n in range(5)])
    assert len(inserts) == 1
    assert events() == [f"event {n}" for n in range(5)]


def test_an_event_recorded_outside_a_transaction_is_inserted_at_once(mc_controller, make_ticket) -> None:
    mc_controller.record(make_ticket(), "note", "alone")
    assert events() == ["alone"]


def test_a_read_inside_the_transaction_sees_its_events(mc_controller, make_ticket) -> None:
    ticket = make_ticket()

    def body() -> list[str]:
        mc_controller.record(ticket, "death", "first")
        return [e.detail for e in mc_controller.events_since(0.0, ("death",))]

    assert write(body) == ["first"]
    assert events() == ["first"]


def test_a_transaction_that_rolls_back_leaves_no_event_behind(mc_controller, make_ticket) -> None:
    ticket = make_ticket()

    def body() -> None:
        mc_controller.record(ticket, "note", "rolled back")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write(body)
    write(lambda: mc_controller.record(ticket, "note", "next"))
    assert events() == ["next"]


class Raises:
    """An ``on_ticket_event`` plugin that records, reads the events back, then raises."""

    @hookimpl
    def on_ticket_event(self, ticket: Any, event: Event, controller: Controller) -> None:
        if event.action == "note":
            controller.record(ticket, "plugin-note", "from the plugin")
            controller.events_since(0.0, ("note",))
            raise RuntimeError("boom")


def test_an_effect_hook_is_handed_events_once_committed_and_a_failure_is_recorded_for_a_retry(
    mc_controller, make_ticket
) -> None:
    from mission_control.effects import EffectHooks, read_cursor

    host = load_plugins(mc_controller.config, extra=[("raises", Raises())])
    controller = Controller(mc_controller.config, hooks=host.hook)
    effects = EffectHooks(controller.config, host, lambda: Controller(controller.config, hooks=host.hook))
    effects.open()
    controller.effects = effects.deliver_now
    ticket = make_ticket()

    def body() -> None:
        controller.record(ticket, "before", "recorded before the note")
        controller.record(ticket, "note", "the note")
        assert "from the plugin" not in events()  # nothing is handed over inside the transaction

    write(body)
    details = events()
    assert details[:3] == ["recorded before the note", "the note", "from the plugin"]  # after commit
    assert any("raises raised in on_ticket_event" in d for d in details)
    cursor = read_cursor("raises", "on_ticket_event")
    assert cursor is not None and [(r["attempts"], r["retry_at"] > 0) for r in cursor.retries] == [(1, True)]
    assert not deferred._STATE.rows and not deferred._STATE.marks


def test_many_events_are_inserted_in_chunks(mc_controller, make_ticket, inserts) -> None:
    ticket = make_ticket()
    count = deferred.CHUNK * 2 + 1
    write(lambda: [mc_controller.record(ticket, "note", str(n)) for n in range(count)])
    assert len(inserts) == 3
    assert events() == [str(n) for n in range(count)]

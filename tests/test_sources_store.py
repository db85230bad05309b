"""The sync pass's queries on both stores: one ticket per tracker item, and which done work is still to
hand back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from conftest import each_store
from mission_control.store import queries, sources
from mission_control.store.connection import close_database, open_database
from mission_control.store.migration import init_schema
from mission_control.store.transactions import write

pytestmark = each_store


@pytest.fixture
def opened(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    url = request.getfixturevalue("fresh_postgres") if store.startswith("postgresql") else str(tmp_path / "mc.db")
    open_database(url, create=True)
    init_schema()
    yield
    close_database()


def test_a_tracker_item_can_be_a_ticket_only_once(opened: None) -> None:
    write(lambda: queries.new_ticket("MC", title="one", source="github:acme/app#1"))

    with pytest.raises(pw.IntegrityError):
        write(lambda: queries.new_ticket("MC", title="again", source="github:acme/app#1"))
    write(lambda: queries.new_ticket("MC", title="local"))
    write(lambda: queries.new_ticket("MC", title="local too"))  # no source: any number of them

    assert [t.title for t in sources.tickets_by_source(["github:acme/app#1"]).values()] == ["one"]


def test_done_work_is_to_deliver_until_its_commit_is_handed_back_and_after_a_new_one(opened: None) -> None:
    def ticket(title: str, status: str, sha: str | None) -> int:
        return write(lambda: queries.new_ticket("MC", title=title, source=title, status=status, done_sha=sha)).id

    new = ticket("new", "done", "a" * 40)
    delivered = ticket("delivered", "done", "b" * 40)
    again = ticket("sent back and done again", "done", "d" * 40)
    merged = ticket("merged", "done", "e" * 40)
    ticket("running", "in_progress", None)
    write(lambda: queries.new_ticket("MC", title="local", status="done", done_sha="f" * 40))
    write(lambda: sources.save_delivery(delivered, "github", "u", "pull/1", "b" * 40))
    write(lambda: sources.save_delivery(again, "github", "u", "pull/2", "c" * 40))
    write(lambda: sources.save_delivery(merged, "github", "u", "pull/3", "0" * 40))
    write(lambda: sources.update_delivery(sources.delivery_of(merged), state="merged"))
    write(lambda: sources.mark_seen(new, "github", ["comment:1"]))  # an answer seen: not a delivery

    assert [t.id for t in sources.to_deliver()] == [new, again]

"""The ticket store: migration of an old database, keys, and owner-only files."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from conftest import McRoot, each_store
from mission_control.store import StoreError
from mission_control.store.connection import open_database

OLD_SCHEMA = """
CREATE TABLE ticket (id INTEGER PRIMARY KEY, key VARCHAR(40) UNIQUE, title TEXT NOT NULL, body TEXT NOT NULL,
    repo TEXT, worker VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, done_sha VARCHAR(40),
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE comment (id INTEGER PRIMARY KEY, ticket_id INTEGER NOT NULL REFERENCES ticket(id),
    author VARCHAR(64) NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL);
INSERT INTO ticket VALUES (1, 'MC-1', 'old one', 'body', NULL, 'default', 'done', 'abcdef1', 1.0, 2.0);
INSERT INTO ticket VALUES (2, 'MC-2', 'old two', '', NULL, 'default', 'todo', NULL, 3.0, 4.0);
INSERT INTO comment VALUES (1, 1, 'elmar', 'kept', 5.0);
"""


def test_init_migrates_a_database_made_before_review_cycles_and_death_count(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with sqlite3.connect(root / "mc.db") as conn:
        conn.executescript(OLD_SCHEMA)
    mc = McRoot.__new__(McRoot)
    mc.path, mc.state = root, root / "state"
    mc.state.mkdir()
    (root / "config.yaml").write_text("database: mc.db\n", encoding="utf-8")
    out = mc.mc("init").stdout
    assert "ticket.review_cycles" in out and "ticket.death_count" in out
    one, two = mc.show("MC-1"), mc.show("MC-2")
    assert (one["title"], one["status"], one["done_sha"], one["review_cycles"], one["death_count"]) == (
        "old one",
        "done",
        "abcdef1",
        0,
        0,
    )
    assert one["comments"][0]["body"] == "kept"
    assert (two["title"], two["status"]) == ("old two", "todo")
    assert mc.mc("init").stdout.startswith("database ready")  # idempotent
    assert mc.add("new one") == "MC-3"


def test_ticket_keys_use_the_configured_prefix(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root", ticket_prefix="OPS")
    assert [mc.add("a"), mc.add("b")] == ["OPS-1", "OPS-2"]


@each_store
def test_database_and_logs_are_readable_by_the_owner_only(mc_root: McRoot) -> None:
    key = mc_root.add("private")
    mc_root.run()
    if (mc_root.path / "mc.db").exists() or mc_root.config["database"] == "mc.db":
        assert stat.S_IMODE((mc_root.path / "mc.db").stat().st_mode) == 0o600
    log_dir = mc_root.path / "logs" / key
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    for path in log_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_missing_database_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_database(str(tmp_path / "nope" / "mc.db"), create=True)


def test_commands_other_than_init_do_not_create_a_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="run `mc init`"):
        open_database(str(tmp_path / "mc.db"))
    assert not (tmp_path / "mc.db").exists()


def test_init_widens_postgresql_timestamps_stored_as_4_byte_floats(tmp_path: Path, fresh_postgres: str) -> None:
    import psycopg2

    with psycopg2.connect(fresh_postgres) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE controller (id serial PRIMARY KEY, host varchar(255) NOT NULL, pid integer NOT NULL, "
            "proc_start varchar(32) NOT NULL, started_at real NOT NULL, heartbeat_at real NOT NULL, "
            "stopped_at real)"
        )
        cur.execute(
            "INSERT INTO controller (host, pid, proc_start, started_at, heartbeat_at) "
            "VALUES ('h', 1, '', 1795250515, 1795250515)"
        )
    mc = McRoot.__new__(McRoot)
    mc.path, mc.state, mc.config = tmp_path, tmp_path / "state", {"database": fresh_postgres}
    (tmp_path / "config.yaml").write_text(f"database: {fresh_postgres}\n", encoding="utf-8")
    assert "controller.heartbeat_at (as double precision)" in mc.mc("init").stdout
    assert mc.sql(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'controller' "
        "AND column_name = 'heartbeat_at'"
    ) == [("double precision",)]
    assert mc.sql("SELECT count(*) FROM controller") == [(1,)]


def test_a_database_without_the_schema_says_to_run_init(tmp_path: Path) -> None:
    (tmp_path / "mc.db").touch()
    (tmp_path / "config.yaml").write_text("database: mc.db\n", encoding="utf-8")
    mc = McRoot.__new__(McRoot)
    mc.path, mc.state, mc.config = tmp_path, tmp_path / "state", {"database": "mc.db"}
    result = mc.mc("ticket", "list", check=False)
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"mc: {tmp_path / 'mc.db'}: no Mission Control schema here yet (run `mc init`)",
    )


def test_an_older_schema_says_to_migrate_before_anything_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with sqlite3.connect(root / "mc.db") as conn:
        conn.executescript(OLD_SCHEMA)
    (root / "config.yaml").write_text("database: mc.db\n", encoding="utf-8")
    mc = McRoot.__new__(McRoot)
    mc.path, mc.state, mc.config = root, root / "state", {"database": "mc.db"}
    result = mc.mc("ticket", "list", check=False)
    assert result.returncode == 2 and "the schema is older than this mc" in result.stderr
    assert "run `mc init` to migrate it" in result.stderr and "Traceback" not in result.stderr


def test_init_on_a_store_in_use_takes_no_table_locks(tmp_path: Path, fresh_postgres: str) -> None:
    """`mc init` beside running controllers: with the schema complete it creates nothing, so it neither
    waits for their transactions nor deadlocks with them (it used to lock every table for its
    CREATE INDEX IF NOT EXISTS)."""
    import psycopg2

    mc = McRoot(tmp_path / "root", database=fresh_postgres)
    mc.mc("ticket", "add", "busy")
    controller = psycopg2.connect(fresh_postgres)
    with controller.cursor() as cur:  # a controller's open write transaction on the ticket table
        cur.execute("UPDATE ticket SET updated_at = updated_at")
    try:
        assert mc.mc("init", timeout=20).returncode == 0
    finally:
        controller.rollback()
        controller.close()


def test_init_restores_a_missing_index(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root")
    db = sqlite3.connect(mc.path / "mc.db")
    db.execute("DROP INDEX ticket_status")
    db.commit()
    mc.mc("init")
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ticket_status" in names

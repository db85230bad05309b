"""The loop's decisions, in process: a real store, real plugins and real launch plans, with the
processes replaced by scripted ones (tests/inprocess.py), so each story runs in milliseconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from inprocess import InstantWatcher, ScriptedStarts
from mission_control import mc_orchestrator_flags as flags
from mission_control.config import Config, load_config
from mission_control.launch import Launch
from mission_control.mc_pickup import Pickup
from mission_control.store import queries
from mission_control.store.connection import close_database, open_database
from mission_control.store.migration import init_schema
from mission_control.store.models import ControllerProcess, Escalation, Event, ShadowReview, Ticket, WorkerRun

SHA = "abc1234def5678"


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Config]:
    root = tmp_path / "mc"
    root.mkdir()
    settings = {
        "database": "mc.db",
        "escalation": {"owner": "elmar"},
        "max_workers": 2,
        "workers": {"default": {"command": ["scripted-agent", "{prompt_file}"], "timeout": 60}},
        "reviewer": {"enabled": True, "command": ["scripted-reviewer", "{sha}"], "timeout": 60},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    loaded = load_config(root / "config.yaml", env={})
    open_database(loaded.database, create=True)
    init_schema()
    yield loaded
    close_database()


def by_title(kind: str, run: WorkerRun, plan: Launch) -> tuple[int, str]:
    """The ticket title is a script, one step per attempt: pass, fail (review fails), die (worker dies)."""
    steps = run.ticket.title.split(",")
    step = steps[min(run.attempt, len(steps)) - 1].strip()
    if kind == "worker":
        return (1, "gave up\n") if step == "die" else (0, f"DONE: {SHA}{run.attempt}\n")
    verdict = {"verdict": "fail", "reasons": ["missing tests"], "gaps": ["add a test"]} if step == "fail" else None
    return 0, json.dumps(verdict or {"verdict": "pass", "reasons": [], "gaps": []}) + "\n"


def add(config: Config, title: str) -> Ticket:
    return queries.new_ticket(config.ticket_prefix, title=title)


def run_until_idle(config: Config, starts: ScriptedStarts) -> int:
    return Pickup(config, until_idle=True, quiet=True, watcher=InstantWatcher(), start=starts).run()


def actions(ticket: Ticket) -> list[str]:
    return [e.action for e in Event.select().where(Event.ticket == ticket.id).order_by(Event.id)]


def test_a_reported_commit_is_reviewed_then_the_ticket_is_done(config: Config) -> None:
    ticket = add(config, "pass")
    starts = ScriptedStarts(by_title)
    assert run_until_idle(config, starts) == 0
    done = Ticket.get_by_id(ticket.id)
    assert (done.status, done.done_sha, done.attempts) == ("done", f"{SHA}1", 1)
    assert [kind for kind, _, _ in starts.started] == ["worker", "review"]
    assert actions(ticket)[:4] == ["dispatch", "done", "review", "verdict"]


def test_a_failed_review_sends_the_gaps_to_the_next_attempt(config: Config) -> None:
    ticket = add(config, "fail, pass")
    run_until_idle(config, ScriptedStarts(by_title))
    done = Ticket.get_by_id(ticket.id)
    assert (done.status, done.attempts, done.review_cycles) == ("done", 2, 1)
    second_prompt = (config.root / "logs" / ticket.key / "2.prompt.md").read_text(encoding="utf-8")
    assert "add a test" in second_prompt


def test_a_dead_worker_is_retried_once_then_escalated(config: Config) -> None:
    ticket = add(config, "die, die")
    run_until_idle(config, ScriptedStarts(by_title))
    stuck = Ticket.get_by_id(ticket.id)
    assert (stuck.status, stuck.death_count, stuck.attempts) == ("needs_input", 2, 2)
    assert Escalation.select().where(Escalation.ticket == ticket.id).count() == 1


def test_the_kill_switch_holds_dispatch_and_the_veto_is_logged_once(config: Config) -> None:
    ticket = add(config, "pass")
    flags.engage_killswitch(config.root, who="test", reason="maintenance")
    starts = ScriptedStarts(by_title)
    run_until_idle(config, starts)
    assert Ticket.get_by_id(ticket.id).status == "todo" and starts.started == []
    assert actions(ticket) == ["veto"]


def test_a_worker_that_cannot_start_counts_as_a_death_with_the_reason(config: Config) -> None:
    ticket = add(config, "pass")

    def cannot_start(kind: str, run: WorkerRun, plan: Launch) -> tuple[int, str]:
        raise FileNotFoundError(2, "No such file or directory", "scripted-agent")

    run_until_idle(config, ScriptedStarts(cannot_start))
    runs = list(WorkerRun.select().where(WorkerRun.ticket == ticket.id).order_by(WorkerRun.attempt))
    assert [r.death_reason for r in runs] == [
        "could not start: [Errno 2] No such file or directory: 'scripted-agent'"
    ] * 2
    assert Ticket.get_by_id(ticket.id).status == "needs_input"


def test_an_attempt_its_dead_controller_never_started_goes_back_to_todo_without_a_death(config: Config) -> None:
    ticket = add(config, "pass")
    gone = ControllerProcess.create(host="elsewhere", pid=1, heartbeat_at=0.0, started_at=0.0)
    Ticket.update(status="in_progress", claimed_by=gone.id, claim_token=1, attempts=1).where(
        Ticket.id == ticket.id
    ).execute()
    WorkerRun.create(ticket=ticket.id, attempt=1, profile="default", session="s", controller=gone.id, token=1)
    run_until_idle(config, ScriptedStarts(by_title))
    done = Ticket.get_by_id(ticket.id)
    assert (done.status, done.death_count, done.attempts) == ("done", 0, 2)
    assert "attempt 1 never started; back to todo" in [
        e.detail for e in Event.select().where(Event.action == "recover")
    ]


def test_a_reviewer_line_with_a_lone_surrogate_is_stored_and_the_loop_goes_on(config: Config) -> None:
    """Hostile item 7: ``\\ud800`` in a verdict crashed every restart with UnicodeEncodeError."""
    ticket = add(config, "pass")

    def surrogate_reviewer(kind: str, run: WorkerRun, plan: Launch) -> tuple[int, str]:
        if kind == "worker":
            return by_title(kind, run, plan)
        return 0, '{"verdict": "fail", "reasons": ["bad \\ud800 byte"], "gaps": ["fix \\udfff"]}\n'

    assert run_until_idle(config, ScriptedStarts(surrogate_reviewer)) == 0
    first = ShadowReview.select().where(ShadowReview.ticket == ticket.id).order_by(ShadowReview.id).first()
    assert (first.verdict, first.reasons) == ("fail", ["bad \ud800 byte"])  # kept exactly, as JSON escapes
    verdicts = [e.detail for e in Event.select().where(Event.action == "verdict")]
    assert verdicts[0] == "fail for abc1234def56: bad \ufffd byte"  # the audit text as UTF-8 can carry it
    second_prompt = (config.root / "logs" / ticket.key / "2.prompt.md").read_text(encoding="utf-8")
    assert "fix \ufffd" in second_prompt
    assert Ticket.get_by_id(ticket.id).status == "needs_input"  # the review loop ran to its limit

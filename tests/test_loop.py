"""The loop's decisions, in process: a real store, real plugins and real launch plans, with the
processes replaced by scripted ones (tests/inprocess.py), so each story runs in milliseconds."""

from __future__ import annotations

from inprocess import SHA, ScriptedStarts, add, by_title, run_until_idle
from mission_control import mc_orchestrator_flags as flags
from mission_control.config import Config
from mission_control.launch import Launch
from mission_control.store.models import ControllerProcess, Escalation, Event, Ticket, WorkerRun


def actions(ticket: Ticket) -> list[str]:
    return [e.action for e in Event.select().where(Event.ticket == ticket.id).order_by(Event.id)]


def test_a_reported_commit_is_reviewed_then_the_ticket_is_done(loop_config: Config) -> None:
    ticket = add(loop_config, "pass")
    starts = ScriptedStarts(by_title)
    assert run_until_idle(loop_config, starts) == 0
    done = Ticket.get_by_id(ticket.id)
    assert (done.status, done.done_sha, done.attempts) == ("done", f"{SHA}1", 1)
    assert [kind for kind, _, _ in starts.started] == ["worker", "review"]
    assert actions(ticket)[:4] == ["dispatch", "done", "review", "verdict"]


def test_a_failed_review_sends_the_gaps_to_the_next_attempt(loop_config: Config) -> None:
    ticket = add(loop_config, "fail, pass")
    run_until_idle(loop_config, ScriptedStarts(by_title))
    done = Ticket.get_by_id(ticket.id)
    assert (done.status, done.attempts, done.review_cycles) == ("done", 2, 1)
    second_prompt = (loop_config.root / "logs" / ticket.key / "2.prompt.md").read_text(encoding="utf-8")
    assert "add a test" in second_prompt


def test_a_dead_worker_is_retried_once_then_escalated(loop_config: Config) -> None:
    ticket = add(loop_config, "die, die")
    run_until_idle(loop_config, ScriptedStarts(by_title))
    stuck = Ticket.get_by_id(ticket.id)
    assert (stuck.status, stuck.death_count, stuck.attempts) == ("needs_input", 2, 2)
    assert Escalation.select().where(Escalation.ticket == ticket.id).count() == 1


def test_the_kill_switch_holds_dispatch_and_the_veto_is_logged_once(loop_config: Config) -> None:
    ticket = add(loop_config, "pass")
    flags.engage_killswitch(loop_config.root, who="test", reason="maintenance")
    starts = ScriptedStarts(by_title)
    run_until_idle(loop_config, starts)
    assert Ticket.get_by_id(ticket.id).status == "todo" and starts.started == []
    assert actions(ticket) == ["veto"]


def test_a_worker_that_cannot_start_counts_as_a_death_with_the_reason(loop_config: Config) -> None:
    ticket = add(loop_config, "pass")

    def cannot_start(kind: str, run: WorkerRun, plan: Launch) -> tuple[int, str]:
        raise FileNotFoundError(2, "No such file or directory", "scripted-agent")

    run_until_idle(loop_config, ScriptedStarts(cannot_start))
    runs = list(WorkerRun.select().where(WorkerRun.ticket == ticket.id).order_by(WorkerRun.attempt))
    assert [r.death_reason for r in runs] == [
        "could not start: [Errno 2] No such file or directory: 'scripted-agent'"
    ] * 2
    assert Ticket.get_by_id(ticket.id).status == "needs_input"


def test_an_attempt_its_dead_controller_never_started_goes_back_to_todo_without_a_death(loop_config: Config) -> None:
    ticket = add(loop_config, "pass")
    gone = ControllerProcess.create(host="elsewhere", pid=1, heartbeat_at=0.0, started_at=0.0)
    Ticket.update(status="in_progress", claimed_by=gone.id, claim_token=1, attempts=1).where(
        Ticket.id == ticket.id
    ).execute()
    WorkerRun.create(ticket=ticket.id, attempt=1, profile="default", session="s", controller=gone.id, token=1)
    run_until_idle(loop_config, ScriptedStarts(by_title))
    done = Ticket.get_by_id(ticket.id)
    assert (done.status, done.death_count, done.attempts) == ("done", 0, 2)
    assert "attempt 1 never started; back to todo" in [
        e.detail for e in Event.select().where(Event.action == "recover")
    ]


def test_a_done_reported_after_its_ticket_moved_on_is_stored_but_never_applied(loop_config: Config) -> None:
    ticket = add(loop_config, "pass")

    def moved_while_running(kind: str, run: WorkerRun, plan: Launch) -> tuple[int, str]:
        # A person blocks the ticket while its worker runs: the claim the run started under is gone.
        Ticket.update(status="blocked", claimed_by=None, claim_token=Ticket.claim_token + 1).where(
            Ticket.id == ticket.id
        ).execute()
        return by_title(kind, run, plan)

    starts = ScriptedStarts(moved_while_running)
    run_until_idle(loop_config, starts)
    held = Ticket.get_by_id(ticket.id)
    run = WorkerRun.get(WorkerRun.ticket == ticket.id)
    assert (held.status, held.done_sha) == ("blocked", None)
    assert (run.outcome, run.done_sha, run.applied_at is not None) == ("done", f"{SHA}1", True)
    assert [kind for kind, _, _ in starts.started] == ["worker"]  # no review of a sha nobody will apply
    done = Event.get((Event.ticket == ticket.id) & (Event.action == "done"))
    assert "not applied: the ticket was changed meanwhile" in done.detail

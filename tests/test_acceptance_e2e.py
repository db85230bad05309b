"""One end-to-end test per acceptance criterion of MC-4302 and MC-4304, through `mc run` with real
subprocess workers (the scripted agent) and a real reviewer process (the scripted reviewer)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from conftest import McRoot, worker_runs

pytestmark = pytest.mark.slow  # end-to-end: real `mc` processes (CI runs them; `-m 'not slow'` skips)

MAX_CYCLES = "Max review cycles reached. Needs Elmar decision."
DIED_TWICE = "Worker died twice. Needs Elmar to review."


def comments(ticket: dict) -> list[str]:
    return [c["body"] for c in ticket["comments"]]


# -- MC-4302: the Worker -> Reviewer -> retry loop ----------------------------------------------


def test_mc4302_fail_verdict_sends_ticket_back_to_worker_with_feedback_not_to_elmar(mc_root: McRoot) -> None:
    key = mc_root.add("fix it", "fail, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert ticket["status"] == "done"
    assert ticket["escalations"] == []
    assert mc_root.agent_runs(key) == 2
    prompt = (mc_root.path / "logs" / key / "2.prompt.md").read_text()
    assert "Reviewer feedback" in prompt and "the tests do not cover the change" in prompt
    assert "add a test for the failure case" in prompt
    assert "Reviewer feedback" not in (mc_root.path / "logs" / key / "1.prompt.md").read_text()
    assert any("the error path is unhandled" in body for body in comments(ticket))


def test_mc4302_review_cycles_counter_increments_each_retry(mc_root: McRoot) -> None:
    key = mc_root.add("two fails", "fail, fail, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["review_cycles"], mc_root.agent_runs(key)) == ("done", 2, 3)
    details = [e["detail"] for e in ticket["events"] if e["actor"] == "review_loop"]
    assert any("fail 1/3" in d for d in details) and any("fail 2/3" in d for d in details)


def test_mc4302_three_cycles_escalate_to_needs_input_with_a_clear_message(mc_root: McRoot) -> None:
    key = mc_root.add("never converges", "fail")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["review_cycles"], mc_root.agent_runs(key)) == ("needs_input", 3, 3)
    assert comments(ticket)[-1] == MAX_CYCLES
    assert [(e["owner"], e["reason"]) for e in ticket["escalations"]] == [("elmar", MAX_CYCLES)]


def test_mc4302_uncertain_verdict_always_escalates_to_elmar_without_retry(mc_root: McRoot) -> None:
    key = mc_root.add("unclear", "uncertain, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], mc_root.agent_runs(key)) == ("needs_input", 1)
    assert len(ticket["escalations"]) == 1
    assert "cannot tell whether the migration is safe" in ticket["escalations"][0]["reason"]
    assert "cannot tell whether the migration is safe" in comments(ticket)[-1]


def test_mc4302_existing_done_path_still_works_for_pass(mc_root: McRoot) -> None:
    key = mc_root.add("easy", "pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["review_cycles"], ticket["done_sha"]) == ("done", 0, "a00000100000")
    assert [r["verdict"] for r in ticket["reviews"]] == ["pass"]


# -- MC-4304: operator conflict, dead-worker retry, kill-switch --------------------------------


def test_mc4304_operator_does_not_reopen_a_ticket_with_a_passing_verdict(mc_root: McRoot) -> None:
    key = mc_root.add("passes with a TODO in its log", "todo")
    mc_root.run()
    mc_root.mc("operator", "--once")
    ticket = mc_root.show(key)
    assert ticket["status"] == "done"
    assert any(e["actor"] == "operator_guard" and "shadow review passed" in e["detail"] for e in ticket["events"])


def test_mc4304_operator_does_not_reopen_a_ticket_the_review_loop_handled(mc_root: McRoot) -> None:
    key = mc_root.add("fail then pass, TODO in log", "fail, todo")
    mc_root.run()
    assert mc_root.show(key)["review_cycles"] == 1
    # A person records another sha that no review passed: only review_cycles >= 1 can keep it done now.
    mc_root.mc("ticket", "set", key, "--status", "done", "--done-sha", "abcdef1")
    mc_root.mc("operator", "--once")
    ticket = mc_root.show(key)
    assert ticket["status"] == "done"
    vetoes = [e["detail"] for e in ticket["events"] if e["actor"] == "operator_guard"]
    assert len(vetoes) == 1 and "the review loop already judged it (1 review cycles)" in vetoes[0]


def test_mc4304_operator_reopens_an_unjudged_weak_completion(mc_root: McRoot) -> None:
    mc_root.config["reviewer"]["enabled"] = False
    mc_root.write_config()
    key = mc_root.add("weak", "todo")
    mc_root.run()
    assert mc_root.show(key)["status"] == "done"
    mc_root.mc("operator", "--once")
    ticket = mc_root.show(key)
    assert ticket["status"] == "todo"
    assert "Reopened by the operator" in comments(ticket)[-1]


def test_mc4304_operator_still_records_health_when_it_moves_nothing(mc_root: McRoot) -> None:
    key = mc_root.add("passes with a TODO", "todo")
    mc_root.run()
    mc_root.mc("killswitch", "on")
    mc_root.mc("operator", "--once")
    import json

    health = json.loads(mc_root.mc("health", "--json").stdout)
    assert health["tickets"]["done"] == 1 and health["verdicts_last_hour"]["pass"] == 1
    assert mc_root.show(key)["status"] == "done"


def test_mc4304_dead_worker_retries_once_automatically(mc_root: McRoot) -> None:
    key = mc_root.add("flaky", "die, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], mc_root.agent_runs(key), ticket["death_count"]) == ("done", 2, 0)
    assert ticket["comments"] == []  # silently
    assert ticket["escalations"] == []


def test_mc4304_dead_worker_twice_escalates_to_elmar(mc_root: McRoot) -> None:
    key = mc_root.add("broken", "die, die, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["death_count"], mc_root.agent_runs(key)) == ("needs_input", 2, 2)
    assert comments(ticket) == [DIED_TWICE]
    assert [e["reason"] for e in ticket["escalations"]] == [DIED_TWICE]


def test_mc4304_qa_fail_takes_precedence_over_a_death(mc_root: McRoot) -> None:
    key = mc_root.add("fail then die", "fail, die, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["review_cycles"], mc_root.agent_runs(key)) == ("done", 1, 3)
    third = (mc_root.path / "logs" / key / "3.prompt.md").read_text()
    assert "Reviewer feedback" in third and "the tests do not cover the change" in third


def test_mc4304_kill_switch_stops_all_auto_behaviour_when_engaged(mc_root: McRoot) -> None:
    key = mc_root.add("held", "pass")
    mc_root.mc("killswitch", "on")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], mc_root.agent_runs(key)) == ("todo", 0)
    assert [e["actor"] for e in ticket["events"] if e["kind"] == "veto"] == ["killswitch"]
    mc_root.mc("killswitch", "off")
    mc_root.run()
    assert (mc_root.show(key)["status"], mc_root.agent_runs(key)) == ("done", 1)


def test_mc4304_kill_switch_keeps_reports_made_while_engaged_and_applies_them_on_release(mc_root: McRoot) -> None:
    mc_root.config["workers"]["default"]["command"] = [
        sys.executable,
        "-c",
        "import time, os; time.sleep(1.5); print('DONE: a000001' + '00000')",
    ]
    mc_root.write_config()
    key = mc_root.add("reports while held")
    controller = mc_root.popen("run", "--until-idle")
    import time

    deadline = time.time() + 20
    while mc_root.show(key)["status"] != "in_progress" and time.time() < deadline:
        time.sleep(0.05)
    mc_root.mc("killswitch", "on")
    assert controller.wait(timeout=30) == 1  # idle, but held by a kill-switch engaged during the run
    assert "stopped with the kill-switch engaged" in controller.stderr.read()
    held = mc_root.show(key)
    assert (held["status"], held["done_sha"], held["reviews"]) == ("in_review", "a00000100000", [])
    assert worker_runs(held)[0]["outcome"] == "done" and worker_runs(held)[0]["applied_at"] is None
    mc_root.mc("killswitch", "off")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], len(worker_runs(ticket))) == ("done", 1)


def test_kill_switch_status_says_engaged_since_when_and_released(mc_root: McRoot) -> None:
    mc_root.mc("killswitch", "on", "--reason", "night")
    status = mc_root.mc("killswitch", "status").stdout
    assert status.startswith("engaged since ") and "(night)" in status
    assert (mc_root.path / ".mc_killswitch").exists()
    mc_root.mc("killswitch", "off")
    assert mc_root.mc("killswitch", "status").stdout.strip() == "released"


def test_manual_commands_keep_working_while_the_kill_switch_is_engaged(mc_root: McRoot) -> None:
    mc_root.mc("killswitch", "on")
    key = mc_root.add("manual")
    mc_root.mc("ticket", "comment", key, "looked at it")
    mc_root.mc("ticket", "set", key, "--status", "done", "--done-sha", "abcdef1")
    assert mc_root.show(key)["status"] == "done"


# -- plugins disabled give the host default; third-party plugins are called ---------------------


def test_review_loop_disabled_gives_host_default_done_on_fail(mc_root: McRoot) -> None:
    mc_root.config["plugins"]["review_loop"] = {"enabled": False}
    mc_root.write_config()
    key = mc_root.add("fails review", "fail")
    mc_root.run()
    assert (mc_root.show(key)["status"], mc_root.agent_runs(key)) == ("done", 1)


def test_dead_worker_retry_disabled_gives_host_default(mc_root: McRoot) -> None:
    mc_root.config["plugins"]["dead_worker_retry"] = {"enabled": False}
    mc_root.write_config()
    key = mc_root.add("dies", "die, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["death_count"], mc_root.agent_runs(key)) == ("needs_input", 1, 1)
    assert comments(ticket) == ["Worker died unexpectedly."]


def test_operator_guard_disabled_lets_operator_reopen(mc_root: McRoot) -> None:
    mc_root.config["plugins"]["operator_guard"] = {"enabled": False}
    mc_root.write_config()
    key = mc_root.add("passes with a TODO", "todo")
    mc_root.run()
    mc_root.mc("operator", "--once")
    assert mc_root.show(key)["status"] == "todo"


def test_killswitch_plugin_disabled_lets_work_through(mc_root: McRoot) -> None:
    mc_root.config["plugins"]["killswitch"] = {"enabled": False}
    mc_root.write_config()
    mc_root.mc("killswitch", "on")
    key = mc_root.add("ignored switch")
    mc_root.run()
    assert mc_root.show(key)["status"] == "done"


def test_third_party_plugin_by_dotted_path_is_called(mc_root: McRoot) -> None:
    (mc_root.path / "acme_audit.py").write_text(
        textwrap.dedent("""
        from mc_hooks import hookimpl

        @hookimpl
        def on_escalate(ticket, owner, controller):
            controller.comment(ticket, f"paged {owner} about {ticket.key}")
    """),
        encoding="utf-8",
    )
    mc_root.config["plugins"]["acme_audit"] = {"enabled": True}
    mc_root.write_config()
    key = mc_root.add("uncertain", "uncertain")
    mc_root.run(PYTHONPATH=str(mc_root.path))
    ticket = mc_root.show(key)
    assert comments(ticket)[-1] == f"paged elmar about {key}"
    assert ticket["escalations"][0]["notified_at"] is not None

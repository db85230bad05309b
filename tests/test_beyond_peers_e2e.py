"""Issue 8, end to end through `mc run`: the circuit breaker, the convergence check, verified DONE
claims (with real git repositories made in the test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import McRoot, git, make_repo, worker_runs

pytestmark = pytest.mark.slow  # end-to-end: real `mc` processes (CI runs them; `-m 'not slow'` skips)


def breaker(mc: McRoot, **settings: object) -> None:
    mc.config["plugins"]["circuit_breaker"] = {"enabled": True, **settings}
    mc.write_config()


# -- circuit breaker --------------------------------------------------------------------------


def test_circuit_breaker_engages_the_kill_switch_after_a_storm_of_deaths(mc_root: McRoot) -> None:
    breaker(mc_root, max_deaths=3)
    mc_root.config["max_workers"] = 1
    mc_root.write_config()
    keys = [mc_root.add(f"broken agent {i}", "die") for i in range(4)]
    mc_root.run_until_tripped()
    status = json.loads(mc_root.mc("killswitch", "status", "--json").stdout)
    assert status["engaged"] is True and status["who"] == "circuit_breaker"
    assert status["reason"].startswith("circuit breaker: 3 worker deaths within 10 minutes (tickets MC-1")
    runs = sum(mc_root.agent_runs(k) for k in keys)
    assert runs == 3  # nothing more ran after it tripped
    notified = [e for t in mc_root.show_all(keys) for e in t["escalations"] if "circuit breaker" in e["reason"]]
    assert len(notified) == 1 and notified[0]["owner"] == "elmar"  # (no notify plugin here: nobody was told)
    assert all(t["status"] != "needs_input" or t["death_count"] == 2 for t in mc_root.show_all(keys))


def test_only_a_person_releases_the_circuit_breaker_and_counting_starts_again(mc_root: McRoot) -> None:
    breaker(mc_root, max_deaths=2)
    mc_root.config["max_workers"] = 1
    mc_root.write_config()
    flaky = [mc_root.add(f"flaky {i}", "die, pass") for i in range(3)]
    mc_root.run_until_tripped()
    assert mc_root.mc("killswitch", "status").stdout.startswith("engaged")
    held = sum(mc_root.agent_runs(k) for k in flaky)
    mc_root.run()  # still held: the breaker does not release itself
    assert sum(mc_root.agent_runs(k) for k in flaky) == held
    mc_root.mc("killswitch", "off")
    mc_root.run()
    assert [mc_root.show(k)["status"] for k in flaky] == ["done"] * 3
    assert mc_root.mc("killswitch", "status").stdout.strip() == "released"


def test_circuit_breaker_trips_on_a_storm_of_review_fails(mc_root: McRoot) -> None:
    breaker(mc_root, max_review_fails=3)
    mc_root.config["max_workers"] = 1
    mc_root.write_config()
    for i in range(3):
        mc_root.add(f"bad reviewer day {i}", "fail, pass")
    mc_root.run_until_tripped()
    assert "3 review fails" in json.loads(mc_root.mc("killswitch", "status", "--json").stdout)["reason"]


def test_circuit_breaker_disabled_lets_the_storm_run(mc_root: McRoot) -> None:
    mc_root.config["max_workers"] = 1
    mc_root.write_config()
    keys = [mc_root.add(f"broken {i}", "die") for i in range(4)]
    mc_root.run()
    assert mc_root.mc("killswitch", "status").stdout.strip() == "released"
    assert sum(mc_root.agent_runs(k) for k in keys) == 8


# -- convergence check ------------------------------------------------------------------------


def test_a_gap_that_comes_back_escalates_at_once(mc_root: McRoot) -> None:
    key = mc_root.add("not converging", "stuck, stuck, pass")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["review_cycles"], mc_root.agent_runs(key)) == ("needs_input", 2, 2)
    reason = ticket["escalations"][0]["reason"]
    assert reason == "The same gap came back: the migration for the new column is still missing. Needs Elmar decision."


def test_different_gaps_each_cycle_keep_the_loop_going(mc_root: McRoot) -> None:
    key = mc_root.add("converging", "fail, fail, pass")
    mc_root.run()
    assert (mc_root.show(key)["status"], mc_root.agent_runs(key)) == ("done", 3)


def test_escalate_on_repeat_off_spends_the_remaining_cycles(mc_root: McRoot) -> None:
    mc_root.config["plugins"]["review_loop"] = {"enabled": True, "escalate_on_repeat": False}
    mc_root.write_config()
    key = mc_root.add("not converging", "stuck, stuck, pass")
    mc_root.run()
    assert (mc_root.show(key)["status"], mc_root.agent_runs(key)) == ("done", 3)


# -- verified DONE claims ---------------------------------------------------------------------


COMMIT = "git -c user.name=w -c user.email=w@w commit --allow-empty -q -m work"


def verified(mc: McRoot, repo: Path, script: str, *extra: str) -> dict:
    """One ticket in ``repo`` whose worker runs ``script`` (sh) on its first attempt and commits properly after."""
    mc.config["workers"]["default"]["command"] = [
        "sh",
        "-c",
        f'if [ "$1" = 1 ]; then {script}; else {COMMIT} && echo "DONE: $(git rev-parse HEAD)"; fi',
        "sh",
        "{attempt}",
    ]
    mc.config["reviewer"]["enabled"] = False
    mc.write_config()
    key = mc.mc("ticket", "add", "verified", "--repo", str(repo), *extra).stdout.strip()
    mc.run()
    return mc.show(key)


def test_a_claimed_sha_that_does_not_exist_counts_as_a_dead_worker(mc_root: McRoot, tmp_path: Path) -> None:
    ticket = verified(mc_root, make_repo(tmp_path / "repo"), "echo 'DONE: deadbeefdeadbeef'")
    assert (ticket["status"], len(worker_runs(ticket))) == ("done", 2)
    assert any(
        e["action"] == "rejected_done" and "claimed deadbeefdead, which does not exist" in e["detail"]
        for e in ticket["events"]
    )


def test_claiming_the_base_commit_counts_as_no_change(mc_root: McRoot, tmp_path: Path) -> None:
    ticket = verified(mc_root, make_repo(tmp_path / "repo"), 'echo "DONE: $(git rev-parse HEAD)"')
    assert (ticket["status"], len(worker_runs(ticket))) == ("done", 2)
    assert any("claimed the base commit" in e["detail"] and "no change" in e["detail"] for e in ticket["events"])


def test_a_commit_not_on_the_tickets_branch_is_refused(mc_root: McRoot, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "branch", "feature")
    side = f'git switch -q -c side && {COMMIT} && echo "DONE: $(git rev-parse HEAD)" && git switch -q feature'
    ticket = verified(mc_root, repo, side, "--branch", "feature")
    assert any("which does not exist on branch feature" in e["detail"] for e in ticket["events"])


def test_a_refused_claim_never_costs_a_review(mc_root: McRoot, tmp_path: Path) -> None:
    calls = tmp_path / "reviews"
    reviewer = f"open({str(calls)!r}, 'a').write('x'); print('{{\"verdict\": \"pass\"}}')"
    mc_root.config["reviewer"] = {"enabled": True, "command": [sys.executable, "-c", reviewer], "timeout": 60}
    mc_root.config["workers"]["default"]["command"] = ["sh", "-c", "echo 'DONE: 0123456789abcdef'"]
    mc_root.write_config()
    key = mc_root.mc("ticket", "add", "liar", "--repo", str(make_repo(tmp_path / "repo"))).stdout.strip()
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["reviews"]) == ("needs_input", [])
    assert not calls.exists()  # the reviewer never started
    assert [e["actor"] for e in ticket["events"] if e["action"] == "rejected_done"] == ["done_verifier"] * 2


def test_two_bad_claims_escalate_like_two_deaths(mc_root: McRoot, tmp_path: Path) -> None:
    mc_root.config["workers"]["default"]["command"] = ["sh", "-c", "echo 'DONE: 0123456789abcdef'"]
    mc_root.config["reviewer"]["enabled"] = False
    mc_root.write_config()
    key = mc_root.mc("ticket", "add", "liar", "--repo", str(make_repo(tmp_path / "repo"))).stdout.strip()
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["death_count"]) == ("needs_input", 2)
    assert ticket["escalations"][0]["reason"] == "Worker died twice. Needs Elmar to review."


def test_done_verifier_disabled_accepts_any_claim(mc_root: McRoot, tmp_path: Path) -> None:
    mc_root.config["plugins"]["done_verifier"] = {"enabled": False}
    ticket = verified(mc_root, make_repo(tmp_path / "repo"), "echo 'DONE: deadbeefdeadbeef'")
    assert (ticket["status"], len(worker_runs(ticket)), ticket["done_sha"]) == ("done", 1, "deadbeefdeadbeef")


def test_a_ticket_without_a_repo_is_not_checked(mc_root: McRoot) -> None:
    key = mc_root.add("no repo")
    mc_root.run()
    assert mc_root.show(key)["status"] == "done"

"""Codex runs tickets end to end: the real CLI (pinned, from npm) as worker and reviewer, against the
scripted model server speaking the OpenAI Responses API, through the real `mc run`, with real git
repositories and Codex's own sandbox inside Mission Control's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import AgentRoot, commit, git, make_repo, reviewer_of, worker_of, worker_runs
from model_server import RESPONSES, bash, error, hang, text, verdict

pytestmark = pytest.mark.slow

PRICES = (2.0, 10.0)  # the profile's price_per_mtok (conftest.agent_profile)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "app")


@pytest.fixture
def root(tmp_path: Path, codex_cli: str, model_server: Any) -> AgentRoot:
    return AgentRoot(tmp_path / "root", codex_cli, model_server, agent="codex")


def cost_of(input_tokens: int, output_tokens: int) -> float:
    return round((input_tokens * PRICES[0] + output_tokens * PRICES[1]) / 1e6, 6)


def test_a_codex_ticket_goes_to_done_with_its_commit_and_a_codex_review(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Add a greeting", "--body", "Create hello.txt", "--repo", str(repo)).stdout.strip()
    root.server.script([*commit("hello.txt", "hello\n", "Add hello.txt"), text("Committed.")], match=worker_of(key))
    root.server.script([bash("git show --stat HEAD"), verdict("pass", ["hello.txt is there"])], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "done"
    assert ticket["done_sha"] == git(repo, "rev-parse", f"mc/{key}")
    assert git(repo, "show", f"{ticket['done_sha']}:hello.txt") == "hello"
    worker, review = ticket["runs"]
    assert (worker["outcome"], review["outcome"]) == ("done", "pass")
    # Codex reports tokens only: the profile's price_per_mtok makes them a cost.
    assert (worker["input_tokens"], worker["output_tokens"]) == (360, 90)  # three model calls of 120/30
    assert worker["cost_usd"] == pytest.approx(cost_of(360, 90)) and worker["session"]
    assert review["cost_usd"] == pytest.approx(cost_of(240, 60))
    assert all(r.api == RESPONSES for r in root.server.requests) and root.server.unscripted == []
    judged = root.server.requests_for(reviewer_of(key))[-1]
    assert judged.body["text"]["format"]["type"] == "json_schema"  # --output-schema reached the API
    assert (root.path / "logs" / key / "1.verdict-schema.json").is_file()
    assert "Read-only file system" not in judged.tool_results[-1]  # reading is allowed


def test_a_failed_codex_review_resumes_the_same_session_with_the_feedback(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Parse numbers", "--repo", str(repo)).stdout.strip()
    steps = [
        *commit("parse.py", "int\n", "First try"),
        text("Done."),
        *commit("parse.py", "float\n", "Fix"),
        text("ok"),
    ]
    root.server.script(steps, match=worker_of(key))
    gap = "negative numbers are not handled"
    root.server.script([verdict("fail", ["only ints"], [gap]), verdict("pass")], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert (ticket["status"], ticket["review_cycles"]) == ("done", 1)
    first, second = worker_runs(ticket)
    assert first["session"] == second["session"]
    requests = root.server.requests_for(worker_of(key))
    first_run, second_run = requests[:3], requests[3:]
    assert second_run[0].tool_uses == first_run[-1].tool_uses and len(first_run[-1].tool_uses) == 2  # resumed
    assert gap in second_run[0].user_text and gap not in first_run[0].user_text
    # Codex reports the session's running totals; each run is charged its own share.
    assert (second["input_tokens"], second["output_tokens"]) == (360, 90)
    assert second["cost_usd"] == pytest.approx(cost_of(360, 90))
    assert git(repo, "show", f"{ticket['done_sha']}:parse.py") == "float"


def test_a_codex_run_without_a_commit_dies_and_cannot_write_outside_its_worktree(
    root: AgentRoot, repo: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    key = root.mc("ticket", "add", "Think about it", "--repo", str(repo)).stdout.strip()
    escape = bash(f"echo pwned > {outside}; echo exit=$?")
    root.server.script([escape, text("I only thought."), text("Still thinking.")], match=worker_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "needs_input" and ticket["death_count"] == 2
    assert ticket["runs"][0]["reason"] == f'no new commit on mc/{key}; it said: "I only thought."'
    assert not outside.exists()
    assert "Read-only file system" in root.server.requests_for(worker_of(key))[1].tool_results[-1]


def test_a_codex_api_error_is_a_death_with_the_agents_reason(root: AgentRoot, repo: Path) -> None:
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    key = root.mc("ticket", "add", "Anything", "--repo", str(repo)).stdout.strip()
    root.server.script([error(401, "invalid_api_key", "Incorrect API key provided")] * 6, match=worker_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "needs_input" and ticket["reviews"] == []
    reason = ticket["runs"][0]["reason"]
    assert reason.startswith("the agent reported an error: unexpected status 401 Unauthorized: Incorrect API key")


def test_an_uncertain_codex_review_goes_to_a_person(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Review me", "--repo", str(repo)).stdout.strip()
    root.server.script([*commit("a.txt", "a\n", "a"), text("ok")], match=worker_of(key))
    root.server.script([verdict("uncertain", ["cannot run it"])], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "needs_input"
    assert [(r["verdict"], r["reasons"]) for r in ticket["reviews"]] == [("uncertain", ["cannot run it"])]


def test_the_tests_stage_sends_a_failing_test_back_to_codex_before_the_paid_review(
    tmp_path: Path, codex_cli: str, model_server: Any, repo: Path
) -> None:
    tests_stage = {"agent": "tests", "command": ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider"]}
    root = AgentRoot(tmp_path / "root", codex_cli, model_server, agent="codex")
    root.config["reviewer"] = [tests_stage, {**root.config["workers"]["default"]}]
    root.write_config()
    key = root.mc("ticket", "add", "Add add()", "--repo", str(repo)).stdout.strip()
    failing = "def add(a, b):\n    return a - b\n\n\ndef test_add():\n    assert add(2, 2) == 4\n"
    fixed = failing.replace("a - b", "a + b")
    steps = [*commit("test_calc.py", failing, "add"), text("Done."), *commit("test_calc.py", fixed, "fix"), text("ok")]
    root.server.script(steps, match=worker_of(key))
    root.server.script([verdict("pass")], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "done"
    first, second = ticket["reviews"]
    assert first["verdict"] == "fail" and first["gaps"] == ["test_calc.py::test_add"]
    assert second["verdict"] == "pass" and second["done_sha"] == ticket["done_sha"]
    assert "test_calc.py::test_add" in root.server.requests_for(worker_of(key))[3].user_text
    assert len(root.server.requests_for(reviewer_of(key))) == 1  # the paid stage saw only the passing sha


def test_a_stalled_codex_run_is_stopped_and_counted_as_a_death(root: AgentRoot, repo: Path) -> None:
    root.config["workers"]["default"]["stall_timeout"] = 3
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    key = root.mc("ticket", "add", "Hang", "--repo", str(repo)).stdout.strip()
    root.server.script([hang()], match=worker_of(key))

    root.run()

    run = root.show(key)["runs"][0]
    assert (run["outcome"], run["reason"]) == ("died", "no output for 3 s (stalled)")

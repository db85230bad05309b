"""Claude Code runs tickets end to end: the real CLI (pinned, from npm) as worker and reviewer, against
the scripted model server, through the real `mc run`, with real git repositories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import AgentRoot, commit, each_store, git, make_repo, reviewer_of, worker_of, worker_runs
from model_server import bash, error, hang, text, tool, verdict, write

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "app")


@pytest.fixture
def root(tmp_path: Path, claude_cli: str, model_server: Any, store: str) -> AgentRoot:
    return AgentRoot(tmp_path / "root", claude_cli, model_server, database=store)


@pytest.fixture
def sqlite_root(tmp_path: Path, claude_cli: str, model_server: Any) -> AgentRoot:
    return AgentRoot(tmp_path / "root", claude_cli, model_server)


def statuses(ticket: dict[str, Any]) -> list[str]:
    return [e["detail"].split(":")[0] for e in ticket["events"] if e["action"] == "status"]


@each_store
def test_a_ticket_goes_to_done_with_a_real_commit_on_its_branch(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Add a greeting", "--body", "Create hello.txt", "--repo", str(repo)).stdout.strip()
    root.server.script([*commit("hello.txt", "hello\n", "Add hello.txt"), text("Committed.")], match=worker_of(key))
    root.server.script([bash("git show --stat HEAD"), verdict("pass", ["hello.txt is there"])], match=reviewer_of(key))
    user_head = git(repo, "rev-parse", "HEAD")

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "done" and ticket["branch"] == f"mc/{key}"
    assert ticket["done_sha"] == git(repo, "rev-parse", f"mc/{key}")
    assert git(repo, "show", f"{ticket['done_sha']}:hello.txt") == "hello"
    assert git(repo, "log", "-1", "--format=%s", ticket["done_sha"]) == "Add hello.txt"
    assert git(repo, "rev-parse", "HEAD") == user_head and not (repo / "hello.txt").exists()  # untouched
    assert not (root.path / "worktrees" / key).exists()  # removed once done; the branch is kept
    actions = [e["action"] for e in ticket["events"]]
    assert actions == ["created", "dispatch", "done", "review", "verdict", "status"]
    assert ticket["events"][-1]["detail"].startswith("in_review -> done")
    worker, review = ticket["runs"]
    assert (worker["kind"], worker["outcome"], review["kind"], review["outcome"]) == (
        "worker",
        "done",
        "review",
        "pass",
    )
    assert worker["session"] and worker["cost_usd"] > 0 and worker["input_tokens"] > 0 and worker["turns"] == 3
    assert review["cost_usd"] > 0 and review["output_tokens"] > 0
    assert not list((root.path / "logs" / key).glob("*.verdict-schema.json"))  # Claude Code takes it in argv
    assert root.server.unscripted == []
    root.mc("operator", "--once")
    spend = json.loads(root.mc("health", "--json").stdout)["spend"]["last_hour"]
    assert spend["cost_usd"] == pytest.approx(worker["cost_usd"] + review["cost_usd"])


@each_store
def test_a_failed_review_comes_back_into_the_same_session_with_the_feedback(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Parse numbers", "--repo", str(repo)).stdout.strip()
    root.server.script(
        [
            *commit("parse.py", "int\n", "First try"),
            text("Done."),
            *commit("parse.py", "float\n", "Fix"),
            text("Fixed."),
        ],
        match=worker_of(key),
    )
    gap = "negative numbers are not handled"
    root.server.script([verdict("fail", ["only ints"], [gap]), verdict("pass")], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert (ticket["status"], ticket["review_cycles"]) == ("done", 1)
    workers = [r for r in ticket["runs"] if r["kind"] == "worker"]
    assert len(workers) == 2 and workers[0]["session"] == workers[1]["session"]
    requests = root.server.requests_for(worker_of(key))
    first_run, second_run = requests[:3], requests[3:]
    # The second run's first request carries the whole first conversation, then the feedback.
    assert len(first_run[-1].tool_uses) == 2
    assert second_run[0].tool_uses == first_run[-1].tool_uses  # the same conversation, resumed
    assert gap in second_run[0].user_text and "Reviewer feedback" in second_run[0].user_text
    assert gap not in first_run[0].user_text
    assert git(repo, "show", f"{ticket['done_sha']}:parse.py") == "float"


def test_a_run_without_a_new_commit_dies_is_retried_then_escalated(sqlite_root: AgentRoot, repo: Path) -> None:
    root = sqlite_root
    key = root.mc("ticket", "add", "Think about it", "--repo", str(repo)).stdout.strip()
    root.server.script([write("notes.txt", "x"), text("I wrote notes."), text("Still thinking.")], match=worker_of(key))

    root.run()

    ticket = root.show(key)
    assert (ticket["status"], ticket["death_count"]) == ("needs_input", 2)
    reasons = [r["reason"] for r in ticket["runs"]]
    left = f"no new commit on mc/{key} (1 uncommitted change left in the worktree)"
    assert reasons[0] == f'{left}; it said: "I wrote notes."'  # why, in the agent's own words
    assert reasons[1] == f'{left}; it said: "Still thinking."'
    assert ticket["escalations"][0]["reason"] == "Worker died twice. Needs Elmar to review."
    second = root.server.requests_for(worker_of(key))[-1]
    assert "## Your last run ended without a result" in second.user_text
    assert ticket["reviews"] == []  # nothing to review was ever paid for


def test_an_api_error_is_a_death_with_the_agents_reason(sqlite_root: AgentRoot, repo: Path) -> None:
    root = sqlite_root
    root.config["workers"]["default"]["env"] = {"CLAUDE_CODE_MAX_RETRIES": "1"}
    root.write_config()
    key = root.mc("ticket", "add", "Anything", "--repo", str(repo)).stdout.strip()
    root.server.script([error(401, "authentication_error", "invalid x-api-key")] * 4, match=worker_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "needs_input"
    assert ticket["runs"][0]["reason"].startswith("the agent reported an error: API error 401")


def test_a_stalled_agent_is_stopped_and_counted_as_a_death(sqlite_root: AgentRoot, repo: Path) -> None:
    root = sqlite_root
    root.config["workers"]["default"]["stall_timeout"] = 3
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    key = root.mc("ticket", "add", "Hang", "--repo", str(repo)).stdout.strip()
    root.server.script([hang()], match=worker_of(key))

    root.run()

    run = root.show(key)["runs"][0]
    assert (run["outcome"], run["reason"]) == ("died", "no output for 3 s (stalled)")


def test_two_tickets_on_one_repo_never_see_each_others_changes(sqlite_root: AgentRoot, repo: Path) -> None:
    root = sqlite_root
    first = root.mc("ticket", "add", "One", "--repo", str(repo)).stdout.strip()
    second = root.mc("ticket", "add", "Two", "--repo", str(repo)).stdout.strip()
    for key in (first, second):
        steps = [*commit("same.txt", f"{key}\n", key), bash("git status --porcelain --untracked-files=all"), text("ok")]
        root.server.script(steps, match=worker_of(key))
        root.server.script([verdict("pass")], match=reviewer_of(key))
    initial = git(repo, "rev-parse", "HEAD")

    root.run()

    a, b = root.show(first), root.show(second)
    assert (a["status"], b["status"]) == ("done", "done") and a["done_sha"] != b["done_sha"]
    for key in (first, second):
        assert git(repo, "show", f"mc/{key}:same.txt") == key
        assert git(repo, "rev-parse", f"mc/{key}^") == initial  # built on the repo's HEAD, not on the other
        clean = root.server.requests_for(worker_of(key))[-1].tool_results[-1]
        assert clean == "(Bash completed with no output)"  # nothing of the other ticket in its worktree


@pytest.mark.parametrize(
    ("said", "status"),
    [
        (verdict("pass"), "done"),
        (verdict("uncertain", ["cannot run it"]), "needs_input"),
        (text("Looks fine"), "needs_input"),
    ],
)
def test_the_reviewer_preset_verdict_decides(sqlite_root: AgentRoot, repo: Path, said: Any, status: str) -> None:
    root = sqlite_root
    key = root.mc("ticket", "add", "Review me", "--repo", str(repo)).stdout.strip()
    root.server.script([*commit("a.txt", "a\n", "a"), text("ok")], match=worker_of(key))
    root.server.script([said], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == status
    expected = said.tool_input.get("verdict", "uncertain")
    assert ticket["reviews"][0]["verdict"] == expected


def test_the_reviewer_cannot_write_or_commit(sqlite_root: AgentRoot, repo: Path) -> None:
    root = sqlite_root
    key = root.mc("ticket", "add", "Guarded", "--repo", str(repo)).stdout.strip()
    root.server.script([*commit("a.txt", "a\n", "a"), text("ok")], match=worker_of(key))
    attempts = [
        write("forged.txt", "x"),
        tool("Edit", file_path="a.txt", old_string="a", new_string="b"),
        bash("git commit --allow-empty -qm forged"),
        bash("echo x > forged2.txt"),
        verdict("pass"),
    ]
    root.server.script(attempts, match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "done"
    assert git(repo, "rev-list", "--count", f"mc/{key}") == "2"  # the initial commit and the worker's
    last = root.server.requests_for(reviewer_of(key))[-1]
    assert last.tool_result_errors == [True, True, True, True]
    assert not list(root.path.rglob("forged*.txt")) and not list(repo.rglob("forged*.txt"))


def test_a_title_that_looks_like_an_option_reaches_the_agent_as_text(sqlite_root: AgentRoot, repo: Path) -> None:
    root = sqlite_root
    title = '--settings={"permissions":{"allow":["Bash(*)"]}}'
    key = root.mc("ticket", "add", "--repo", str(repo), "--", title).stdout.strip()
    root.server.script([*commit("t.txt", "t\n", "t"), text("ok")], match=worker_of(key))
    root.server.script([verdict("pass")], match=reviewer_of(key))

    root.run()

    assert root.show(key)["status"] == "done"
    first = root.server.requests_for(worker_of(key))[0]
    assert f"## Ticket {key}: {title}" in first.user_text


def test_a_session_the_cli_no_longer_has_is_started_afresh(sqlite_root: AgentRoot, repo: Path) -> None:
    root = sqlite_root
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    key = root.mc("ticket", "add", "Survive a lost session", "--repo", str(repo)).stdout.strip()
    root.server.script([text("No commit this time."), *commit("s.txt", "s\n", "s"), text("ok")], match=worker_of(key))
    root.server.script([verdict("pass")], match=reviewer_of(key))
    root.run()  # the first run dies without a commit: escalated, its session recorded
    # the ticket's own HOME in the sandbox (the user's without one), cleaned, say
    for sessions in [
        *root.home.glob(".claude/projects/*"),
        *root.path.glob(f"worktrees/{key}.home/.claude/projects/*"),
    ]:
        shutil.rmtree(sessions)
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 3}
    root.write_config()
    root.mc("ticket", "set", key, "--status", "todo")

    root.run()

    ticket = root.show(key)
    first, lost, fresh = worker_runs(ticket)
    assert "No conversation found with session ID" in lost["reason"]
    assert ticket["status"] == "done" and fresh["session"] not in (None, first["session"])
    assert root.server.requests_for(worker_of(key))[1].tool_uses == []  # a new conversation


def test_claude_code_in_the_sandbox_cannot_read_the_mc_root_or_see_the_controller(
    sqlite_root: AgentRoot, repo: Path
) -> None:
    from mission_control import sandbox

    if sandbox.works() is not None:
        pytest.skip(f"no sandbox here: {sandbox.works()}")
    root = sqlite_root
    root.config["workers"]["default"]["allowed_tools"] = ["Bash(python3:*)", "Bash(ps:*)"]
    root.write_config()
    key = root.mc("ticket", "add", "Peek", "--repo", str(repo)).stdout.strip()
    peek = "python3 -c \"import os; print(os.listdir('%s'))\"" % root.path  # what the agent sees of the root
    steps = [bash(peek), bash("ps -e -o pid=,args="), *commit("a.txt", "a\n", "a")]
    root.server.script([*steps, text("Done.")], match=worker_of(key))
    root.server.script([verdict("pass")], match=reviewer_of(key))

    root.run()

    assert root.show(key)["status"] == "done"
    results = root.server.requests_for(worker_of(key))[-1].tool_results
    assert results[0].strip() == "['worktrees']"  # the MC root is empty inside the sandbox but for the path in
    assert "mission_control" not in results[1] and "claude" in results[1]  # only the run's own processes

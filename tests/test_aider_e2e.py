"""Aider runs tickets end to end: the real Aider (pinned, from PyPI, in a virtualenv of its own) as the
worker, against the scripted model server speaking OpenAI Chat Completions, through the real `mc run`,
with real git repositories; Codex reviews (Aider cannot review read-only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import AgentRoot, agent_profile, git, make_repo, reviewer_of, worker_of, worker_runs
from model_server import CHAT, error, hang, text, verdict, write

pytestmark = pytest.mark.slow

# What Aider asks the model before it commits (scripted first: the request carries the chat too).
COMMIT_MESSAGE = "one-line Git commit messages"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "app")


@pytest.fixture
def root(tmp_path: Path, aider_cli: str, codex_cli: str, model_server: Any) -> AgentRoot:
    reviewer = agent_profile("codex", codex_cli, model_server)
    return AgentRoot(tmp_path / "root", aider_cli, model_server, agent="aider", reviewer=reviewer)


def worker_requests(root: AgentRoot, key: str) -> list[Any]:
    return [r for r in root.server.requests_for(worker_of(key)) if r.api == CHAT]


def test_an_aider_ticket_goes_to_done_with_its_own_commit(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Add a greeting", "--body", "Create hello.txt", "--repo", str(repo)).stdout.strip()
    root.server.script([text("Add hello.txt")], match=COMMIT_MESSAGE)
    root.server.script([write("hello.txt", "hello\n")], match=worker_of(key))
    root.server.script([verdict("pass", ["hello.txt is there"])], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "done"
    assert ticket["done_sha"] == git(repo, "rev-parse", f"mc/{key}")
    assert git(repo, "show", f"{ticket['done_sha']}:hello.txt") == "hello"
    assert git(repo, "log", "-1", "--format=%s", ticket["done_sha"]) == "Add hello.txt"
    worker, review = ticket["runs"]
    assert (worker["outcome"], review["outcome"]) == ("done", "pass")
    assert worker["input_tokens"] > 0 and worker["output_tokens"] > 0 and worker["turns"] == 1
    assert worker["cost_usd"] == pytest.approx((worker["input_tokens"] * 2 + worker["output_tokens"] * 10) / 1e6)
    assert worker["leftovers"] == []  # its repo-map cache is not work left behind
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout is untouched (no .gitignore edit)
    assert root.server.unscripted == []


def test_a_failed_review_restores_aiders_chat_with_the_feedback(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Parse numbers", "--repo", str(repo)).stdout.strip()
    root.server.script([text("First try"), text("Fix")], match=COMMIT_MESSAGE)
    # Aider adds a file the model edits to its chat and asks again, so the fix is written twice.
    fix = write("parse.py", "float\n")
    root.server.script([write("parse.py", "int\n"), fix, fix], match=worker_of(key))
    gap = "negative numbers are not handled"
    root.server.script([verdict("fail", ["only ints"], [gap]), verdict("pass")], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert (ticket["status"], ticket["review_cycles"]) == ("done", 1)
    first, second, _ = worker_requests(root, key)
    assert gap in second.user_text and gap not in first.user_text
    assert first.user_text.count(worker_of(key)) == 1
    assert second.user_text.count(worker_of(key)) == 2  # the first run's prompt, restored, then this run's
    assert "parse.py\n```\nint\n```" in second.text  # and the first run's answer
    assert git(repo, "show", f"{ticket['done_sha']}:parse.py") == "float"
    assert [r["session"] for r in worker_runs(ticket)] == ["chat", "chat"]


def test_an_aider_run_without_a_commit_dies(root: AgentRoot, repo: Path) -> None:
    key = root.mc("ticket", "add", "Think about it", "--repo", str(repo)).stdout.strip()
    root.server.script([text("I would rather not."), text("Still no.")], match=worker_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "needs_input" and ticket["death_count"] == 2
    assert ticket["runs"][0]["reason"] == f"no new commit on mc/{key}"


def test_an_aider_api_error_is_a_death_with_the_agents_reason(root: AgentRoot, repo: Path) -> None:
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    key = root.mc("ticket", "add", "Anything", "--repo", str(repo)).stdout.strip()
    root.server.script([error(401, "invalid_api_key", "Incorrect API key provided")] * 3, match=worker_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "needs_input" and ticket["reviews"] == []
    reason = ticket["runs"][0]["reason"]
    assert reason.startswith("the agent reported an error: litellm.AuthenticationError")
    assert "Incorrect API key provided" in reason


def test_settings_an_aider_run_plants_in_the_worktree_do_not_reach_the_next_run(
    root: AgentRoot, repo: Path, tmp_path: Path
) -> None:
    """A prompt-injected run writes .env (Aider loads it over the environment) and .aider.conf.yml
    pointing the next run's API calls elsewhere; the next run still talks to the configured server."""
    key = root.mc("ticket", "add", "Configure", "--repo", str(repo)).stdout.strip()
    elsewhere = "http://127.0.0.1:9/v1"
    root.server.script([text("Plant settings"), text("Fix")], match=COMMIT_MESSAGE)
    root.server.script(
        [write(".env", f"OPENAI_API_BASE={elsewhere}\n"), write("fix.txt", "fixed\n")], match=worker_of(key)
    )
    root.server.script([verdict("fail", ["not yet"], ["fix.txt"]), verdict("pass")], match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "done"  # the second run reached the scripted server, not port 9
    assert git(repo, "show", f"mc/{key}:.env") == f"OPENAI_API_BASE={elsewhere}"
    assert len(worker_requests(root, key)) == 2


def test_a_stalled_aider_run_is_stopped_and_counted_as_a_death(root: AgentRoot, repo: Path) -> None:
    root.config["workers"]["default"]["stall_timeout"] = 5
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    key = root.mc("ticket", "add", "Hang", "--repo", str(repo)).stdout.strip()
    root.server.script([hang()], match=worker_of(key))

    root.run()

    run = root.show(key)["runs"][0]
    assert (run["outcome"], run["reason"]) == ("died", "no output for 5 s (stalled)")

"""Work in, work out with the real Claude Code CLI (issue 28): a labelled issue on the scripted GitHub server
becomes a ticket, Claude Code commits, the review passes, Mission Control pushes the branch to a bare remote
and opens one draft pull request; a failed check sends the ticket back to the same Claude Code session with
the check's name and output; its new commit lands on the same pull request; the merge ends the ticket. The
token never reaches the run."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from github_server import GitHubServer

from conftest import AgentRoot, commit, git, make_repo, reviewer_of, worker_of, worker_runs
from model_server import bash, text, verdict

pytestmark = pytest.mark.slow

TOKEN_ENV = "MC_TEST_GITHUB_TOKEN"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    seed = make_repo(tmp_path / "seed")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    git(seed, "push", "-q", str(bare), "main")
    return bare


@pytest.fixture
def gh(remote: Path) -> Iterator[GitHubServer]:
    server = GitHubServer("acme/app", remote)
    yield server
    server.close()


def test_claude_code_takes_an_issue_to_a_merged_pull_request_through_a_failed_check(
    tmp_path: Path, claude_cli: str, model_server: Any, gh: GitHubServer, remote: Path
) -> None:
    settings = {"repo": "acme/app", "api_url": gh.url, "clone_url": f"file://{remote}", "token_env": TOKEN_ENV}
    root = AgentRoot(tmp_path / "root", claude_cli, model_server)
    root.config["plugins"]["github"] = {**settings, "poll_interval": 1}
    root.config["workers"]["default"]["allowed_tools"] = ["Bash(env)"]  # so the run can show what it inherited
    root.write_config()
    env = root.env(**{TOKEN_ENV: gh.token})
    number = gh.issue("Add a greeting", body="Create `hello.txt` saying hello.")
    git(remote, "branch", "someone-elses", "main")
    gh.open_pull("A pull request, labelled too", head="someone-elses")

    assert root.mc("sync", env=env).stdout.strip() == f"github:acme/app#{number}: added MC-1"
    key = "MC-1"
    model_server.script(
        [
            bash("env"),
            *commit("hello.txt", "helo\n", "Add hello.txt"),
            text("Committed."),
            *commit("hello.txt", "hello\n", "Fix the spelling of the greeting"),
            text("Fixed."),
        ],
        match=worker_of(key),
    )
    model_server.script(
        [verdict("pass", ["hello.txt is there"]), verdict("pass", ["spelled right"])], match=reviewer_of(key)
    )

    root.mc("run", "--until-idle", env=env, timeout=300)
    root.mc("sync", env=env)

    first = root.show(key)
    (pull,) = ours(gh)
    assert pull["draft"] and pull["body"].startswith(f"Closes #{number}")
    assert git(remote, "rev-parse", f"refs/heads/mc/{key}") == first["done_sha"] == pull["head"]["sha"]
    (shown_env,) = [r.text for r in model_server.requests_for(worker_of(key)) if "ANTHROPIC_BASE_URL=" in r.text][:1]
    assert TOKEN_ENV not in shown_env and gh.token not in shown_env

    gh.check_run(
        first["done_sha"], "tests", "failure", title="1 failed", summary="test_hello", text="E  'helo' != 'hello'"
    )
    root.mc("sync", env=env)
    root.mc("run", "--until-idle", env=env, timeout=300)
    root.mc("sync", env=env)

    second = root.show(key)
    runs = worker_runs(second)
    assert len(runs) == 2 and runs[1]["session"] == runs[0]["session"]  # the same Claude Code session
    resumed = [r for r in model_server.requests_for(worker_of(key)) if "Check `tests` failure" in r.text]
    assert resumed and "E  'helo' != 'hello'" in resumed[0].text
    (same,) = ours(gh)
    assert same["number"] == pull["number"] and same["head"]["sha"] == second["done_sha"] != first["done_sha"]
    assert git(remote, "show", f"{second['done_sha']}:hello.txt") == "hello"

    gh.check_run(second["done_sha"], "tests", "success")
    gh.merge(pull["number"])
    root.mc("sync", env=env)

    final = root.show(key)
    assert final["status"] == "done" and final["delivery"]["state"] == "merged"
    assert [t["title"] for t in json.loads(root.mc("ticket", "list", "--json").stdout)] == ["Add a greeting"]
    for path in root.path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert gh.token.encode() not in path.read_bytes(), path


def ours(gh: GitHubServer) -> list[dict[str, Any]]:
    """The pull requests Mission Control opened (not the person's one in the listing)."""
    return [p for p in gh.pulls() if p["head"]["ref"].startswith("mc/")]


def test_claude_code_asks_on_the_issue_and_a_writers_slash_mc_answer_reaches_its_session(
    tmp_path: Path, claude_cli: str, model_server: Any, gh: GitHubServer, remote: Path
) -> None:
    settings = {"repo": "acme/app", "api_url": gh.url, "clone_url": f"file://{remote}", "token_env": TOKEN_ENV}
    root = AgentRoot(tmp_path / "root", claude_cli, model_server)
    root.config["plugins"]["github"] = {**settings, "poll_interval": 1, "logins": {"elmar": "elmar-gh"}}
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    env = root.env(**{TOKEN_ENV: gh.token})
    number = gh.issue("Add a greeting", body="Greet people.")
    gh.state.permissions["elmar-gh"] = "write"
    gh.rate_limited(reset_in=2)
    limited = root.mc("sync", env=env, check=False)
    assert limited.returncode == 1 and "waiting" in limited.stderr  # backed off, not a crash
    wait_for_sync(root, env)
    key = "MC-1"
    unsure = "I cannot tell where the greeting should go, so I changed nothing."
    model_server.script(
        [text(unsure), *commit("hello.txt", "hello\n", "Add hello.txt"), text("Done.")], match=worker_of(key)
    )
    model_server.script([verdict("pass", ["hello.txt is there"])], match=reviewer_of(key))

    root.mc("run", "--until-idle", env=env, timeout=300)
    assert root.show(key)["status"] == "needs_input"
    root.mc("sync", env=env)  # the escalation reaches the issue
    (asked,) = [c for c in gh.state.comments[number] if c["user"]["login"] == "mc-bot"]
    assert "@elmar-gh" in asked["body"] and "Worker died once" in asked["body"]
    assert unsure not in asked["body"]  # an agent's own words are never posted where everyone reads them

    gh.comment(number, "/mc answer Put it in hello.txt at the top level.", user="elmar-gh")
    root.mc("sync", env=env)
    root.mc("run", "--until-idle", env=env, timeout=300)
    root.mc("sync", env=env)

    ticket = root.show(key)
    first, second = worker_runs(ticket)
    assert second["session"] == first["session"]
    resumed = [r for r in model_server.requests_for(worker_of(key)) if "Put it in hello.txt" in r.user_text]
    assert resumed and "elmar-gh answered" in resumed[0].user_text
    assert ticket["status"] == "done" and len(ours(gh)) == 1


def wait_for_sync(root: AgentRoot, env: dict[str, str]) -> None:
    """`mc sync` until it succeeds (a rate limit has reset)."""
    deadline = time.time() + 30
    while root.mc("sync", env=env, check=False).returncode != 0:
        assert time.time() < deadline, "mc sync kept failing"
        time.sleep(0.5)

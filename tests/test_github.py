"""Work in, work out (issue 28): labelled GitHub issues become tickets, done work becomes one pull request,
failed checks and requested changes go back to the agent, a merge ends the ticket's work; escalations are
asked and answered on the issue; GitHub's failures are waited out. Against the suite's scripted GitHub
server and a real bare git repository as the remote, with the bundled scripted agent and reviewer (the
real Claude Code story is in test_github_e2e.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from github_server import GitHubServer

from conftest import McRoot, git, make_repo, worker_runs
from mission_control import mirrors

TOKEN_ENV = "MC_TEST_GITHUB_TOKEN"


class GitHubRoot:
    """An MC root whose github plugin points at a scripted GitHub server and a bare remote."""

    def __init__(self, tmp_path: Path, **plugin: Any) -> None:
        seed = make_repo(tmp_path / "seed")
        self.remote = tmp_path / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.remote)], check=True)
        git(seed, "push", "-q", str(self.remote), "main")
        self.gh = GitHubServer("acme/app", self.remote)
        settings = {
            "repo": "acme/app",
            "labels": ["mc"],
            "api_url": self.gh.url,
            "clone_url": f"file://{self.remote}",
            "token_env": TOKEN_ENV,
            "poll_interval": 1,
            **plugin,
        }
        plugins = {
            "review_loop": {},
            "dead_worker_retry": {},
            "circuit_breaker": {"enabled": False},
            "github": settings,
        }
        self.root = McRoot(tmp_path / "root", plugins=plugins)

    def env(self, **extra: str) -> dict[str, str]:
        return self.root.env(**{TOKEN_ENV: self.gh.token, **extra})

    def mc(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        return self.root.mc(*args, check=check, env=self.env(**env))

    def sync(self, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        return self.mc("sync", check=check, **env)

    def run(self) -> subprocess.CompletedProcess[str]:
        return self.mc("run", "--until-idle")

    def show(self, key: str) -> dict[str, Any]:
        return json.loads(self.mc("ticket", "show", key, "--json").stdout)

    def tickets(self) -> list[dict[str, Any]]:
        return json.loads(self.mc("ticket", "list", "--json").stdout)

    def remote_head(self, branch: str) -> str:
        return git(self.remote, "rev-parse", f"refs/heads/{branch}")

    def delivered(self, number: int) -> tuple[str, dict[str, Any]]:
        """Sync, run and sync again until issue ``number``'s ticket is done and delivered: (key, pull)."""
        self.sync()
        key = self.tickets()[-1]["key"]
        self.run()
        self.sync()
        (pull,) = self.gh.pulls()
        return key, pull


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHubRoot]:
    root = GitHubRoot(tmp_path)
    yield root
    root.gh.close()


# -- in --------------------------------------------------------------------------------------------


def test_a_labelled_issue_becomes_a_ticket_with_its_source_and_link(github: GitHubRoot) -> None:
    number = github.gh.issue("Greet the user", body="Write a **greeting**.")

    synced = github.sync()

    (ticket,) = github.tickets()
    assert synced.stdout.strip() == f"github:acme/app#{number}: added {ticket['key']}"
    shown = github.show(ticket["key"])
    assert shown["title"] == "Greet the user" and shown["body"] == "Write a **greeting**."
    assert shown["source"] == f"github:acme/app#{number}"
    assert shown["source_url"] == f"https://github.example/acme/app/issues/{number}"
    assert f"https://github.example/acme/app/issues/{number}" in github.mc("ticket", "show", ticket["key"]).stdout


def test_resyncs_never_duplicate_and_other_labels_and_pull_requests_are_not_tickets(github: GitHubRoot) -> None:
    github.gh.issue("For MC")
    github.gh.issue("Someone else's", labels=["bug"])
    git(github.remote, "branch", "feature", "main")
    github.gh.open_pull("A pull request, labelled too", head="feature")  # GitHub lists it among the issues

    for _ in range(3):
        github.sync()

    assert [t["title"] for t in github.tickets()] == ["For MC"]


def test_every_page_of_issues_is_read(github: GitHubRoot) -> None:
    for n in range(105):
        github.gh.issue(f"Issue {n}")

    github.sync()

    assert len(github.tickets()) == 105
    pages = github.gh.requests_to("GET", "/repos/acme/app/issues")
    assert [r.query.get("page") for r in pages] == [None, "2"]  # the second by its Link header


def test_an_edit_updates_a_ticket_not_yet_started_and_not_one_that_ran(github: GitHubRoot) -> None:
    number = github.gh.issue("Greet", body="script: commit")
    github.sync()
    (ticket,) = github.tickets()

    github.gh.edit_issue(number, title="Greet the user", body="Politely.\n\nscript: commit")
    github.sync()
    assert github.show(ticket["key"])["title"] == "Greet the user"

    github.run()
    github.gh.edit_issue(number, title="Something else")
    github.sync()
    assert github.show(ticket["key"])["title"] == "Greet the user"


def test_an_issue_closed_by_a_person_stops_its_running_ticket_without_a_death(github: GitHubRoot) -> None:
    number = github.gh.issue("Hang", body="script: hang")
    github.sync()
    (ticket,) = github.tickets()
    key = ticket["key"]
    controller = github.root.popen("run", env=github.env())
    try:
        wait_for(lambda: github.show(key)["status"] == "in_progress")
        github.gh.close_issue(number, by="carol")
        wait_for(lambda: github.show(key)["status"] == "needs_input")
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.communicate(timeout=60)
    shown = github.show(key)
    assert shown["death_count"] == 0 and len(worker_runs(shown)) == 1  # not counted, not retried
    assert [e["detail"] for e in shown["events"] if e["action"] == "stopped"] == [
        f"github:acme/app#{number} was closed by carol"
    ]


# -- out -------------------------------------------------------------------------------------------


def test_done_work_is_pushed_and_becomes_one_draft_pull_request_that_closes_the_issue(github: GitHubRoot) -> None:
    number = github.gh.issue("Greet", body="script: commit")

    key, pull = github.delivered(number)

    done_sha = github.show(key)["done_sha"]
    assert github.remote_head(f"mc/{key}") == done_sha
    assert pull["head"]["ref"] == f"mc/{key}" and pull["base"]["ref"] == "main" and pull["draft"] is True
    assert pull["body"].startswith(f"Closes #{number}")
    assert "**pass** by shadow_reviewer" in pull["body"] and "Runs: 1" in pull["body"]
    (comment,) = github.gh.state.comments[number]
    assert pull["html_url"] in comment["body"]
    github.sync()
    assert len(github.gh.pulls()) == 1 and len(github.gh.state.comments[number]) == 1


def test_a_failed_check_sends_the_ticket_back_with_the_checks_name_and_output_and_the_fix_lands_on_the_same_pull(
    github: GitHubRoot,
) -> None:
    number = github.gh.issue("Greet", body="script: commit")
    key, pull = github.delivered(number)
    first = github.show(key)["done_sha"]
    output = "\n".join(f"collected line {i}" for i in range(200)) + "\nE   AssertionError: expected 'hello'"
    github.gh.check_run(first, "tests", "failure", title="1 test failed", summary="test_greeting failed", text=output)
    github.gh.check_run(first, "lint", "success")

    github.sync()
    github.run()
    github.sync()

    shown = github.show(key)
    prompt = (github.root.path / "logs" / key / "2.prompt.md").read_text()
    assert "Check `tests` failure" in prompt and "test_greeting failed" in prompt
    assert "E   AssertionError: expected 'hello'" in prompt and "collected line 199" in prompt
    assert "collected line 0\n" not in prompt  # the tail, not the whole log
    assert "lint" not in prompt
    second = shown["done_sha"]
    assert second != first and github.remote_head(f"mc/{key}") == second
    (same,) = github.gh.pulls()
    assert same["number"] == pull["number"] and same["head"]["sha"] == second
    assert len(github.gh.state.comments[number]) == 1  # no second "opened" comment


def test_feedback_waits_until_every_check_on_the_commit_has_finished(github: GitHubRoot) -> None:
    key, _ = github.delivered(github.gh.issue("Greet", body="script: commit"))
    sha = github.show(key)["done_sha"]
    github.gh.check_run(sha, "tests", "failure", summary="broken")
    github.gh.check_run(sha, "slow", None)

    github.sync()
    assert github.show(key)["status"] == "done"

    github.gh.finish_check_run(sha, "slow", "success")
    github.sync()

    assert github.show(key)["status"] == "todo"
    (gap,) = json.loads(github.root.sql("SELECT pending_feedback FROM ticket")[0][0])["gaps"]
    assert "tests" in gap and "broken" in gap and "slow" not in gap


def test_changes_requested_by_a_reviewer_go_back_with_each_comment_once(github: GitHubRoot) -> None:
    key, pull = github.delivered(github.gh.issue("Greet", body="script: commit"))
    comments = (("hello.py", 3, "Use an f-string here."), ("README.md", 1, "Mention the greeting."))
    github.gh.review(pull["number"], "CHANGES_REQUESTED", "Almost there.", comments=comments)
    github.gh.review(pull["number"], "APPROVED", "Fine by me.", user="dora")

    github.sync()
    github.sync()

    shown = github.show(key)
    assert shown["status"] == "todo" and shown["review_cycles"] == 1
    feedback = json.loads(github.root.sql("SELECT pending_feedback FROM ticket")[0][0])
    (gap,) = feedback["gaps"]
    assert "Review by bob asked for changes: Almost there." in gap
    assert "hello.py:3: Use an f-string here." in gap and "README.md:1: Mention the greeting." in gap


def test_a_merged_pull_request_ends_the_tickets_work_and_removes_its_clone(github: GitHubRoot) -> None:
    key, pull = github.delivered(github.gh.issue("Greet", body="script: commit"))
    assert (github.root.path / "worktrees" / key).is_dir()  # kept while feedback may come

    github.gh.merge(pull["number"])
    synced = github.sync()

    assert f"{key}: merged" in synced.stdout
    shown = github.show(key)
    assert shown["status"] == "done" and shown["delivery"]["state"] == "merged"
    assert not (github.root.path / "worktrees" / key).exists()
    mirror = mirrors.path(github.root.path, f"file://{github.remote}")
    assert git(mirror, "rev-parse", "refs/heads/main") == github.remote_head("main") == shown["done_sha"]


def test_a_controller_killed_between_push_and_create_leaves_one_pull_request(github: GitHubRoot) -> None:
    github.gh.issue("Greet", body="script: commit")
    github.sync()
    github.run()
    github.gh.fail("GET", "/repos/acme/app/pulls", 200, delay=30)  # the look for an open one hangs
    syncing = github.root.popen("sync", env=github.env())
    wait_for(lambda: github.gh.requests_to("GET", "/repos/acme/app/pulls"))
    syncing.send_signal(signal.SIGKILL)
    syncing.communicate(timeout=30)
    github.gh.failures.clear()
    key = github.tickets()[0]["key"]
    assert github.remote_head(f"mc/{key}")  # pushed, no pull request yet
    assert not github.gh.pulls()

    github.sync()
    github.sync()

    assert len(github.gh.pulls()) == 1


def test_a_controller_killed_between_create_and_record_reuses_the_open_pull_request(github: GitHubRoot) -> None:
    number = github.gh.issue("Greet", body="script: commit")
    github.sync()
    github.run()

    crashed = github.sync(check=False, MC_CRASH_AT="sync:delivered")
    github.sync()

    assert crashed.returncode == -signal.SIGKILL
    assert len(github.gh.pulls()) == 1 and len(github.gh.requests_to("POST", "/repos/acme/app/pulls")) == 1
    assert len(github.gh.state.comments[number]) == 1


# -- people ----------------------------------------------------------------------------------------


def test_an_escalation_is_asked_on_the_issue_and_answered_by_a_writer_with_slash_mc_answer(tmp_path: Path) -> None:
    github = GitHubRoot(tmp_path, logins={"elmar": "elmar-gh"})
    github.root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    github.root.write_config()
    try:
        number = github.gh.issue("Unclear", body="script: die, commit")
        github.sync()
        github.run()
        key = github.tickets()[0]["key"]
        assert github.show(key)["status"] == "needs_input"
        github.sync()  # the escalation reaches the issue (an effect, after commit)
        asked = [c for c in github.gh.state.comments[number] if c["user"]["login"] == "mc-bot"]
        assert len(asked) == 1 and "@elmar-gh" in asked[0]["body"] and "/mc answer" in asked[0]["body"]

        github.gh.comment(number, "/mc answer use hello.txt", user="mallory")  # read access only
        github.gh.comment(number, "Thinking about it.", user="elmar-gh")
        github.gh.state.permissions["elmar-gh"] = "admin"
        github.sync()
        assert github.show(key)["status"] == "needs_input"

        github.gh.comment(number, "/mc answer Put it in hello.txt.", user="elmar-gh")
        github.sync()
        github.sync()
    finally:
        github.gh.close()
    shown = github.show(key)
    assert shown["status"] == "todo"
    answers = [e for e in shown["events"] if e["action"] == "answer"]
    assert len(answers) == 1 and answers[0]["actor"] == "github:elmar-gh"
    assert json.loads(github.root.sql("SELECT pending_feedback FROM ticket")[0][0])["answer"]["text"] == (
        "Put it in hello.txt."
    )


# -- GitHub's failures -----------------------------------------------------------------------------


def test_a_rate_limit_is_waited_out_and_shown_in_mc_health(github: GitHubRoot) -> None:
    github.gh.issue("Greet")
    github.gh.rate_limited(reset_in=3600)

    synced = github.sync(check=False)

    assert synced.returncode == 1 and "github.list_work_items: waiting " in synced.stderr
    assert len(github.gh.requests) == 1  # nothing more asked in that pass
    health = github.mc("health").stdout
    assert "sync: github list_work_items" in health and "rate limit" in health and "(waiting, not a failure)" in health
    again = github.sync(check=False)
    assert again.returncode == 1 and len(github.gh.requests) == 1  # not even by hand before the reset
    (paces,) = github.root.sql("SELECT value FROM meta WHERE key = 'sync:failing'")[0]
    reset = [{**pace, "retry_at": time.time() - 1} for pace in json.loads(paces)]  # the hour has passed
    github.root.sql("UPDATE meta SET value = ? WHERE key = 'sync:failing'", json.dumps(reset))
    github.sync()
    assert len(github.tickets()) == 1
    assert "sync:" not in github.mc("health").stdout


def test_a_delivery_that_keeps_failing_is_retried_and_its_owner_told(github: GitHubRoot) -> None:
    number = github.gh.issue("Greet", body="script: commit")
    github.sync()
    github.run()
    github.gh.fail("POST", "/repos/acme/app/pulls", 502, times=3)

    for _ in range(3):
        assert github.sync(check=False).returncode == 1
    key = github.tickets()[0]["key"]
    (told,) = github.show(key)["escalations"]
    assert told["reason"].startswith(f"Handing {key}'s work back failed 3 times: RequestFailed")
    assert any("failed 3 times" in c["body"] for c in github.gh.state.comments[number])  # on the issue too
    assert "attempt(s)" in github.mc("health").stdout

    github.sync()

    assert len(github.gh.pulls()) == 1 and github.show(key)["delivery"]["state"] == "open"


@pytest.mark.parametrize("status", [401, 422, 500, 502])
def test_a_github_error_is_one_line_never_a_traceback(github: GitHubRoot, status: int) -> None:
    github.gh.fail("GET", "/repos/acme/app/issues", status)

    synced = github.sync(check=False)

    assert synced.returncode == 1
    (line,) = synced.stderr.strip().splitlines()
    assert line.startswith("mc: sync: github.list_work_items") and "Traceback" not in synced.stderr


def test_a_missing_token_is_a_one_line_config_error(github: GitHubRoot) -> None:
    env = {k: v for k, v in github.env().items() if k != TOKEN_ENV}
    result = github.root.mc("sync", check=False, env=env)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"mc: {github.root.config_path}: plugins.github.token_env: ${TOKEN_ENV} is not set (the token)"
    )


def test_mc_doctor_says_the_token_is_valid_with_its_scopes_and_rate_left(github: GitHubRoot) -> None:
    doctor = github.mc("doctor", check=False).stdout

    assert "ok   github: token valid for mc-bot" in doctor
    assert "ok   github: scopes: repo" in doctor and "ok   github: rate limit: " in doctor


# -- the token -------------------------------------------------------------------------------------


def test_the_token_never_reaches_a_run_a_file_or_a_log(tmp_path: Path) -> None:
    github = GitHubRoot(tmp_path)
    dump = tmp_path / "seen-env.txt"
    script = f"env > {dump}; git commit -q --allow-empty -m work && echo DONE: $(git rev-parse HEAD)"
    github.root.config["workers"]["default"] = {"command": ["sh", "-c", script], "timeout": 60}
    github.root.write_config()
    try:
        github.gh.issue("Greet")
        github.sync()
        github.run()
        github.sync()
    finally:
        github.gh.close()
    assert len(github.gh.pulls()) == 1
    seen = dump.read_text()
    assert TOKEN_ENV not in seen and github.gh.token not in seen
    for path in github.root.path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert github.gh.token.encode() not in path.read_bytes(), path


def wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_repeated_looks_at_a_pull_request_are_conditional_requests_that_cost_no_rate_limit(
    github: GitHubRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mc_hooks.settings import Section
    from mc_hooks.work import Delivered
    from mc_plugins.github import GitHub

    monkeypatch.setenv(TOKEN_ENV, github.gh.token)
    settings = {"repo": "acme/app", "api_url": github.gh.url, "token_env": TOKEN_ENV, "poll_interval": 1}
    plugin = GitHub(Section(settings, "plugins.github", "config.yaml"))
    git(github.remote, "branch", "mc/MC-1", "main")
    pull = github.gh.open_pull("Greet", head="mc/MC-1", user="mc-bot")
    sha = github.remote_head("mc/MC-1")
    ticket = SimpleNamespace(id=1, key="MC-1", source="github:acme/app#9", status="done")
    delivered = Delivered(url="https://github.example/acme/app/pull/2", sha=sha, ref=f"pull/{pull}")

    for _ in range(2):
        plugin.next_news.clear()
        news = plugin.read_work_news(ticket, delivered, controller=None)
        assert news is not None and news.state == "open"

    looks = github.gh.requests_to("GET", f"/repos/acme/app/pulls/{pull}")
    assert [r.status for r in looks] == [200, 304] and "if-none-match" in looks[1].headers
    assert github.gh.remaining == github.gh.rate_limit - len([r for r in github.gh.requests if r.status != 304])


def test_what_mission_control_posts_on_github_never_carries_a_credential(
    github: GitHubRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mc_hooks.settings import Section
    from mc_plugins.github import GitHub

    monkeypatch.setenv(TOKEN_ENV, github.gh.token)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "an-api-key-of-no-known-shape")
    settings = {"repo": "acme/app", "api_url": github.gh.url, "token_env": TOKEN_ENV}
    plugin = GitHub(Section(settings, "plugins.github", "config.yaml"))
    number = github.gh.issue("Greet")
    ticket = SimpleNamespace(id=1, key="MC-1", source=f"github:acme/app#{number}", status="needs_input")
    quoted = (
        "The reviewer says: an-api-key-of-no-known-shape sk-ant-oat01-abcdefghijklmnopqrstuvwx ghp_0123456789abcdefghij"
    )

    plugin.on_escalate(ticket, quoted, "elmar")

    (comment,) = github.gh.state.comments[number]
    assert comment["body"].count("[redacted]") == 3 and "The reviewer says:" in comment["body"]
    assert "an-api-key" not in comment["body"] and "sk-ant" not in comment["body"] and "ghp_" not in comment["body"]


def test_tickets_of_one_repository_starting_together_share_its_mirror_without_failing(github: GitHubRoot) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = f"file://{github.remote}"
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: mirrors.update(github.root.path, url), range(8)))

    assert len(set(done)) == 1
    assert git(done[0], "rev-parse", "refs/heads/main") == github.remote_head("main")

"""A person in the loop (issue 27, part 1): answering an escalation reaches the agent, in the same
session; editing, stopping and the kill-switch's --stop-runs, through the service layer the CLI calls."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import AgentRoot, McRoot, commit, git, make_repo, reviewer_of, worker_of, worker_runs
from model_server import text, verdict

pytestmark = pytest.mark.slow


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.05)


def escalated(tmp_path: Path, claude_cli: str, model_server: Any) -> tuple[AgentRoot, Path, str]:
    """A real Claude Code worker whose first run is unsure and dies, so its ticket waits for a person; its
    next run commits hello.txt."""
    repo = make_repo(tmp_path / "app")
    root = AgentRoot(tmp_path / "root", claude_cli, model_server)
    root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    root.write_config()
    key = root.mc("ticket", "add", "Greet", "--body", "Write a greeting.", "--repo", str(repo)).stdout.strip()
    unsure = "I am not sure which file to change, so I did nothing."
    model_server.script(
        [text(unsure), *commit("hello.txt", "hi\n", "Add hello.txt"), text("Done.")], match=worker_of(key)
    )
    model_server.script([verdict("pass", ["greets"])], match=reviewer_of(key))
    root.run()
    assert root.show(key)["status"] == "needs_input"
    return root, repo, key


def test_an_answer_reaches_the_agent_in_the_same_session_with_the_reason_it_was_escalated(
    tmp_path: Path, claude_cli: str, model_server: Any
) -> None:
    root, repo, key = escalated(tmp_path, claude_cli, model_server)

    answered = root.mc("ticket", "answer", key, "Put it in hello.txt at the top level.")
    root.run()

    assert answered.stdout.startswith(f"{key} answered")
    ticket = root.show(key)
    assert ticket["status"] == "done"
    first, second = worker_runs(ticket)
    assert second["session"] == first["session"]  # the same agent session, resumed
    resumed = [r for r in model_server.requests_for(worker_of(key)) if "Put it in hello.txt" in r.text]
    assert resumed, "the answer never reached the model"
    words = resumed[0].user_text
    assert "answered" in words and "Put it in hello.txt at the top level." in words
    assert "Worker died" in words  # the reason it was escalated, beside the answer
    assert [e["action"] for e in ticket["events"]].count("answer") == 1
    assert git(repo, "show", f"{ticket['done_sha']}:hello.txt") == "hi"


def test_only_a_ticket_waiting_for_a_person_can_be_answered(mc_root: McRoot) -> None:
    key = mc_root.add("not waiting")
    result = mc_root.mc("ticket", "answer", key, "go on", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mc: {key} is todo: only a ticket waiting for a person (needs_input) can be answered; "
        "add a comment instead (`mc ticket comment`)"
    ]


def test_an_edited_body_is_what_the_next_run_is_given(mc_root: McRoot) -> None:
    key = mc_root.add("first title", "pass")
    mc_root.mc("ticket", "edit", key, "--title", "better title", "--body", "script: pass\nmore detail")
    mc_root.run()
    ticket = mc_root.show(key)
    prompt = (mc_root.path / "logs" / key / "1.prompt.md").read_text()
    assert ticket["title"] == "better title" and "more detail" in prompt and "better title" in prompt
    edits = [e for e in ticket["events"] if e["action"] == "edited"]
    assert len(edits) == 1 and edits[0]["detail"] == "edited: body, title"


def test_stopping_a_ticket_ends_its_run_now_and_parks_it_without_a_death(mc_root: McRoot) -> None:
    key = mc_root.add("long work", "pass")
    controller = mc_root.popen("run", env=mc_root.env(MC_DEMO_DELAY="60"))
    try:
        wait_for(lambda: mc_root.agent_runs(key) >= 1)
        started = time.time()
        mc_root.mc("ticket", "stop", key)
        wait_for(lambda: mc_root.sql("SELECT COUNT(*) FROM worker_run WHERE ended_at IS NOT NULL")[0][0] >= 1, 15)
        took = time.time() - started
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.wait(timeout=30)
    ticket = mc_root.show(key)
    assert took < 10 and (ticket["status"], ticket["death_count"]) == ("needs_input", 0)
    assert [e["action"] for e in ticket["events"]].count("stopped") == 1


def test_the_kill_switch_with_stop_runs_stops_what_is_running_and_loses_nothing(mc_root: McRoot) -> None:
    keys = [mc_root.add(f"long {n}", "pass") for n in range(2)]
    controller = mc_root.popen("run", env=mc_root.env(MC_DEMO_DELAY="60"))
    try:
        wait_for(lambda: all(mc_root.agent_runs(key) >= 1 for key in keys))
        mc_root.mc("killswitch", "on", "--stop-runs", "--reason", "stop everything")
        wait_for(lambda: all(t["status"] == "todo" for t in mc_root.show_all(keys)), 20)
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.wait(timeout=30)
    for key in keys:
        ticket = mc_root.show(key)
        assert ticket["death_count"] == 0 and worker_runs(ticket)[0]["outcome"] == "stopped"
    mc_root.mc("killswitch", "off")
    mc_root.run()
    assert all(t["status"] == "done" for t in mc_root.show_all(keys))


def test_an_answer_given_on_the_board_reaches_claude_code_in_the_same_session(
    tmp_path: Path, claude_cli: str, model_server: Any
) -> None:
    from test_board import TOKEN, Board, csrf_of, post

    root, _, key = escalated(tmp_path, claude_cli, model_server)
    board = Board(root, "--token", TOKEN)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": f"http://127.0.0.1:{board.port}"}
        status, _ = post(
            board, f"/tickets/{key}/answer", {"text": "hello.txt, please.", "csrf": csrf_of(board, key)}, headers
        )
    finally:
        board.stop()
    assert status == 303
    root.run()
    ticket = root.show(key)
    first, second = worker_runs(ticket)
    assert ticket["status"] == "done" and second["session"] == first["session"]
    assert [r for r in model_server.requests_for(worker_of(key)) if "hello.txt, please." in r.user_text]

"""The Claude Code preset as data: the argv it builds and what it reads from the CLI's output."""

from __future__ import annotations

import json
from pathlib import Path

from mission_control.agents import ClaudeCode
from mission_control.config import WorkerProfile

PRESET = ClaudeCode()


def stream(tmp_path: Path, *events: dict) -> Path:
    path = tmp_path / "1.log"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_the_worker_argv_allows_edits_and_git_commits_and_the_profiles_extras_only() -> None:
    profile = WorkerProfile(
        agent="claude-code", model="opus", args=("--effort", "high"), allowed_tools=("Bash(pytest:*)",)
    )
    argv = PRESET.worker_argv(profile, resume=None)
    assert argv[:2] == ["claude", "-p"] and "--dangerously-skip-permissions" not in argv
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    tools = argv[argv.index("--allowedTools") + 1 : argv.index("--model")]
    assert "Bash(git commit:*)" in tools and tools[-1] == "Bash(pytest:*)" and "Bash(git push:*)" not in tools
    assert argv[-4:] == ["--model", "opus", "--effort", "high"]


def test_a_later_run_resumes_the_recorded_session() -> None:
    argv = PRESET.worker_argv(WorkerProfile(agent="claude-code"), resume="1b0e6f0c-0000-4000-8000-000000000001")
    assert argv[argv.index("--resume") + 1] == "1b0e6f0c-0000-4000-8000-000000000001"
    assert "--session-id" not in argv


def test_the_reviewer_has_no_edit_tools_and_asks_for_a_structured_verdict() -> None:
    argv = PRESET.reviewer_argv(WorkerProfile(agent="claude-code"))
    assert argv[argv.index("--tools") + 1] == "Read,Grep,Glob,Bash"
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    schema = json.loads(argv[argv.index("--json-schema") + 1])
    assert schema["properties"]["verdict"]["enum"] == ["pass", "fail", "uncertain"]


def test_the_result_line_gives_session_cost_tokens_and_turns(tmp_path: Path) -> None:
    said = PRESET.report(
        stream(
            tmp_path,
            {"type": "system", "subtype": "init", "session_id": "s-1"},
            {"type": "assistant", "message": {"content": []}},
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "session_id": "s-1",
                "total_cost_usd": 0.25,
                "num_turns": 4,
                "usage": {"input_tokens": 100, "cache_read_input_tokens": 900, "output_tokens": 50},
            },
        )
    )
    assert (said.finished, said.is_error, said.session) == (True, False, "s-1")
    assert (said.cost_usd, said.input_tokens, said.output_tokens, said.turns) == (0.25, 1000, 50, 4)


def test_an_api_failure_is_an_error_in_the_agents_words(tmp_path: Path) -> None:
    result = {"type": "result", "subtype": "success", "is_error": True, "api_error_status": 529, "result": "Overloaded"}
    said = PRESET.report(stream(tmp_path, result))
    assert said.is_error and said.error == "API error 529: Overloaded"


def test_a_run_cut_short_keeps_its_session_but_has_no_result(tmp_path: Path) -> None:
    path = stream(tmp_path, {"type": "system", "subtype": "init", "session_id": "s-2"})
    with path.open("a") as handle:
        handle.write('{"type": "assistant", "mess')  # killed mid-line
    said = PRESET.report(path)
    assert (said.session, said.finished, said.cost_usd) == ("s-2", False, None)


def test_a_missing_session_is_recognised_so_the_next_run_starts_afresh(tmp_path: Path) -> None:
    errors = ["No conversation found with session ID: 00000000-0000-4000-8000-000000000000"]
    said = PRESET.report(stream(tmp_path, {"type": "result", "subtype": "error_during_execution", "errors": errors}))
    assert said.is_error and said.session_lost


def test_a_spend_budget_caps_the_cli_at_what_its_session_spent_plus_what_is_left() -> None:
    from mission_control.launch import History

    past = History(session="1b0e6f0c-0000-4000-8000-000000000001", budget_left=0.25, session_spent=1.5)
    argv = PRESET.worker_argv(WorkerProfile(agent="claude-code"), resume=past.session, spend_cap=past.spend_cap())
    assert argv[argv.index("--max-budget-usd") + 1] == "1.7500"
    assert "--max-budget-usd" not in PRESET.worker_argv(WorkerProfile(agent="claude-code"), resume=None)

"""The Codex and Aider presets as data: the argv they build and what they read from the CLIs' output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mission_control.agents import AgentReport, Aider, Codex, RunPaths
from mission_control.config import WorkerProfile

CODEX, AIDER = Codex(), Aider()
SESSION = "01a23820-f91b-7fb1-b146-0e6b63773055"


def lines(tmp_path: Path, *events: dict | str) -> Path:
    path = tmp_path / "1.log"
    text = "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_codex_worker_writes_its_worktree_and_git_dirs_only_and_reads_the_prompt_on_stdin() -> None:
    paths = RunPaths(git_dirs=(Path("/r/.git"), Path("/r/.git/worktrees/MC-1")))
    argv = CODEX.worker_argv(WorkerProfile(agent="codex", model="gpt-5", args=("-c", "x=1")), None, paths=paths)
    assert argv[:3] == ["codex", "exec", "--json"] and argv[-1] == "-"
    assert 'sandbox_mode="workspace-write"' in argv and 'approval_policy="never"' in argv
    assert 'sandbox_workspace_write.writable_roots=["/r/.git", "/r/.git/worktrees/MC-1"]' in argv
    assert "sandbox_workspace_write.exclude_slash_tmp=true" in argv
    assert argv[argv.index("--model") + 1] == "gpt-5" and argv[-3:-1] == ["-c", "x=1"]
    assert not any("dangerously" in a or a == "danger-full-access" for a in argv)


def test_a_later_codex_run_resumes_the_recorded_session() -> None:
    argv = CODEX.worker_argv(WorkerProfile(agent="codex"), SESSION)
    assert argv[:3] == ["codex", "exec", "resume"] and argv[-2:] == [SESSION, "-"]
    assert "--sandbox" not in argv  # `codex exec resume` has no --sandbox: it is set with -c


def test_a_codex_reviewer_is_read_only_ephemeral_and_answers_in_the_verdict_schema() -> None:
    argv = CODEX.reviewer_argv(WorkerProfile(agent="codex"), RunPaths(schema=Path("/logs/1.verdict-schema.json")))
    assert 'sandbox_mode="read-only"' in argv and "--ephemeral" in argv
    assert argv[argv.index("--output-schema") + 1] == "/logs/1.verdict-schema.json"


def test_the_codex_report_reads_the_session_usage_and_final_message(tmp_path: Path) -> None:
    said = CODEX.report(
        lines(
            tmp_path,
            {"type": "thread.started", "thread_id": SESSION},
            {"type": "item.completed", "item": {"type": "agent_message", "text": '{"verdict": "pass"}'}},
            {"type": "turn.completed", "usage": {"input_tokens": 360, "output_tokens": 90}},
        )
    )
    assert (said.session, said.finished, said.is_error, said.session_totals) == (SESSION, True, False, True)
    assert (said.input_tokens, said.output_tokens, said.cost_usd) == (360, 90, None)
    assert said.structured == {"verdict": "pass"}
    assert said.priced((2.0, 10.0)).cost_usd == pytest.approx((360 * 2 + 90 * 10) / 1e6)


def test_a_failed_codex_turn_is_an_error_in_its_own_words(tmp_path: Path) -> None:
    failed = {"type": "turn.failed", "error": {"message": "unexpected status 401 Unauthorized: bad key"}}
    said = CODEX.report(lines(tmp_path, {"type": "thread.started", "thread_id": SESSION}, failed))
    assert said.is_error and said.error == "unexpected status 401 Unauthorized: bad key"


def test_a_session_id_that_is_not_one_is_not_kept(tmp_path: Path) -> None:
    forged = {"type": "thread.started", "thread_id": "--dangerously-bypass-approvals-and-sandbox"}
    said = CODEX.report(lines(tmp_path, forged, {"type": "turn.completed", "usage": {}}))
    assert said.session is None


def test_codex_resumes_only_a_session_it_still_holds(tmp_path: Path) -> None:
    env = {"CODEX_HOME": str(tmp_path)}
    assert not CODEX.has_session(env, SESSION)
    (tmp_path / "sessions" / "2026" / "12").mkdir(parents=True)
    (tmp_path / "sessions" / "2026" / "12" / f"rollout-2026-12-02T19-00-00-{SESSION}.jsonl").write_text("{}")
    assert CODEX.has_session(env, SESSION) and not CODEX.has_session(env, "*")


def test_an_aider_worker_reads_its_message_file_and_runs_no_commands_of_its_own(tmp_path: Path) -> None:
    paths = RunPaths(prompt=tmp_path / "1.prompt.md", state=tmp_path / "MC-1.agent")
    argv = AIDER.worker_argv(WorkerProfile(agent="aider", model="openai/gpt-4o"), None, paths=paths)
    assert argv[argv.index("--message-file") + 1] == str(tmp_path / "1.prompt.md")
    for flag in ("--yes-always", "--no-suggest-shell-commands", "--no-auto-test", "--no-auto-lint", "--no-gitignore"):
        assert flag in argv
    for offline in ("--no-check-update", "--no-analytics", "--no-show-release-notes", "--no-detect-urls"):
        assert offline in argv
    assert argv[argv.index("--chat-history-file") + 1] == str(tmp_path / "MC-1.agent" / "chat.history.md")
    assert "--no-restore-chat-history" in argv
    assert "--restore-chat-history" in AIDER.worker_argv(WorkerProfile(agent="aider"), "chat", paths=paths)


def test_the_aider_report_adds_up_its_token_and_cost_lines(tmp_path: Path) -> None:
    said = AIDER.report(
        lines(
            tmp_path,
            "Aider v0.86.2",
            "Tokens: 1.2k sent, 30 received. Cost: $0.0040 message, $0.0040 session.",
            "Tokens: 2.5k sent, 1.1k cache hit, 45 received. Cost: $0.0060 message, $0.0100 session.",
        )
    )
    assert (said.session, said.finished, said.turns) == ("chat", True, 2)
    assert (said.input_tokens, said.output_tokens, said.cost_usd) == (4800, 75, 0.01)


def test_an_aider_api_error_is_read_whole_though_it_wraps(tmp_path: Path) -> None:
    said = AIDER.report(
        lines(
            tmp_path,
            "Aider v0.86.2",
            "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect ",
            "API key provided",
            "",
            "The API provider is not able to authenticate you. Check your API key.",
        )
    )
    assert said.is_error and said.error.endswith("OpenAIException - Incorrect API key provided")


def test_output_without_aiders_banner_reports_nothing(tmp_path: Path) -> None:
    assert AIDER.report(lines(tmp_path, "Traceback (most recent call last):")) == AgentReport()

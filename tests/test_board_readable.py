"""The board shows an agent's output as a person reads it, not as raw event JSON (issue 27)."""

from __future__ import annotations

import json

from mission_control.board.readable import readable


def lines(*events: object) -> str:
    return "\n".join(json.dumps(e) if not isinstance(e, str) else e for e in events)


def test_claude_codes_stream_reads_as_messages_and_tool_calls() -> None:
    stream = lines(
        {"type": "system", "subtype": "init", "session_id": "s"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "I will add the file."}]}},
        {
            "type": "assistant",
            "message": {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "git add a"}}]},
        },
        {"type": "user", "message": {"content": [{"type": "tool_result", "content": "ok"}]}},
        {"type": "result", "subtype": "success", "result": "Committed."},
    )
    assert readable(stream).splitlines() == ["I will add the file.", "→ Bash git add a", "← ok", "= Committed."]


def test_codex_events_read_as_messages_and_commands() -> None:
    stream = lines(
        {"type": "thread.started", "thread_id": "t"},
        {"type": "item.completed", "item": {"type": "command_execution", "command": "ls", "exit_code": 0}},
        {"type": "item.completed", "item": {"type": "agent_message", "text": "Done."}},
        {"type": "turn.completed", "usage": {}},
    )
    assert readable(stream).splitlines() == ["$ ls (exit 0)", "Done."]


def test_plain_and_cut_lines_are_shown_as_they_are() -> None:
    assert readable('Aider v0.86\n{"type": "assist').splitlines() == ["Aider v0.86", '{"type": "assist']

"""An agent's output as a person reads it: the messages it wrote and the tools it called, one line each,
from the JSON event streams of Claude Code (``--output-format stream-json``) and Codex (``exec --json``);
any other line as it is. The raw log stays one link away."""

from __future__ import annotations

import json
from typing import Any

LINE = 300  # characters shown of one message, command or result


def readable(text: str) -> str:
    """``text`` (the tail of a run's output) with each JSON event replaced by what it says, or dropped
    when it says nothing a person needs (session starts, usage figures)."""
    shown: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("{"):
            if stripped:
                shown.append(line)
            continue
        try:
            event = json.loads(stripped)
        except ValueError:
            shown.append(line)  # a line cut by the tail, say
            continue
        shown.extend(_said(event) if isinstance(event, dict) else [line])
    return "\n".join(shown)


def _short(value: Any) -> str:
    line = " ".join(str(value).split())
    return line if len(line) <= LINE else line[: LINE - 1] + "…"


def _said(event: dict[str, Any]) -> list[str]:
    kind = event.get("type")
    if kind in ("assistant", "user"):  # Claude Code
        message = event.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}] if content else []
        return [line for block in blocks if isinstance(block, dict) for line in _claude_block(block)]
    if kind == "result":
        words = event.get("result") or event.get("subtype") or ""
        return [f"= {_short(words)}"] if words else []
    if kind == "item.completed" and isinstance(event.get("item"), dict):  # Codex
        item = event["item"]
        if item.get("type") == "agent_message":
            return [_short(item.get("text") or "")]
        if item.get("type") == "command_execution":
            return [f"$ {_short(item.get('command') or '')} (exit {item.get('exit_code')})"]
        return []
    if kind in ("turn.failed", "error"):
        error = event.get("error")
        words = error.get("message") if isinstance(error, dict) else event.get("message")
        return [f"! {_short(words or kind)}"]
    return []


def _claude_block(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "text" and block.get("text"):
        return [_short(block["text"])]
    if kind == "tool_use":
        given = block.get("input")
        fields = given if isinstance(given, dict) else {}
        what = fields.get("command") or fields.get("file_path") or fields.get("pattern") or ""
        return [f"→ {block.get('name')} {_short(what)}".rstrip()]
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        return [f"← {_short(content or '(no output)')}"]
    return []

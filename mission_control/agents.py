"""Agent presets: what it takes to run a known agent CLI unattended, as data for the runtime.

A preset turns a profile (``agent: claude-code`` plus its pass-through settings) into the argv and
environment of a worker or reviewer run, says how a later run resumes the conversation, and reads
the run's machine-readable output into an :class:`AgentReport`. The prompt never goes into argv: the
runtime feeds it on stdin. docs/agents.md lists the exact argv and why each part is there.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mission_control import ticket_runtime as rt
from mission_control.config import AgentSettings

HEAD_SCAN = 256 << 10  # the CLI's first lines (its session) are near the start
TAIL_SCAN = 1 << 20  # its final result line is near the end

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["pass", "fail", "uncertain"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "gaps": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["verdict", "reasons", "gaps"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class AgentReport:
    """What an agent CLI said about its run, from its own output (every field may be missing)."""

    session: str | None = None
    finished: bool = False  # a final result was printed
    is_error: bool = False
    error: str = ""  # the agent's own words for its failure
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    turns: int | None = None
    structured: Any = None  # the structured output a reviewer run returned
    session_lost: bool = False  # asked to resume a session the CLI does not have: start afresh next time
    # Cost and tokens are the session's running totals (a resumed session's include its earlier runs):
    # the store keeps each run's own share, the total less what earlier runs of the session were charged.
    session_totals: bool = False


class ClaudeCode:
    """Claude Code (npm ``@anthropic-ai/claude-code``) in print mode with streaming JSON output."""

    name: ClassVar[str] = "claude-code"
    executable: ClassVar[str] = "claude"
    # Enough to stage and commit in its own worktree; never push, never anything else by default.
    worker_tools: ClassVar[tuple[str, ...]] = (
        "Bash(git add:*)",
        "Bash(git commit:*)",
        "Bash(git status:*)",
        "Bash(git diff:*)",
        "Bash(git log:*)",
        "Bash(git show:*)",
        "Bash(git rm:*)",
        "Bash(git mv:*)",
    )
    review_tools: ClassVar[tuple[str, ...]] = (
        "Bash(git diff:*)",
        "Bash(git show:*)",
        "Bash(git log:*)",
        "Bash(git status:*)",
    )
    base_env: ClassVar[dict[str, str]] = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}

    def _common(self, settings: AgentSettings) -> list[str]:
        return [
            settings.executable or self.executable,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            # Only the user's own settings: a worktree's .claude/settings*.json is agent-writable and
            # must not widen the next run's permissions.
            "--setting-sources",
            "user",
        ]

    def _tail(self, settings: AgentSettings, tools: tuple[str, ...]) -> list[str]:
        # --allowedTools takes every following argument up to the next option, so options follow it.
        argv = ["--allowedTools", *tools]
        if settings.model:
            argv += ["--model", settings.model]
        return argv

    def worker_argv(self, settings: AgentSettings, resume: str | None, spend_cap: float | None = None) -> list[str]:
        """The worker's argv: edits inside its working directory, git to stage and commit, and the
        profile's ``allowed_tools``; a later run of the ticket resumes the recorded session; with a
        spend budget, the CLI stops itself at ``spend_cap`` (it counts the whole session's spend)."""
        argv = [*self._common(settings), "--permission-mode", "acceptEdits"]
        argv += self._tail(settings, (*self.worker_tools, *settings.allowed_tools))
        if resume:
            argv += ["--resume", resume]
        if spend_cap is not None:
            argv += ["--max-budget-usd", f"{spend_cap:.4f}"]
        return argv + list(settings.args)

    def reviewer_argv(self, settings: AgentSettings) -> list[str]:
        """The reviewer's argv: read-only tools (read files, git diff/show/log), nothing else is asked
        (``dontAsk`` denies the rest), and the verdict as structured output."""
        argv = [*self._common(settings), "--permission-mode", "dontAsk", "--tools", "Read,Grep,Glob,Bash"]
        argv += ["--no-session-persistence", "--json-schema", json.dumps(VERDICT_SCHEMA, separators=(",", ":"))]
        argv += self._tail(settings, (*self.review_tools, *settings.allowed_tools))
        return argv + list(settings.args)

    def env(self, settings: AgentSettings) -> dict[str, str]:
        """Environment for the CLI on top of the controller's (the profile's ``env`` wins)."""
        return {**self.base_env, **dict(settings.env)}

    def prepare_state(self, env: Mapping[str, str]) -> list[Path]:
        """Where the CLI keeps its own state under the run's HOME, created if missing so a sandbox can
        let the run write it: ``~/.claude`` (sessions, so later runs resume) and ``~/.claude.json``."""
        home = Path(env.get("HOME") or Path.home())
        (home / ".claude").mkdir(mode=0o700, parents=True, exist_ok=True)
        settings = home / ".claude.json"
        if not settings.exists():
            with contextlib.suppress(FileExistsError):
                fd = os.open(settings, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                os.write(fd, b"{}\n")
                os.close(fd)
        return [home / ".claude", settings]

    def report(self, stdout_path: rt.Output) -> AgentReport:
        """Read the run's stream: the session from the first lines, the final result from the last."""
        head, tail = _read_ends(stdout_path)
        session = None
        for event in _events(head):
            if event.get("type") == "system" and isinstance(event.get("session_id"), str):
                session = event["session_id"]
                break
        result = next((e for e in reversed(list(_events(tail))) if e.get("type") == "result"), None)
        if result is None:
            return AgentReport(session=session)
        usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        # Input tokens include the cached ones: they are billed too, at their own rates.
        inputs = [
            _count(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ]
        outputs = _count(usage.get("output_tokens"))
        # modelUsage holds the session's totals per model, as total_cost_usd does (a resumed session's
        # include its earlier runs); usage alone can miss the turn that ended a run.
        models = result.get("modelUsage") if isinstance(result.get("modelUsage"), dict) else {}
        per_model = [m for m in models.values() if isinstance(m, dict)]
        if per_model:
            keys = ("inputTokens", "cacheCreationInputTokens", "cacheReadInputTokens")
            inputs = [sum(_count(m.get(k)) or 0 for m in per_model for k in keys)]
            outputs = sum(_count(m.get("outputTokens")) or 0 for m in per_model)
        is_error = result.get("is_error") is True or result.get("subtype", "success") != "success"
        errors = result.get("errors") if isinstance(result.get("errors"), list) else []
        lost = is_error and any(str(e).startswith("No conversation found with session ID") for e in errors)
        return AgentReport(
            session_lost=lost,
            session=_text(result.get("session_id")) or session,
            finished=True,
            is_error=is_error,
            error=_error_text(result) if is_error else "",
            cost_usd=_number(result.get("total_cost_usd")),
            input_tokens=sum(n for n in inputs if n) if inputs[0] is not None else None,
            output_tokens=outputs,
            session_totals=True,
            turns=_count(result.get("num_turns")),
            structured=result.get("structured_output"),
        )


PRESETS: dict[str, ClaudeCode] = {ClaudeCode.name: ClaudeCode()}


def preset(settings: AgentSettings) -> ClaudeCode | None:
    """The preset a profile names (``agent:``), or None for a plain ``command`` profile."""
    return PRESETS.get(settings.agent) if settings.agent else None  # `tests` stages have no agent CLI


def _read_ends(source: rt.Output) -> tuple[bytes, bytes]:
    handle = rt.open_output(source)
    if handle is None:
        return b"", b""
    try:
        with handle:
            head = handle.read(HEAD_SCAN)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_SCAN))
            return head, handle.read(TAIL_SCAN)
    except OSError:
        return b"", b""


def _events(data: bytes) -> list[dict[str, Any]]:
    events = []
    for raw in data.splitlines():
        if not raw.startswith(b"{"):
            continue
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue  # a partial line at a read boundary, or not JSON
        if isinstance(event, dict):
            events.append(event)
    return events


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _error_text(result: dict[str, Any]) -> str:
    status = result.get("api_error_status")
    words = _text(result.get("result"))
    errors = result.get("errors")
    if not words and isinstance(errors, list) and errors:
        words = "; ".join(str(e) for e in errors[:3])
    words = " ".join((words or result.get("subtype") or "error").split())[:300]
    return f"API error {status}: {words}" if isinstance(status, int) else words

"""Agent presets: what it takes to run a known agent CLI unattended, as data for the runtime.

A preset turns a profile (``agent: claude-code`` plus its pass-through settings) into the argv and
environment of a worker or reviewer run, says how a later run resumes the conversation, and reads
the run's output into an :class:`AgentReport`. The prompt never goes into argv: the runtime feeds it
on stdin (Aider reads it from the prompt file, named by a path Mission Control chose).
docs/agents.md lists the exact argv of each preset and why each part is there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    last_message: str = ""  # the agent's final words (a dead worker's reason shows them)

    def priced(self, price_per_mtok: tuple[float, float] | None) -> AgentReport:
        """This report with its cost worked out from its tokens at ``price_per_mtok`` (USD per million
        input and output tokens), where the CLI reported tokens but no cost."""
        if self.cost_usd is not None or price_per_mtok is None or self.input_tokens is None:
            return self
        cost = ((self.input_tokens or 0) * price_per_mtok[0] + (self.output_tokens or 0) * price_per_mtok[1]) / 1e6
        return replace(self, cost_usd=round(cost, 6))


@dataclass(frozen=True)
class RunPaths:
    """Paths a preset's argv may name besides the profile's own settings, all chosen by Mission Control."""

    git_dirs: tuple[Path, ...] = ()  # where a worker's commits go (the repository's and its worktree's git dirs)
    state: Path | None = None  # the ticket's own agent state directory (Aider's chat history)
    prompt: Path | None = None  # the prompt file (for a CLI that reads its message from a file)
    schema: Path | None = None  # the verdict's JSON schema (for a CLI that reads it from a file)


class Preset:
    """What every preset says about its CLI; the subclasses build argv and read reports."""

    name: ClassVar[str]
    executable: ClassVar[str]
    base_env: ClassVar[dict[str, str]] = {}
    prompt_on_stdin: ClassVar[bool] = True  # otherwise the run reads the prompt file (RunPaths.prompt)
    reviews: ClassVar[bool] = True  # it can judge a commit read-only with a structured verdict
    needs_state: ClassVar[bool] = False  # it keeps per-ticket state outside the worktree (RunPaths.state)
    schema_file: ClassVar[bool] = False  # its reviewer reads the verdict's JSON schema from a file (RunPaths.schema)
    names_git_dirs: ClassVar[bool] = False  # its worker argv names the git dirs a commit writes (RunPaths.git_dirs)
    # Files the CLI loads from its working directory that would let one run change how the next one runs
    # (its settings, API base, shell hooks): hidden from the run in the sandbox.
    worktree_config: ClassVar[tuple[str, ...]] = ()
    scratch: ClassVar[tuple[str, ...]] = ()  # what it leaves in the worktree that is not work (caches)
    # Directories it makes directly under /tmp whatever TMPDIR says ("{uid}": the user id); in the sandbox
    # each run gets a private one there (the host's /tmp is read-only inside).
    fixed_tmp: ClassVar[tuple[str, ...]] = ()
    # The hosts its CLI calls by default (its API, its login's token refresh): a sandboxed run may reach
    # these, the hosts its base URL variables name, and its profile's allowed_hosts; nothing else.
    api_hosts: ClassVar[tuple[str, ...]] = ()
    # What a sandboxed run's own HOME (one per ticket, see launch.agent_home) is seeded with from the
    # user's, relative to HOME: files copied in afresh for each run (what the CLI needs to log in, which
    # it may rewrite: a refreshed token), and files bound read-only (settings the user chose, which a
    # run must not change for later runs or for the user's own CLI).
    home_copies: ClassVar[tuple[str, ...]] = ()
    home_read_only: ClassVar[tuple[str, ...]] = (".gitconfig", ".config/git/config")
    # Variables naming where the CLI keeps its state (``CODEX_HOME``): pointed into the run's own HOME.
    home_variables: ClassVar[dict[str, str]] = {}

    def worker_argv(
        self, settings: AgentSettings, resume: str | None, spend_cap: float | None = None, paths: RunPaths = RunPaths()
    ) -> list[str]:
        raise NotImplementedError

    def reviewer_argv(self, settings: AgentSettings, paths: RunPaths = RunPaths()) -> list[str]:
        raise NotImplementedError

    def report(self, stdout_path: rt.Output) -> AgentReport:
        raise NotImplementedError

    def env(self, settings: AgentSettings) -> dict[str, str]:
        """Environment for the CLI on top of the controller's (the profile's ``env`` wins)."""
        return {**self.base_env, **dict(settings.env)}

    def has_session(self, env: Mapping[str, str], session: str) -> bool:
        """Whether the CLI still holds ``session`` (resuming one it lost fails the run)."""
        return True

    def login_problem(self, env: Mapping[str, str], settings: AgentSettings) -> str | None:
        """Why the CLI could not log in with ``env`` (the controller's environment with the profile's),
        as far as can be told offline; None when it has a key or a login."""
        return None


class ClaudeCode(Preset):
    """Claude Code (npm ``@anthropic-ai/claude-code``) in print mode with streaming JSON output."""

    name: ClassVar[str] = "claude-code"
    executable: ClassVar[str] = "claude"
    api_hosts: ClassVar[tuple[str, ...]] = ("api.anthropic.com:443", "console.anthropic.com:443")
    home_copies: ClassVar[tuple[str, ...]] = (".claude/.credentials.json", ".claude.json")
    home_read_only: ClassVar[tuple[str, ...]] = (*Preset.home_read_only, ".claude/settings.json")
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

    def worker_argv(
        self, settings: AgentSettings, resume: str | None, spend_cap: float | None = None, paths: RunPaths = RunPaths()
    ) -> list[str]:
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

    def reviewer_argv(self, settings: AgentSettings, paths: RunPaths = RunPaths()) -> list[str]:
        """The reviewer's argv: read-only tools (read files, git diff/show/log), nothing else is asked
        (``dontAsk`` denies the rest), and the verdict as structured output."""
        argv = [*self._common(settings), "--permission-mode", "dontAsk", "--tools", "Read,Grep,Glob,Bash"]
        argv += ["--no-session-persistence", "--json-schema", json.dumps(VERDICT_SCHEMA, separators=(",", ":"))]
        argv += self._tail(settings, (*self.review_tools, *settings.allowed_tools))
        return argv + list(settings.args)

    def login_problem(self, env: Mapping[str, str], settings: AgentSettings) -> str | None:
        """An API key or token in the environment, or the login `claude` keeps in ~/.claude."""
        if any(env.get(name) for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")):
            return None
        home = Path(env.get("HOME") or Path.home())
        if (home / ".claude" / ".credentials.json").is_file():
            return None
        return "Claude Code is not logged in: set ANTHROPIC_API_KEY (environment or the profile's env) or run `claude`"

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
        # Whether total_cost_usd and modelUsage are the session's running totals (Claude Code 2.1.330:
        # they include a resumed session's earlier runs) or this run's own (2.1.197): decided per run, by
        # whether modelUsage grew past the run's own usage.
        totals = True
        if per_model:
            keys = ("inputTokens", "cacheCreationInputTokens", "cacheReadInputTokens")
            run_tokens = sum(n or 0 for n in inputs) + (outputs or 0)
            inputs = [sum(_count(m.get(k)) or 0 for m in per_model for k in keys)]
            outputs = sum(_count(m.get("outputTokens")) or 0 for m in per_model)
            totals = inputs[0] + outputs > run_tokens if inputs[0] is not None else True
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
            session_totals=totals,
            last_message=_words(result.get("result")),
            turns=_count(result.get("num_turns")),
            structured=result.get("structured_output"),
        )


SESSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")  # what a session id a CLI reported must look like


def _toml(value: str) -> str:
    """``value`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


class Codex(Preset):
    """Codex (npm ``@openai/codex``), ``codex exec`` with JSON Lines events."""

    name: ClassVar[str] = "codex"
    executable: ClassVar[str] = "codex"
    api_hosts: ClassVar[tuple[str, ...]] = ("api.openai.com:443", "auth.openai.com:443", "chatgpt.com:443")
    home_copies: ClassVar[tuple[str, ...]] = (".codex/auth.json",)
    home_read_only: ClassVar[tuple[str, ...]] = (*Preset.home_read_only, ".codex/config.toml")
    home_variables: ClassVar[dict[str, str]] = {"CODEX_HOME": ".codex"}
    schema_file: ClassVar[bool] = True
    names_git_dirs: ClassVar[bool] = True
    fixed_tmp: ClassVar[tuple[str, ...]] = ("codex-daemon-{uid}",)  # its Linux sandbox helper's

    def _options(self, settings: AgentSettings, sandbox: str) -> list[str]:
        # -c, not --sandbox: `codex exec resume` takes no --sandbox. Nobody is there to approve anything.
        argv = ["--json", "-c", f"sandbox_mode={_toml(sandbox)}", "-c", 'approval_policy="never"']
        if settings.model:
            argv += ["--model", settings.model]
        return argv

    def worker_argv(
        self, settings: AgentSettings, resume: str | None, spend_cap: float | None = None, paths: RunPaths = RunPaths()
    ) -> list[str]:
        """The worker's argv: commands sandboxed to the working directory and the repository's git
        directory (Codex keeps ``.git`` read-only otherwise, so it could not commit), no network for
        them, ``/tmp`` left out (``TMPDIR`` stays writable); a later run resumes the recorded session
        (``codex exec resume <id>``). Codex has no spend cap of its own (``spend_cap`` is not used)."""
        argv = [settings.executable or self.executable, "exec"]
        if resume:
            argv.append("resume")
        argv += self._options(settings, "workspace-write")
        if paths.git_dirs:
            roots = ", ".join(_toml(str(path)) for path in paths.git_dirs)
            argv += ["-c", f"sandbox_workspace_write.writable_roots=[{roots}]"]
        argv += ["-c", "sandbox_workspace_write.exclude_slash_tmp=true", *settings.args]
        return [*argv, resume, "-"] if resume else [*argv, "-"]

    def reviewer_argv(self, settings: AgentSettings, paths: RunPaths = RunPaths()) -> list[str]:
        """The reviewer's argv: a read-only sandbox, no session kept, the verdict as the final message
        in the shape of ``paths.schema`` (``--output-schema``)."""
        argv = [settings.executable or self.executable, "exec", *self._options(settings, "read-only"), "--ephemeral"]
        if paths.schema is not None:
            argv += ["--output-schema", str(paths.schema)]
        return [*argv, *settings.args, "-"]

    def _home(self, env: Mapping[str, str]) -> Path:
        return Path(env.get("CODEX_HOME") or Path(env.get("HOME") or Path.home()) / ".codex")

    def login_problem(self, env: Mapping[str, str], settings: AgentSettings) -> str | None:
        """OPENAI_API_KEY or CODEX_API_KEY, or `codex login`'s auth.json; a provider of the profile's own
        (``model_provider=`` in ``args``) brings its own key, which is not checked here."""
        if any("model_provider" in arg for arg in settings.args):
            return None
        if env.get("OPENAI_API_KEY") or env.get("CODEX_API_KEY") or (self._home(env) / "auth.json").is_file():
            return None
        return "Codex is not logged in: set OPENAI_API_KEY (environment or the profile's env) or run `codex login`"

    def has_session(self, env: Mapping[str, str], session: str) -> bool:
        """Whether ``$CODEX_HOME/sessions`` still holds the session's rollout file."""
        if not SESSION_ID.fullmatch(session):
            return False
        return any((self._home(env) / "sessions").glob(f"**/rollout-*{session}.jsonl"))

    def report(self, stdout_path: rt.Output) -> AgentReport:
        """Read the run's events: ``thread.started`` (the session), ``turn.completed`` (usage: the
        session's running totals) or ``turn.failed``, and the last agent message (a reviewer's verdict)."""
        head, tail = _read_ends(stdout_path)
        session = next((e.get("thread_id") for e in _events(head) if e.get("type") == "thread.started"), None)
        finished: dict[str, Any] | None = None
        failure: dict[str, Any] | None = None
        last_error, message = None, None
        for event in _events(tail):
            kind = event.get("type")
            if kind == "turn.completed":
                finished = event
            elif kind == "turn.failed":
                failure = event.get("error") if isinstance(event.get("error"), dict) else {}
            elif kind == "error":
                last_error = event.get("message")
            elif kind == "item.completed" and _is_message(event.get("item")):
                message = event["item"].get("text")
        session = session if isinstance(session, str) and SESSION_ID.fullmatch(session) else None
        if failure is not None:
            words = _text(failure.get("message")) or _text(last_error) or "the turn failed"
            return AgentReport(session=session, finished=True, is_error=True, error=" ".join(words.split())[:300])
        if finished is None:
            return AgentReport(session=session)
        usage: dict[str, Any] = finished["usage"] if isinstance(finished.get("usage"), dict) else {}
        structured = None
        if isinstance(message, str):
            with contextlib.suppress(ValueError):
                structured = json.loads(message)
        return AgentReport(
            session=session,
            finished=True,
            input_tokens=_count(usage.get("input_tokens")),
            output_tokens=_count(usage.get("output_tokens")),
            session_totals=True,
            structured=structured,
            last_message=_words(message),
        )


AIDER_TOKENS = re.compile(r"^Tokens: (?P<counts>.*?)\.(?: Cost: \$(?P<cost>[0-9.]+) message\b.*)?$")
AIDER_COUNT = re.compile(r"([0-9.]+)([kM]?) (sent|received|cache write|cache hit)")
AIDER_ERROR = re.compile(r"^litellm\.\w+Error: ")


class Aider(Preset):
    """Aider (PyPI ``aider-chat``): one message from the prompt file, edits applied and auto-committed."""

    name: ClassVar[str] = "aider"
    executable: ClassVar[str] = "aider"
    # Its model decides: OpenAI's and Anthropic's here; any other provider's host goes in allowed_hosts.
    api_hosts: ClassVar[tuple[str, ...]] = ("api.openai.com:443", "api.anthropic.com:443")
    home_read_only: ClassVar[tuple[str, ...]] = (*Preset.home_read_only, ".aider.conf.yml", ".env")
    prompt_on_stdin: ClassVar[bool] = False
    reviews: ClassVar[bool] = False  # it has no read-only mode and no structured output
    needs_state: ClassVar[bool] = True
    # Loaded from the git root with the run's own authority: .env even overrides the environment.
    worktree_config: ClassVar[tuple[str, ...]] = (
        ".env",
        ".aider.conf.yml",
        ".aider.model.settings.yml",
        ".aider.model.metadata.json",
    )
    scratch: ClassVar[tuple[str, ...]] = (".aider.tags.cache.v",)  # its repo map's cache
    # litellm would fetch its model price table from GitHub on import.
    base_env: ClassVar[dict[str, str]] = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    offline: ClassVar[tuple[str, ...]] = (
        "--no-check-update",
        "--no-show-release-notes",
        "--no-analytics",
        "--no-detect-urls",
        "--disable-playwright",
        "--no-show-model-warnings",
    )

    def worker_argv(
        self, settings: AgentSettings, resume: str | None, spend_cap: float | None = None, paths: RunPaths = RunPaths()
    ) -> list[str]:
        """The worker's argv: the prompt file as its one message, every confirmation answered yes, but
        no shell commands, lint or test commands of its own; its edits auto-committed (without the
        repository's hooks); chat history kept in the ticket's state directory, restored by a later
        run. Aider has no spend cap of its own."""
        if paths.prompt is None or paths.state is None:
            raise ValueError("Aider needs the prompt file and the ticket's state directory")
        argv = [settings.executable or self.executable, "--message-file", str(paths.prompt), "--yes-always"]
        argv += ["--no-suggest-shell-commands", "--no-auto-lint", "--no-auto-test", "--auto-commits"]
        argv += ["--no-git-commit-verify", "--no-gitignore", "--no-pretty", "--no-fancy-input", *self.offline]
        argv += ["--chat-history-file", str(paths.state / "chat.history.md")]
        argv += ["--input-history-file", str(paths.state / "input.history")]
        argv.append("--restore-chat-history" if resume else "--no-restore-chat-history")
        if settings.model:
            argv += ["--model", settings.model]
        return argv + list(settings.args)

    def reviewer_argv(self, settings: AgentSettings, paths: RunPaths = RunPaths()) -> list[str]:
        raise ValueError("Aider cannot review: it has no read-only mode")

    def login_problem(self, env: Mapping[str, str], settings: AgentSettings) -> str | None:
        """Some provider's API key in the environment (which one its model needs is litellm's business)."""
        if any(name.endswith("_API_KEY") and value for name, value in env.items()):
            return None
        home = Path(env.get("HOME") or Path.home())
        if (home / ".aider.conf.yml").is_file():
            return None  # keys may be there
        return "Aider has no API key: set OPENAI_API_KEY, ANTHROPIC_API_KEY, … (environment or the profile's env)"

    def report(self, stdout_path: rt.Output) -> AgentReport:
        """Read its printed lines: the banner (it ran, so its chat history is there to restore), each
        ``Tokens: … sent, … received. Cost: $… message`` line, and an API error litellm gave up on."""
        head, tail = _read_ends(stdout_path)
        started = any(line.startswith(b"Aider v") for line in head.splitlines())
        lines = tail.decode("utf-8", "replace").splitlines()
        inputs = outputs = calls = 0
        cost: float | None = None
        error = ""
        for index, line in enumerate(lines):
            tokens = AIDER_TOKENS.match(line)
            if tokens:
                calls += 1
                for number, unit, what in AIDER_COUNT.findall(tokens["counts"]):
                    count = round(float(number) * {"": 1, "k": 1e3, "M": 1e6}[unit])
                    outputs, inputs = (outputs + count, inputs) if what == "received" else (outputs, inputs + count)
                if tokens["cost"]:
                    cost = (cost or 0.0) + float(tokens["cost"])
            elif AIDER_ERROR.match(line):
                rest = []
                for more in lines[index + 1 :]:  # the message goes on until a blank line (it wraps)
                    if not more.strip():
                        break
                    rest.append(more.strip())
                error = " ".join([line.strip(), *rest])[:300]
        if not started:
            return AgentReport()
        return AgentReport(
            session="chat",  # its chat history in the ticket's state directory
            finished=not error,
            is_error=bool(error),
            error=error,
            cost_usd=None if cost is None else round(cost, 6),
            input_tokens=inputs if calls else None,
            output_tokens=outputs if calls else None,
            turns=calls or None,
        )


PRESETS: dict[str, Preset] = {p.name: p for p in (ClaudeCode(), Codex(), Aider())}


def preset(settings: AgentSettings) -> Preset | None:
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


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "agent_message"


def _words(value: Any, limit: int = 300) -> str:
    """An agent's message as one line of at most ``limit`` characters ("" for anything but text)."""
    if not isinstance(value, str):
        return ""
    line = " ".join(value.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# A reported figure beyond these is not a figure (JSON's Infinity and NaN parse; 1e400 is infinity):
# unreported, so it never reaches the store, the budget or the circuit breaker.
MAX_COST_USD = 1e9
MAX_TOKENS = 2**53


def _number(value: Any) -> float | None:
    """A cost as reported: a finite, non-negative number of dollars, or None (unreported)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) and 0 <= value <= MAX_COST_USD else None


def _count(value: Any) -> int | None:
    """A token or turn count as reported: a non-negative integer in range, or None (unreported)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS else None


def _error_text(result: dict[str, Any]) -> str:
    status = result.get("api_error_status")
    words = _text(result.get("result"))
    errors = result.get("errors")
    if not words and isinstance(errors, list) and errors:
        words = "; ".join(str(e) for e in errors[:3])
    words = " ".join((words or result.get("subtype") or "error").split())[:300]
    return f"API error {status}: {words}" if isinstance(status, int) else words

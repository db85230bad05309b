"""Loading and validating config.yaml: the host's own settings (database, worker profiles, reviewer,
operator, escalation) and each plugin's section, handed to the plugin as a :class:`Section`.

Every mistake becomes a :class:`ConfigError` whose message is one line naming the file, the key
path and what was expected; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mc_hooks.settings import ConfigError, Section, describe

DEFAULT_CONFIG_NAME = "config.yaml"
DEFAULT_CONFIG_TEXT = (Path(__file__).with_name("default_config.yaml")).read_text(encoding="utf-8")

# Every placeholder expands to a value Mission Control made or checked: a ticket key, a path it chose, a
# UUID, a number, a hex sha. Ticket text never becomes part of a command line, so no template can make a
# shell, an interpreter or an option parser run it; the prompt reaches a run as a file ({prompt_file},
# MC_PROMPT_FILE) or, for presets, on stdin. (docs/agents.md, "Ticket text and command templates".)
WORKER_PLACEHOLDERS = frozenset({"ticket", "prompt_file", "repo", "session", "attempt"})
REVIEWER_PLACEHOLDERS = frozenset({"ticket", "sha", "repo", "prompt_file"})
AGENTS = ("claude-code", "codex", "aider")  # the agent presets (mission_control.agents); else `command`
REVIEW_AGENTS = ("claude-code", "codex")  # the presets that can review (read-only, structured verdict)
EXECUTABLES = {"claude-code": "claude", "codex": "codex", "aider": "aider"}
TESTS_STAGE = "tests"  # a review stage that runs a test command in a clean checkout (verdict from its exit)
DEFAULT_STALL_TIMEOUT = 600.0
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
STATUSES = ("todo", "in_progress", "in_review", "done", "needs_input")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class AgentSettings:
    """How to run an agent CLI through its preset (``agent:``), or a plain argv template (``command:``)."""

    agent: str | None = None  # a preset name from AGENTS, or None for ``command``
    command: tuple[str, ...] | None = None
    executable: str | None = None  # the preset's CLI (default: its usual name on PATH)
    model: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    allowed_tools: tuple[str, ...] = ()
    timeout: float = 3600.0
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    writable_paths: tuple[str, ...] = ()  # what a sandboxed run may write besides its worktree (absolute)
    price_per_mtok: tuple[float, float] | None = None  # USD per million (input, output) tokens
    network: str = "allowlist"  # allowlist: its API, base URLs and allowed_hosts only (sandboxed); open
    allowed_hosts: tuple[str, ...] = ()  # host[:port] a sandboxed run may reach besides its API

    @property
    def program(self) -> str | None:
        """The executable this profile starts (for the start-up check), or None without one."""
        if self.agent is not None and self.agent != TESTS_STAGE:
            return self.executable or EXECUTABLES[self.agent]
        return self.command[0] if self.command else None


@dataclass(frozen=True)
class WorkerProfile(AgentSettings):
    name: str = "default"
    max_cost_usd: float | None = None  # each ticket's spend budget (a ticket's own --max-cost-usd wins)


@dataclass(frozen=True)
class ReviewStage(AgentSettings):
    """One stage of the review: an agent preset, ``agent: tests`` (a test command), or a command."""

    name: str = "reviewer"
    timeout: float = 600.0


@dataclass(frozen=True)
class ReviewerSettings(AgentSettings):
    """The shadow review: its stages, run in order on each done sha (the first verdict other than
    pass is the verdict). No stages: verdicts come from `mc review record`."""

    enabled: bool = True
    timeout: float = 600.0
    stages: tuple[ReviewStage, ...] = ()

    def stage(self, index: int) -> ReviewStage:
        """The stage at ``index`` (the last one past the end: a config reload may have removed stages)."""
        return self.stages[min(index, len(self.stages) - 1)] if self.stages else ReviewStage()

    def stage_label(self, index: int) -> str:
        """``stage 2 of 3 (tests)`` for a review with several stages; "" for one."""
        if len(self.stages) < 2:
            return ""
        number = min(index, len(self.stages) - 1) + 1
        return f"stage {number} of {len(self.stages)} ({self.stage(index).name})"


@dataclass(frozen=True)
class OperatorSettings:
    weak_patterns: tuple[re.Pattern[str], ...]
    interval: float


@dataclass(frozen=True)
class Config:
    """A validated config.yaml. ``root`` is the MC root: the directory holding the file."""

    file: str
    root: Path
    database: str
    ticket_prefix: str
    owner: str
    workers: dict[str, WorkerProfile]
    reviewer: ReviewerSettings
    operator: OperatorSettings
    plugins: dict[str, dict[str, Any]]
    keep_worktrees: bool = False
    sandbox: str = "auto"  # auto (on where bubblewrap works) | on | off
    max_workers: int = 2
    poll_interval: float = 1.0
    grace_period: float = 30.0
    lease_seconds: float = 30.0
    hook_timeout: float = 10.0
    board_token: str | None = None  # `mc board`: the bearer token a request must carry (None: loopback only)
    mtime_ns: int = field(default=0, compare=False)

    @property
    def is_sqlite(self) -> bool:
        return not self.database.startswith(("postgresql://", "postgres://"))

    @property
    def owner_title(self) -> str:
        """The escalation owner as written in messages: ``elmar`` -> ``Elmar``."""
        return self.owner[:1].upper() + self.owner[1:]

    def budget_of(self, own: float | None, worker: str | None) -> float | None:
        """A ticket's spend budget in US dollars: its own (``own``), else its worker profile's, else None."""
        if own is not None:
            return float(own)
        return self.workers.get(worker or "default", self.workers["default"]).max_cost_usd

    def plugin_section(self, name: str) -> Section:
        """The plugin's own settings, as a :class:`Section` for validated reads."""
        return Section(self.plugins.get(name, {}), f"plugins.{name}", self.file)

    def plugin_enabled(self, name: str) -> bool:
        return self.plugins.get(name, {}).get("enabled", True) is not False


def _check_template(section: Section, key: str, argv: list[str], allowed: frozenset[str]) -> None:
    if not argv:
        raise section.error(key, "a non-empty list of strings (an argv list, not a shell string)", argv)
    if Path(argv[0]).name == "claude" and "--session-id" in argv:  # what an earlier `mc init` wrote
        raise section.error(
            key,
            "`agent: claude-code` instead of the old default `claude -p --session-id ...` command, which cannot "
            "finish a ticket (docs/agents.md)",
        )
    for index, arg in enumerate(argv):
        for name in PLACEHOLDER.findall(arg):
            if name == "prompt":
                raise section.error(
                    f"{key}[{index}]",
                    "no {prompt}: ticket text never goes into a command line, where a shell or interpreter could "
                    "run it; pass {prompt_file} (a file holding the prompt) or read $MC_PROMPT_FILE",
                )
            if name not in allowed:
                names = ", ".join(f"{{{n}}}" for n in sorted(allowed))
                raise section.error(f"{key}[{index}]", f"only the placeholders {names}", arg)


def _agent_settings(
    section: Section, placeholders: frozenset[str], timeout: float, required: bool, kinds: tuple[str, ...] = AGENTS
) -> dict[str, Any]:
    """The settings worker profiles and review stages share: ``agent`` (a preset, or for a review stage
    ``tests``) or ``command`` (an argv template), the preset's pass-through settings, the timeout and the
    stall timeout."""
    agent = section.data.get("agent")
    if agent is not None:
        agent = section.text(
            "agent", None, "|".join(map(re.escape, kinds)), f"one of the agent presets ({', '.join(kinds)})"
        )
    command = section.text_list("command", None)
    tests = agent == TESTS_STAGE  # a command whose verdict is its exit status: set up like one
    if tests and command is None:
        raise section.error("command", "the test command to run, as an argv list (e.g. [pytest, -q])")
    if agent is not None and command is not None and not tests:
        raise section.error("command", "either agent or command, not both")
    if agent is None or tests:
        section.accept("agent")
        for key in ("executable", "model", "args", "allowed_tools"):
            if section.data.get(key) is not None:
                raise section.error(
                    key, f"a setting of agent presets ({', '.join(AGENTS)}); with command, put it in the argv"
                )
        if command is not None or required:
            _check_template(section, "command", command or [], placeholders)
    env = _env_pairs(section.mapping("env"))
    optional_text = {key: section.data.get(key) for key in ("executable", "model")}
    for key, value in optional_text.items():
        if value is not None:
            section.text(key, None, r"[^\x00-\x1f]+", "a non-empty string")
        section.accept(key)
    return {
        "agent": agent,
        "command": tuple(command) if command else None,
        "executable": optional_text["executable"],
        "model": optional_text["model"],
        "args": tuple(section.text_list("args", []) or []),
        "env": env,
        "allowed_tools": tuple(section.text_list("allowed_tools", []) or []),
        "timeout": section.number("timeout", timeout),
        "stall_timeout": section.number("stall_timeout", DEFAULT_STALL_TIMEOUT),
        "writable_paths": _absolute_paths(section, "writable_paths"),
        "price_per_mtok": _prices(section),
        "network": section.text("network", "allowlist", "allowlist|open", "allowlist or open"),
        "allowed_hosts": _hosts(section, "allowed_hosts"),
    }


def _hosts(section: Section, key: str) -> tuple[str, ...]:
    """``allowed_hosts``: ``host``, ``host:port`` or a URL each (port 443 when none is given)."""
    from mission_control.egress import parse_target

    hosts = section.text_list(key, []) or []
    for host in hosts:
        if parse_target(host) is None:
            raise section.error(key, "host or host:port names (e.g. registry.npmjs.org:443)", host)
    return tuple(hosts)


def _prices(section: Section) -> tuple[float, float] | None:
    """``price_per_mtok: {input: USD, output: USD}``: what a million tokens cost, for a CLI that reports
    tokens but no cost."""
    if section.data.get("price_per_mtok") is None:
        section.accept("price_per_mtok")
        return None
    prices = section.mapping("price_per_mtok")
    for key in ("input", "output"):
        if prices.data.get(key) is None:
            raise prices.error(key, "US dollars per million tokens (a number)")
    pair = tuple(prices.number(key, 0.0, strict=False, unit="US dollars") for key in ("input", "output"))
    prices.finish()
    return pair[0], pair[1]


def _env_pairs(env_section: Section) -> tuple[tuple[str, str], ...]:
    for key, value in env_section.data.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or not isinstance(value, str):
            raise env_section.error(str(key), "NAME: text (an environment variable and its value)", value)
    return tuple(sorted(env_section.data.items()))


def _review_stages(top: Section, env: Mapping[str, str]) -> ReviewerSettings:
    """``reviewer``: one stage as a mapping (with ``enabled``), or a list of stages run in order."""
    raw = top.data.get("reviewer")
    override = env.get("MC_ORCH_SHADOW_REVIEW")
    if override is not None and override != "" and override not in ("0", "1"):
        raise ConfigError(f"environment: MC_ORCH_SHADOW_REVIEW: expected 0 or 1, got {describe(override)}")
    if isinstance(raw, list):
        top.accept("reviewer")
        if not raw:
            raise top.error("reviewer", "at least one review stage (or a mapping with enabled: false)")
        stages = []
        for index, item in enumerate(raw):
            where = f"reviewer[{index}]"
            if not isinstance(item, Mapping):
                raise top.error(where, "a review stage (a mapping with agent or command)", item)
            item_section = Section(item, where, top.file)
            stages.append(_stage(item_section, required=True))
            item_section.finish()
        enabled = True if override in (None, "") else override == "1"
        return ReviewerSettings(enabled=enabled, stages=tuple(stages), timeout=stages[0].timeout)
    section = top.mapping("reviewer")
    enabled = section.flag("enabled", True)
    if override is not None and override != "":
        enabled = override == "1"
    stage = _stage(section, required=False)
    section.finish()
    configured = stage.agent is not None or stage.command is not None
    fields = {k: v for k, v in stage.__dict__.items() if k != "name"}
    return ReviewerSettings(**fields, enabled=enabled, stages=(stage,) if configured else ())


def _stage(section: Section, required: bool) -> ReviewStage:
    settings = _agent_settings(
        section, REVIEWER_PLACEHOLDERS, timeout=600, required=required, kinds=(*REVIEW_AGENTS, TESTS_STAGE)
    )
    name = settings["agent"] or "command"
    return ReviewStage(**settings, name=name)


def _absolute_paths(section: Section, key: str) -> tuple[str, ...]:
    paths = []
    for index, text in enumerate(section.text_list(key, []) or []):
        path = Path(text).expanduser()
        if not path.is_absolute():
            raise section.error(f"{key}[{index}]", "an absolute path (or one starting with ~)", text)
        paths.append(str(path))
    return tuple(paths)


def _database(value: str, root: Path, section: Section) -> str:
    if "://" not in value:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (root / path))
    scheme, rest = value.split("://", 1)
    if scheme == "sqlite":
        path = Path(rest[1:] if rest.startswith("/") else rest)
        # sqlite:///rel.db is relative to the MC root; sqlite:////abs.db is absolute.
        return str(path if path.is_absolute() else (root / path))
    if scheme in ("postgresql", "postgres"):
        return "postgresql://" + rest
    raise section.error("database", "a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB", value)


def parse_config(raw: Any, file: str, root: Path, env: Mapping[str, str]) -> Config:
    """Validate the parsed YAML document ``raw`` and build a :class:`Config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file}: (top level): expected a mapping of settings, got {describe(raw)}")
    top = Section(raw, "", file)
    database = _database(top.text("database", "mc.db"), root, top)
    if env.get("MC_DATABASE_URL"):
        database = _database(env["MC_DATABASE_URL"], root, Section({}, "MC_DATABASE_URL", "environment"))
    prefix = top.text("ticket_prefix", "MC", r"[A-Z][A-Z0-9]{0,15}", "1-16 capital letters or digits")
    escalation = top.mapping("escalation")
    owner = escalation.text("owner", "elmar", r"[\w.-]{1,64}", "a name of letters, digits, '.', '_' or '-'")
    escalation.finish()

    workers_section = top.mapping("workers")
    if not workers_section.data:
        workers_section = Section({"default": {"agent": "claude-code"}}, "workers", file)
    workers: dict[str, WorkerProfile] = {}
    for name in workers_section.data:
        profile = workers_section.mapping(str(name))
        settings = _agent_settings(profile, WORKER_PLACEHOLDERS, timeout=3600, required=True)
        has_budget = profile.data.get("max_cost_usd") is not None
        budget = profile.number("max_cost_usd", 1.0, unit="US dollars") if has_budget else None
        profile.accept("max_cost_usd")
        profile.finish()
        workers[str(name)] = WorkerProfile(**settings, name=str(name), max_cost_usd=budget)
    if "default" not in workers:
        raise workers_section.error("default", "a worker profile named 'default'")

    reviewer = _review_stages(top, env)

    operator_section = top.mapping("operator")
    patterns = []
    for index, text in enumerate(operator_section.text_list("weak_patterns", [r"(?i)\bTODO\b"]) or []):
        try:
            patterns.append(re.compile(text))
        except re.error as exc:
            raise operator_section.error(
                f"weak_patterns[{index}]", f"a valid regular expression ({exc})", text
            ) from None
    operator = OperatorSettings(tuple(patterns), operator_section.number("interval", 60))
    operator_section.finish()

    board_section = top.mapping("board")
    board_token = board_section.data.get("token")  # a secret: never echoed in an error
    board_section.accept("token")
    if board_token is not None and not (isinstance(board_token, str) and re.fullmatch(r"[!-~]{16,256}", board_token)):
        raise board_section.error("token", "16 to 256 printable characters without spaces (value not shown)")
    board_section.finish()

    plugins_section = top.mapping("plugins")
    plugins: dict[str, dict[str, Any]] = {}
    for name in plugins_section.data:
        section = plugins_section.mapping(str(name))
        section.flag("enabled", True)
        plugins[str(name)] = section.data

    config = Config(
        file=file,
        root=root,
        database=database,
        ticket_prefix=prefix,
        owner=owner,
        workers=workers,
        reviewer=reviewer,
        operator=operator,
        plugins=plugins,
        keep_worktrees=top.flag("keep_worktrees", False),
        sandbox=_auto_on_off(top, "sandbox"),
        max_workers=top.integer("max_workers", 2, minimum=1),
        poll_interval=top.number("poll_interval", 1.0),
        grace_period=top.number("grace_period", 30.0, strict=False),
        lease_seconds=top.number("lease_seconds", 30.0),
        hook_timeout=top.number("hook_timeout", 10.0),
        board_token=board_token,
    )
    top.finish()
    return config


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is: ``--config``, else ``MC_CONFIG``, else ``./config.yaml``."""
    env = os.environ if env is None else env
    return Path(explicit or env.get("MC_CONFIG") or DEFAULT_CONFIG_NAME)


def read_yaml(path: Path) -> Any:
    """Parse ``path`` as YAML, turning syntax errors into a ConfigError naming line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run `mc init` to create it, or pass --config PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}: {where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


def load_config(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file; raises :class:`ConfigError` on any mistake."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    raw = read_yaml(path)
    root = path.resolve().parent
    config = parse_config(raw, str(path), root, env)
    return _with_mtime(config, path)


def _with_mtime(config: Config, path: Path) -> Config:
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return replace(config, mtime_ns=mtime)


def _auto_on_off(section: Section, key: str) -> str:
    """``auto``, ``on`` or ``off``. YAML reads an unquoted ``on``/``off`` (as the docs write them) as a
    boolean: true means on, false off."""
    raw = section.data.get(key)
    if isinstance(raw, bool):
        section.accept(key)
        return "on" if raw else "off"
    return section.text(key, "auto", "auto|on|off", "auto, on or off")

"""Shared helpers: a real MC root with the bundled scripted agent and reviewer, driven through
the real `mc` command in subprocesses."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

import inprocess
import mission_control
from mission_control.config import Config

SCRIPTS = Path(mission_control.__file__).with_name("scripts")
BUILTINS = ("review_loop", "dead_worker_retry", "operator_guard", "killswitch")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MC_")}
    env.update(extra)
    return env


class McRoot:
    """An MC root in a temporary directory, with helpers that run the real `mc` command."""

    def __init__(self, path: Path, **overrides: Any) -> None:
        self.path = path
        # The scripted agents' state lives outside the MC root, as a user's tools would: a sandboxed run
        # sees none of the MC root, and may write this directory because the profiles list it.
        self.state = path.with_name(f"{path.name}-agent-state")
        self.state.mkdir(parents=True, exist_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        self.config = {
            "database": "mc.db",
            "max_workers": 2,
            "poll_interval": 0.1,
            "grace_period": 5,
            "workers": {"default": {"command": [sys.executable, str(SCRIPTS / "agent.py")], "timeout": 60}},
            "reviewer": {
                "enabled": True,
                "command": [sys.executable, str(SCRIPTS / "reviewer.py"), "{sha}"],
                "timeout": 60,
            },
            "operator": {"interval": 3600},
            # The circuit breaker would rightly trip on the storms of deaths some tests script; its own
            # tests turn it on.
            "plugins": {**{name: {"enabled": True} for name in BUILTINS}, "circuit_breaker": {"enabled": False}},
        }
        self.config.update(overrides)
        self.write_config()
        self.mc("init")

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def write_config(self) -> None:
        # Scripted workers write their state and what they saw beside the MC root (the test's directory):
        # the sandbox lets them, and still hides the MC root inside it.
        config = json.loads(json.dumps(self.config))
        for profile in [*config.get("workers", {}).values(), config.get("reviewer", {})]:
            if isinstance(profile, dict) and "command" in profile:
                profile.setdefault("writable_paths", [str(self.path.parent)])
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(MC_DEMO_STATE=str(self.state), **extra)

    def mc(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mission_control.cli", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            env=env or self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"mc {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mission_control.cli", "--config", str(self.config_path), *args],
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def add(self, title: str, script: str = "pass", *extra: str) -> str:
        return self.mc("ticket", "add", title, "--body", f"script: {script}", *extra).stdout.strip().splitlines()[-1]

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return self.mc("run", "--until-idle", env=self.env(**env))

    def run_until_tripped(self) -> subprocess.CompletedProcess[str]:
        """`mc run --until-idle` that ends held by a kill-switch engaged during it: exit 1, one line."""
        result = self.mc("run", "--until-idle", check=False)
        assert result.returncode == 1, result.stderr
        assert "stopped with the kill-switch engaged by" in result.stderr.splitlines()[-1]
        return result

    def show(self, key: str) -> dict[str, Any]:
        return json.loads(self.mc("ticket", "show", key, "--json").stdout)

    def show_all(self, keys: list[str]) -> list[dict[str, Any]]:
        """What ``mc ticket show KEY --json`` prints, for many tickets at once (one process, not one each)."""
        result = subprocess.run(
            [sys.executable, "-c", SHOW_ALL, str(self.config_path), *keys],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=300,
            check=True,
        )
        return [json.loads(line) for line in result.stdout.splitlines()]

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run a query on this root's store, SQLite or PostgreSQL (write ``?`` for parameters)."""
        database = self.config["database"]
        if database.startswith("postgresql://"):
            import psycopg2

            with psycopg2.connect(database) as conn, conn.cursor() as cur:
                cur.execute(query.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []
        with sqlite3.connect(self.path / database) as conn:
            return conn.execute(query, params).fetchall()

    def agent_runs(self, key: str) -> int:
        counter = self.state / f"{key}.runs"
        return int(counter.read_text()) if counter.exists() else 0


# The same reads as `mc ticket show --json`, for every key given.
SHOW_ALL = """
import json, sys
from pathlib import Path
from mission_control.cli_support import manual, open_store, ticket_by_key
from mission_control.config import load_config
from mission_control.store import views
config = load_config(Path(sys.argv[1]))
open_store(config)
controller = manual(config)
for key in sys.argv[2:]:
    ticket = ticket_by_key(controller, key)
    print(json.dumps(views.ticket_details(ticket, controller.budget_of(ticket))))
"""

POSTGRES_URL = os.environ.get("MC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_SKIPPED: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Without a PostgreSQL server or the agent CLIs, say once (not per test) that their tests were skipped
    and how to run them."""
    reports = terminalreporter.stats.get("skipped", [])
    for skipped in (POSTGRES_SKIPPED, AGENT_SKIPPED):
        if skipped:
            prefix = skipped[0].split(":")[0]
            count = sum(1 for report in reports if prefix in str(report.longrepr))
            terminalreporter.write_line(f"{skipped[0]} ({count} tests)", yellow=True)


def skip_or_fail(message: str, registry: list[str]) -> NoReturn:
    """Skip a test that needs something this machine lacks (said once in the summary); under CI, fail."""
    if os.environ.get("CI"):
        pytest.fail(message.replace("skipped", "cannot run in CI"))
    registry.append(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    """A connection to the PostgreSQL server the tests use; skips (fails under CI) without one."""
    try:
        import psycopg2

        conn = psycopg2.connect(POSTGRES_URL, connect_timeout=3)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = (
            f"PostgreSQL tests skipped: cannot reach {POSTGRES_URL} ({reason}); start a server there "
            "or set MC_TEST_POSTGRES_URL to enable them"
        )
        skip_or_fail(message, POSTGRES_SKIPPED)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def fresh_postgres(postgres_admin: Any) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"mc_t_{uuid.uuid4().hex[:12]}"
    with postgres_admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    with postgres_admin.cursor() as cur:
        if not os.environ.get("MC_TEST_KEEP_DB"):
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Policy stories run on SQLite; what depends on the store (transactions, concurrency, crashes, what text
# survives a round trip) runs on both, marked with this.
each_store = pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """The store to run a test on: the SQLite default, or (under ``@each_store``) also a fresh PostgreSQL
    database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return "mc.db"
    return request.getfixturevalue("fresh_postgres")


@pytest.fixture
def mc_root(tmp_path: Path, store: str) -> McRoot:
    """A fresh MC root with the scripted agent and reviewer and the four built-in plugins (on SQLite, or on
    each store under ``@each_store``)."""
    return McRoot(tmp_path / "root", database=store)


# -- real agent CLIs against the scripted model server --------------------------------------------

AGENT_SKIPPED: list[str] = []


def _agent_cli(name: str, what: str, needs: str) -> str:
    import agent_clis

    path, why = agent_clis.ensure(name)
    if path is None:
        message = f"{what} tests skipped: {why}; {needs} (or run `python tests/agent_clis.py`) to enable them"
        skip_or_fail(message, AGENT_SKIPPED)
    return str(path)


@pytest.fixture(scope="session")
def claude_cli() -> str:
    """The path of the real Claude Code CLI at its pinned version (installed with npm into the test
    cache on first use). Without npm or the registry the test is skipped; under CI it fails."""
    return _agent_cli("claude", "Claude Code", "install Node.js with npm and reach the npm registry")


@pytest.fixture(scope="session")
def claude_older_cli() -> str:
    """An older Claude Code (2.1.197), which reports each run's own cost, not a session's running total."""
    return _agent_cli("claude-older", "Claude Code 2.1.197", "install Node.js with npm and reach the npm registry")


@pytest.fixture(scope="session")
def codex_cli() -> str:
    """The real Codex CLI at its pinned version (npm, like Claude Code)."""
    return _agent_cli("codex", "Codex", "install Node.js with npm and reach the npm registry")


@pytest.fixture(scope="session")
def aider_cli() -> str:
    """The real Aider at its pinned version, in a virtualenv of its own (PyPI)."""
    return _agent_cli("aider", "Aider", "reach the PyPI registry")


@pytest.fixture
def model_server() -> Iterator[Any]:
    """A scripted model server on 127.0.0.1 for this test (see tests/model_server.py)."""
    from model_server import ModelServer

    server = ModelServer()
    yield server
    server.close()


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its stdout (stripped); raises on failure."""
    result = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Agent",
    "GIT_AUTHOR_EMAIL": "agent@mc.invalid",
    "GIT_COMMITTER_NAME": "Test Agent",
    "GIT_COMMITTER_EMAIL": "agent@mc.invalid",
}


def make_repo(path: Path) -> Path:
    """A git repository with one commit (a README) on main."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# app\n", encoding="utf-8")
    git(path, "add", "README.md")
    git(path, "-c", "user.name=Owner", "-c", "user.email=owner@mc.invalid", "commit", "-q", "-m", "initial")
    return path


SCRIPTED_MODEL = {"codex": "scripted", "aider": "openai/scripted"}


def agent_profile(agent: str, cli: str, server: Any) -> dict[str, Any]:
    """A profile running the real ``agent`` CLI at ``cli`` against the scripted model ``server``."""
    profile: dict[str, Any] = {"agent": agent, "executable": cli, "timeout": 120, "stall_timeout": 60}
    if agent in SCRIPTED_MODEL:
        profile["model"] = SCRIPTED_MODEL[agent]
        profile["price_per_mtok"] = {"input": 2.0, "output": 10.0}
    if agent == "codex":  # a provider of its own pointing at the server (the user's would be in ~/.codex)
        url = server.openai_url
        provider = f'{{name="scripted", base_url="{url}", env_key="OPENAI_API_KEY", wire_api="responses"}}'
        profile["args"] = ["-c", f"model_providers.scripted={provider}", "-c", "model_provider=scripted"]
        profile["allowed_hosts"] = [server.url]  # named in args, not in a base URL variable: allowed by name
    return profile


class AgentRoot(McRoot):
    """An MC root whose worker and reviewer are a real agent CLI (Claude Code unless ``agent`` says
    otherwise; Aider cannot review, so its reviewer is Codex at ``reviewer_cli``), talking to the
    scripted model server, with a HOME of its own (where the CLI keeps its sessions)."""

    def __init__(
        self,
        path: Path,
        cli: str,
        server: Any,
        database: str = "mc.db",
        agent: str = "claude-code",
        reviewer: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.cli, self.server = cli, server
        self.home = path.with_name(f"{path.name}-home")  # the user's HOME: outside the MC root
        self.home.mkdir(parents=True)
        # A user's git identity, as any user of these CLIs has (Aider writes a placeholder into the repo's
        # .git/config without one; the sandbox keeps that read-only).
        (self.home / ".gitconfig").write_text("[user]\n\tname = Test Agent\n\temail = agent@mc.invalid\n")
        preset = agent_profile(agent, cli, server)
        settings: dict[str, Any] = {
            "database": database,
            "workers": {"default": dict(preset)},
            "reviewer": {"enabled": True, **(reviewer or preset)},
            "plugins": {**{name: {"enabled": True} for name in BUILTINS}, "circuit_breaker": {"enabled": False}},
        }
        settings.update(overrides)
        super().__init__(path, **settings)

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            HOME=str(self.home),
            ANTHROPIC_BASE_URL=self.server.url,
            ANTHROPIC_API_KEY="sk-ant-test",
            OPENAI_API_BASE=self.server.openai_url,  # Aider's
            OPENAI_API_KEY="sk-test",
            **GIT_IDENTITY,
            **extra,
        )

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return self.mc("run", "--until-idle", env=self.env(**env), timeout=300)


def worker_of(key: str) -> str:
    """The text every request of ``key``'s worker conversation carries (its prompt's first line)."""
    return f"working unattended on ticket {key} "


def reviewer_of(key: str) -> str:
    """The text every request of ``key``'s preset reviewer carries."""
    return f"for ticket {key}, unattended and read-only"


def commit(path: str, content: str, message: str) -> list[Any]:
    """The scripted steps of an agent that writes a file and commits it (any agent: see model_server)."""
    from model_server import bash, write

    return [write(path, content), bash(f"git add {path} && git commit -q -m '{message}'")]


def worker_runs(ticket: dict[str, Any]) -> list[dict[str, Any]]:
    """The worker attempts of a `ticket show --json` (its ``runs`` also lists review runs)."""
    return [run for run in ticket["runs"] if run["kind"] == "worker"]


@pytest.fixture
def loop_config(tmp_path: Path) -> Iterator[Config]:
    """An MC root for in-process loop tests (tests/inprocess.py), its store open for the test."""
    yield from inprocess.loop_config(tmp_path)


def running_with_arg(arg: str) -> bool:
    """Whether a live (not zombie) process has ``arg`` in its argv: pids differ inside a sandbox, so tests
    find the processes a run left behind by a marker argument."""
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if arg.encode() in argv and state != "Z":
            return True
    return False

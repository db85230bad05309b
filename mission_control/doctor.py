"""`mc doctor` and the start-up check of `mc run`: is everything a run needs where the config says?"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

from mc_hooks.manager import PluginHost, load_plugins
from mc_hooks.settings import ConfigError
from mission_control import agents, sandbox
from mission_control.config import TESTS_STAGE, AgentSettings, Config, load_config
from mission_control.controller import Controller
from mission_control.store import StoreError
from mission_control.store.connection import close_database, open_database
from mission_control.worktrees import git

VERSION_TIMEOUT = 20


def _profiles(config: Config) -> Iterator[tuple[str, AgentSettings]]:
    for name, profile in config.workers.items():
        yield f"workers.{name}", profile
    if not config.reviewer.enabled:
        return
    several = len(config.reviewer.stages) > 1
    for index, stage in enumerate(config.reviewer.stages):
        if stage.program and stage.agent != TESTS_STAGE:  # a missing test command is the stage's verdict
            yield (f"reviewer[{index}]" if several else "reviewer"), stage


def resolve(program: str) -> str | None:
    """The path ``program`` runs as (a path, or a name looked up on PATH), or None if there is none."""
    if os.sep in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program)


INSTALL = {
    "claude-code": "npm install -g @anthropic-ai/claude-code",
    "codex": "npm install -g @openai/codex",
    "aider": "python -m pip install aider-install && aider-install, or pipx install aider-chat",
}


def _install_hint(settings: AgentSettings) -> str:
    if settings.agent in INSTALL:
        return f"install it ({INSTALL[settings.agent]}) or set executable: to its path"
    return "install it or fix the command"


def sandbox_line(config: Config) -> tuple[bool, str]:
    """Whether the config's ``sandbox`` setting can be honoured here, and what runs get, in one line.
    ``auto`` without a working bubblewrap passes, but says plainly that runs are not sandboxed."""
    why_not = sandbox.works()
    if config.sandbox == "off":
        return True, "sandbox: off in config.yaml; runs can read and write all the controller can"
    if why_not is None:
        return True, (
            "sandbox: on (bubblewrap); each run writes only its own clone and its agent's state, "
            "and reaches only its network allowlist"
        )
    if config.sandbox == "on":
        return False, f"sandbox: on in config.yaml, but {why_not}; install bubblewrap and socat or set sandbox: auto"
    return True, (
        f"sandbox: OFF ({why_not}); runs can read and write all the controller can (install bubblewrap and socat)"
    )


def network_lines(config: Config) -> Iterator[tuple[bool, str]]:
    """What each profile's runs may reach over the network, in one line each (sandboxed runs only)."""
    if not sandbox.enabled(config.sandbox):
        return
    for where, settings in _profiles(config):
        if settings.network == "open":
            yield True, f"{where}: network: open; its runs reach everything the controller can (the store included)"
            continue
        preset = agents.preset(settings)
        hosts = [*(preset.api_hosts if preset else ()), *settings.allowed_hosts]
        shown = ", ".join(hosts) if hosts else "nothing but the hosts its base URL variables name"
        yield True, f"{where}: network: allowlist ({shown})"


def missing_executables(config: Config) -> list[str]:
    """One line per problem that stops `mc run` before it starts: a worker profile's or the reviewer's
    program that cannot be found, or ``sandbox: on`` where bubblewrap cannot build one."""
    problems = []
    usable, line = sandbox_line(config)
    if not usable:
        problems.append(f"{config.file}: {line}")
    for where, settings in _profiles(config):
        program = settings.program
        if program and resolve(program) is None:
            what = "agent CLI" if settings.agent else "command"
            problems.append(f"{config.file}: {where}: the {what} {program!r} is not found; {_install_hint(settings)}")
    return problems


def _version(path: str) -> str:
    try:
        result = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(--version failed: {exc})"
    line = (result.stdout or result.stderr).strip().splitlines()
    return line[0][:120] if line else f"(--version printed nothing, exit {result.returncode})"


def checks(explicit: str | None) -> Iterator[tuple[bool, str]]:
    """Each check as (passed, one line). Stops after a config that cannot be read."""
    try:
        config = load_config(explicit)
    except ConfigError as exc:
        yield False, f"config: {exc}"
        return
    yield True, f"config: {config.file} is valid"
    try:  # exactly as `mc run` loads them: a misspelled plugin or setting fails here, not at the first run
        plugins = load_plugins(config)
        names = ", ".join(info.name for info in plugins.infos)
        yield True, f"plugins: {names or 'none'}"
        if not plugins.call_order("on_escalate"):
            yield True, "plugins: nobody is told when a ticket needs a person (configure plugins.notify: see README)"
    except ConfigError as exc:
        yield False, f"plugins: {exc}"
        plugins = None
    if plugins is not None:
        yield from plugin_checks(config, plugins)
    try:
        open_database(config.database)
        where = config.database if config.is_sqlite else config.database.split("@")[-1]
        yield True, f"database: {where} is reachable and its schema is current"
    except StoreError as exc:
        yield False, f"database: {exc}"
    finally:
        close_database()
    for where, settings in _profiles(config):
        program = settings.program
        if not program:
            continue
        path = resolve(program)
        if path is None:
            yield False, f"{where}: {program!r} is not found; {_install_hint(settings)}"
        elif settings.agent:
            yield True, f"{where}: {settings.agent} at {path}, {_version(path)}"
            preset = agents.preset(settings)
            problem = preset.login_problem({**os.environ, **dict(settings.env)}, settings) if preset else None
            if problem:
                yield False, f"{where}: {problem}"
        else:
            yield True, f"{where}: {path}"
    yield sandbox_line(config)
    yield from network_lines(config)
    version = git(".", "--version")
    if version.returncode == 0:
        yield True, f"git: {version.stdout.strip()}"
    else:
        yield False, f"git: not usable ({version.stderr.strip() or version.returncode}); worktrees need it"
    root = config.root / "worktrees"
    target = root if root.exists() else config.root
    if os.access(target, os.W_OK | os.X_OK):
        yield True, f"worktrees: {root} is writable"
    else:
        yield False, f"worktrees: {target} is not writable; runs cannot get a worktree"


def plugin_checks(config: Config, plugins: PluginHost) -> Iterator[tuple[bool, str]]:
    """Each plugin's own ``doctor_checks`` lines; one that raises is a failed line naming it (called
    directly, not through the hook relay, which would record the error in a store that may not exist)."""
    controller = Controller(config, hooks=plugins.hook)
    for impl in reversed(plugins.pm.hook.doctor_checks.get_hookimpls()):
        try:
            lines = impl.function(*[{"controller": controller}[name] for name in impl.argnames])
        except Exception as exc:  # noqa: BLE001 - a plugin's check failing is the check's answer
            yield False, f"{impl.plugin_name}: its check failed: {type(exc).__name__}: {exc}"
            continue
        for ok, line in lines or ():
            yield bool(ok), f"{impl.plugin_name}: {line}"


def run_checks(explicit: str | None) -> int:
    """Print one line per check; 0 when all pass, 1 otherwise."""
    failed = False
    for passed, line in checks(explicit):
        failed = failed or not passed
        print(f"{'ok  ' if passed else 'FAIL'} {line}", file=sys.stdout)
    return 1 if failed else 0

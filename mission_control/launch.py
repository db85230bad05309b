"""What a run is started with: its workspace, prompt, argv, environment and files, for workers and
reviewers alike, from a ``command:`` template or an agent preset. Ticket text reaches the process
only through the prompt file (on stdin for presets): never argv, never the environment, so never a
shell or an option parser by Mission Control's doing (presets take no positional argument at all)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from mission_control import agents, egress, mirrors, prompts, sandbox, worktrees
from mission_control import ticket_runtime as rt
from mission_control.config import TESTS_STAGE, AgentSettings, Config
from mission_control.store import queries
from mission_control.store.models import Ticket, WorkerRun
from mission_control.worktrees import Workspace


@dataclass(frozen=True)
class Launch:
    """Everything :func:`ticket_runtime.spawn` needs for one run."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stdout: Path
    stderr: Path
    stdin: Path | None
    timeout: float
    stall_timeout: float
    workspace: Workspace
    egress: egress.RunEgress | None = None  # the run's way out of its network namespace (sandboxed runs)


@dataclass(frozen=True)
class History:
    """What earlier runs of the ticket left for this one."""

    session: str | None = None  # the agent session to resume
    last_death: str | None = None  # why the previous run ended without a result
    budget_left: float | None = None  # US dollars this run may still spend (None: no budget)
    session_spent: float = 0.0  # what earlier runs of the resumed session were charged

    def spend_cap(self) -> float | None:
        """The cap to give a CLI that counts a resumed session's running total: what the session
        already spent plus what is left of the ticket's budget (None: no budget)."""
        return None if self.budget_left is None else self.session_spent + self.budget_left


def log_dir(config: Config, ticket: Ticket) -> Path:
    """The ticket's log directory (created owner-only)."""
    return rt.private_dir(config.root / "logs" / ticket.key)


def history(run: WorkerRun, budget: float | None = None) -> History:
    """The session to resume (the latest one an earlier run of this profile reported, unless a later
    run found it gone), why the previous run died, if it did, and what is left of the ticket's spend
    ``budget``, if it has one."""
    left = None if budget is None else max(0.0, budget - queries.ticket_spend(run.ticket_id))
    if run.attempt <= 1:
        return History(budget_left=left)
    earlier = queries.earlier_runs(run)
    session, last_death = None, None
    for index, (_, outcome, death_reason, agent_session) in enumerate(earlier):
        if index == 0 and outcome == "died" and death_reason != "never started":
            last_death = death_reason
        if agent_session is not None:
            session = agent_session or None  # "" marks a session the CLI no longer had
            break
    spent = queries.session_spend(run.ticket_id, session, run.attempt)[0] if session and left is not None else 0.0
    return History(session, last_death, left, spent)


# The controller's own settings and database credentials never reach a run.
CONTROLLER_ONLY = frozenset(
    {"MC_CONFIG", "MC_DATABASE_URL", "MC_HOST", "MC_KILLSWITCH", "MC_ORCH_SHADOW_REVIEW", "DATABASE_URL"}
)


def inherited_env(withheld: Iterable[str] = ()) -> dict[str, str]:
    """What every run inherits from the controller's environment: all of it but the controller's own
    settings, database credentials and ``withheld`` (plugins' secrets: ``secret_env``). A running
    controller builds this once: see LoopContext."""
    hidden = {*CONTROLLER_ONLY, *withheld}
    return {k: v for k, v in os.environ.items() if k not in hidden and not k.startswith("PG")}


def _env(
    settings: AgentSettings, preset: agents.Preset | None, values: dict[str, str], inherited: Mapping[str, str] | None
) -> dict[str, str]:
    extra = preset.env(settings) if preset else dict(settings.env)
    return {**(inherited_env() if inherited is None else inherited), **extra, **values}


@dataclass(frozen=True)
class AgentHome:
    """A sandboxed agent run's own HOME and what it is seeded with."""

    path: Path
    env: dict[str, str]  # HOME (and the CLI's own state variables) pointed there
    read_only: tuple[tuple[Path, Path], ...]  # (the user's file, where the run sees it): read-only


# The agent CLIs' state in the user's HOME: sessions and transcripts of the user's own work, logins.
# Absent inside every sandbox (a run gets its own, see agent_home).
USER_AGENT_DIRS = (".claude", ".codex", ".aider")
USER_AGENT_FILES = (".claude.json",)


def agent_home(
    config: Config, key: str, preset: agents.Preset | None, env: Mapping[str, str], review: bool
) -> AgentHome | None:
    """The run's own HOME (see :func:`worktrees.agent_home`) where runs are sandboxed: what the CLI
    needs to log in copied from the user's, the user's settings and git identity bound read-only; None
    for a ``command:`` profile or an unsandboxed run (which keep the user's HOME)."""
    if preset is None or not sandbox.enabled(config.sandbox):
        return None
    home = worktrees.agent_home(config.root, key, review)
    user = Path(env.get("HOME") or Path.home())
    chosen = {prefix: Path(env[name]) for name, prefix in preset.home_variables.items() if env.get(name)}

    def users(relative: str) -> Path:  # where the user keeps it (CODEX_HOME may be elsewhere)
        prefix, _, rest = relative.partition("/")
        return chosen[prefix] / rest if prefix in chosen and rest else user / relative

    for relative in preset.home_copies:
        source, target = users(relative), home / relative
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if source.is_file() and not source.is_symlink():
            shutil.copyfile(source, target, follow_symlinks=False)
            target.chmod(0o600)
    read_only = []
    for relative in preset.home_read_only:
        source, target = users(relative), home / relative
        if source.is_file():
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.touch(mode=0o600, exist_ok=True)  # where the user's file is bound
            read_only.append((source, target))
    variables = {name: str(home / prefix) for name, prefix in preset.home_variables.items()}
    return AgentHome(home, {"HOME": str(home), **variables}, tuple(read_only))


def _user_agent_state(env: Mapping[str, str]) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """(directories, files) of the user's own agent CLI state, to hide from a run."""
    user = Path(env.get("HOME") or Path.home())
    dirs = [user / name for name in USER_AGENT_DIRS]
    if env.get("CODEX_HOME"):
        dirs.append(Path(env["CODEX_HOME"]))
    return (
        tuple(d for d in dirs if d.is_dir() and not d.is_symlink()),
        tuple(f for f in (user / name for name in USER_AGENT_FILES) if f.is_file() and not f.is_symlink()),
    )


def _sandboxed(
    config: Config,
    key: str,
    launch: Launch,
    preset: agents.Preset | None,
    settings: AgentSettings,
    repo: str | None,
    readable: tuple[Path, ...],
    worker: bool,
    home: AgentHome | None = None,
    user_env: Mapping[str, str] | None = None,
) -> Launch:
    """``launch`` inside a sandbox, where the config's ``sandbox`` setting asks for one. A worker writes
    its clone (workspace and git directory alike); every run writes a private TMPDIR, its preset's state
    and its profile's ``writable_paths``, reads ``readable`` and your repository's objects; the MC root,
    the store and your repository's git directory (its refs, config, other tickets' branches) are hidden."""
    if not sandbox.enabled(config.sandbox):
        return launch
    user_env = launch.env if user_env is None else user_env
    objects, repo_hidden = _repo_mounts(repo)
    writable = (launch.workspace.path,) if worker else ()
    tmp = worktrees.run_tmp(config.root, key)
    state = [home.path] if home is not None else []
    if preset is not None and preset.needs_state:
        state.append(worktrees.agent_state(config.root, key))
    user_dirs, user_files = _user_agent_state(user_env)
    # Files in the worktree the CLI would load as its own settings: a run must not set up the next one.
    planted = [launch.cwd / name for name in preset.worktree_config] if preset is not None else []
    store = Path(config.database)
    outside = config.is_sqlite and not store.is_relative_to(config.root)
    hidden_files = tuple(Path(f"{store}{suffix}") for suffix in ("", "-wal", "-shm")) if outside else ()
    way_out = _egress(preset, settings, launch.env)
    network: tuple[Path, ...] = () if way_out is None else (egress.socket_root(), *LOCAL_SOCKETS)
    mounts = sandbox.Mounts(
        writable=(*writable, tmp, *state, *(Path(p) for p in settings.writable_paths)),
        readable=(*readable, *objects, *((way_out.directory,) if way_out else ())),
        hidden=(
            config.root,
            *repo_hidden,
            *user_dirs,
            *(path for path in network if path.is_dir() and not path.is_symlink()),
        ),
        hidden_files=(
            *hidden_files,
            *user_files,
            *(path for path in planted if path.is_file() and not path.is_symlink()),
        ),
        private=_private_tmp(preset, tmp),
        read_only_at=home.read_only if home is not None else (),
        offline=way_out is not None,
    )
    argv = way_out.wrap(launch.argv) if way_out else launch.argv
    env = {**launch.env, "TMPDIR": str(tmp), **(way_out.env() if way_out else {})}
    return replace(launch, argv=sandbox.wrap(argv, launch.cwd, mounts), env=env, egress=way_out)


# Where local services keep their Unix sockets (PostgreSQL's, a Docker daemon's, a session bus): hidden
# from a run whose network is an allowlist, since a Unix socket is reached through the filesystem.
LOCAL_SOCKETS = (Path("/run"), Path("/var/run"))


def _egress(preset: agents.Preset | None, settings: AgentSettings, env: Mapping[str, str]) -> egress.RunEgress | None:
    """The run's network allowlist, opened (None with ``network: open``). Raises OSError without socat."""
    if settings.network == "open":
        return None
    if egress.socat() is None:
        raise OSError("the sandbox's network allowlist needs socat, which is not installed (apt install socat)")
    targets = egress.allowlist(preset.api_hosts if preset else (), settings.allowed_hosts, env)
    return egress.shared().open(targets)


def _private_tmp(preset: agents.Preset | None, tmp: Path) -> tuple[tuple[Path, Path], ...]:
    """The directories the run's CLI makes under ``/tmp`` (see ``Preset.fixed_tmp``), each a private
    directory inside the run's own ``tmp``, mounted where the CLI looks for it."""
    private = []
    for pattern in preset.fixed_tmp if preset is not None else ():
        name = pattern.format(uid=os.getuid())
        target = Path("/tmp") / name
        if sandbox.mount_point(target):
            (tmp / name).mkdir(mode=0o700, exist_ok=True)
            private.append((tmp / name, target))
    return tuple(private)


def worker(
    config: Config,
    db_id: str,
    ticket: Ticket,
    run: WorkerRun,
    past: History,
    inherited: Mapping[str, str] | None = None,
) -> Launch:
    """The worker run of ``run``: prepares the ticket's workspace and writes its prompt file.
    ``inherited`` is the environment it starts from (default: :func:`inherited_env` now).

    Raises :class:`worktrees.WorkspaceError` when the workspace cannot be prepared.
    """
    profile = config.workers.get(run.profile, config.workers["default"])
    preset = agents.preset(profile)
    repo = mirrors.local(config.root, ticket.repo)
    confine = confiner(config, worktrees.ticket_path(config.root, ticket.key), repo)
    workspace = worktrees.prepare(
        config.root, ticket.key, repo, ticket.branch, scratch_git=preset is not None, confine=confine
    )
    logs = log_dir(config, ticket)
    prompt_file = logs / f"{run.attempt}.prompt.md"
    feedback = json.loads(run.feedback) if run.feedback else None
    prompt = prompts.build_prompt(
        ticket.key,
        ticket.title,
        ticket.body,
        feedback,
        workspace.path,
        workspace.branch,
        decides_done=preset is not None,
        last_death=past.last_death,
    )
    rt.write_private(prompt_file, prompt)
    values = {
        "ticket": ticket.key,
        "prompt_file": str(prompt_file),
        "repo": str(workspace.path),
        "session": run.session,
        "attempt": str(run.attempt),
    }
    env = {
        "MC_TICKET": ticket.key,
        "MC_PROMPT_FILE": str(prompt_file),
        "MC_REPO": str(workspace.path),
        "MC_SESSION": run.session,
        "MC_ATTEMPT": str(run.attempt),
        "MC_RUN_ID": f"{db_id}:{run.id}",
    }
    user_env = _env(profile, preset, env, inherited)
    home = agent_home(config, ticket.key, preset, user_env, review=False)
    run_env = {**user_env, **home.env} if home is not None else user_env
    on_stdin = preset is not None and preset.prompt_on_stdin
    if preset is not None:
        resume = past.session if past.session and preset.has_session(run_env, past.session) else None
        paths = agents.RunPaths(
            git_dirs=(workspace.path / ".git",) if workspace.branch and preset.names_git_dirs else (),
            state=worktrees.agent_state(config.root, ticket.key) if preset.needs_state else None,
            prompt=prompt_file,
        )
        argv = preset.worker_argv(profile, resume=resume, spend_cap=past.spend_cap(), paths=paths)
    else:
        argv = prompts.render(profile.command or (), values)
    plan = Launch(
        argv,
        run_env,
        workspace.path,
        Path(run.log_path),
        logs / f"{run.attempt}.err",
        prompt_file if on_stdin else None,
        profile.timeout,
        profile.stall_timeout,
        workspace,
    )
    readable = () if on_stdin else (prompt_file,)
    return _sandboxed(config, ticket.key, plan, preset, profile, repo, readable, True, home, user_env)


def _repo_mounts(repo: str | None) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """(readable, hidden) paths of your repository in a sandbox: its git directory is hidden (its refs,
    config and worktrees: nothing of other tickets' branches or of your checkout's state), but for its
    objects, which a ticket's clone reads in place (read-only)."""
    git_dir = worktrees.git_dir(repo) if repo else None
    if git_dir is None:
        return (), ()
    return (git_dir / "objects",), (git_dir,)


def confiner(config: Config, path: Path, repo: str | None) -> worktrees.Confine:
    """How the controller runs git on a run's clone at ``path``, whose configuration the run could have
    written (``git status``, the clone's side of a fetch): inside a sandbox without network that reads
    the clone and your repository's objects only; None where runs are not sandboxed (they then ran
    unconfined themselves)."""
    if not sandbox.enabled(config.sandbox):
        return None

    def confine(argv: list[str]) -> list[str]:  # your git dir looked up only when git actually runs
        objects, hidden = _repo_mounts(repo)
        mounts = sandbox.Mounts(readable=(path, *objects), hidden=(config.root, *hidden), offline=True)
        return sandbox.wrap(argv, path, mounts)

    return confine


def confined_git(config: Config, workspace: Workspace) -> worktrees.Confine:
    """:func:`confiner` for ``workspace``."""
    return confiner(config, workspace.path, workspace.repo)


def workspace_of(config: Config, ticket: Ticket, run: WorkerRun) -> Workspace:
    """Where ``run`` worked, as recorded when it started: its directory, the ticket's branch, the
    commit it started from, and the git repository holding the branch (the ticket's repo, or the
    scratch repository of a preset run; None for a plain scratch directory)."""
    workdir = Path(run.workdir) if run.workdir else worktrees.ticket_path(config.root, ticket.key)
    verified = worktrees.verified_path(config.root, ticket.key) if ticket.branch else None
    return Workspace(workdir, ticket.branch, run.base_sha, mirrors.local(config.root, ticket.repo), verified)


def review_prompt(ticket: Ticket, sha: str, base: str | None) -> str:
    """What a preset reviewer is asked: judge ``sha`` against the ticket, read-only, as structured output."""
    changes = f"`git diff {base} {sha}`" if base else f"`git show {sha}`"
    return (
        f"You are reviewing commit {sha} for ticket {ticket.key}, unattended and read-only.\n\n"
        f"- This directory is a clean checkout of that commit. See what changed with {changes}.\n"
        "- Judge whether the commit does what the ticket asks, completely and correctly.\n"
        "- Answer with the structured verdict: `pass` when it does; `fail` when it does not, with the reasons and "
        "each missing or wrong piece as a gap the author can act on; `uncertain` when you cannot tell, with why.\n\n"
        f"## Ticket {ticket.key}: {ticket.title}".rstrip()
        + "\n\n"
        + ticket.body.rstrip()
        + "\n"
    )


def _runnable(program: str, cwd: Path) -> None:
    """Raise FileNotFoundError unless ``program`` (a name on PATH, or a path from ``cwd``) can be run: a
    missing test runner is the stage's ``uncertain``, not a failing suite (in the sandbox, bubblewrap
    would report it as an ordinary exit 1)."""
    found = (cwd / program) if os.sep in program else shutil.which(program)
    if found is None or not os.access(found, os.X_OK) or Path(found).is_dir():
        raise FileNotFoundError(errno.ENOENT, "the test command is not installed", program)


def review(
    config: Config, db_id: str, ticket: Ticket, run: WorkerRun, inherited: Mapping[str, str] | None = None
) -> Launch | None:
    """The run of the review stage ``run`` is at, for its reported sha, in a clean checkout of it where
    it is a commit (otherwise in the ticket's workspace); None when no reviewer is configured
    (verdicts by hand). ``inherited`` as for :func:`worker`."""
    if not config.reviewer.stages:
        return None
    settings = config.reviewer.stage(run.review_stage)
    preset = agents.preset(settings)
    worked, sha = workspace_of(config, ticket, run), run.done_sha or ""
    repo = worked.repo
    cwd = worktrees.review_checkout(config.root, ticket.key, sha)
    if cwd is None:  # not a commit here (a command worker's claim without a repo): its own directory
        cwd = worked.path
        cwd.mkdir(mode=0o700, parents=True, exist_ok=True)
    logs = log_dir(config, ticket)
    worker_prompt = logs / f"{run.attempt}.prompt.md"
    values = {"ticket": ticket.key, "sha": sha, "repo": str(cwd), "prompt_file": str(worker_prompt)}
    env = {
        "MC_TICKET": ticket.key,
        "MC_SHA": sha,
        "MC_REPO": str(cwd),
        "MC_PROMPT_FILE": str(worker_prompt),
        "MC_REVIEW_ID": f"{db_id}:{run.id}",
    }
    stdin: Path | None = None
    readable: tuple[Path, ...] = (cwd, worker_prompt)
    if worked.verified is not None and cwd != worked.path:  # the checkout's objects and metadata
        readable = (*readable, worked.verified)
    if preset is not None:
        stdin = logs / f"{run.attempt}.review.md"
        rt.write_private(stdin, review_prompt(ticket, sha, run.base_sha))
        schema = logs / f"{run.attempt}.verdict-schema.json" if preset.schema_file else None
        if schema is not None:  # for a CLI that reads the verdict's schema from a file (Codex)
            rt.write_private(schema, json.dumps(agents.VERDICT_SCHEMA))
            readable = (*readable, schema)
        argv = preset.reviewer_argv(settings, agents.RunPaths(schema=schema))
    else:
        argv = prompts.render(settings.command or (), values)
        if settings.agent == TESTS_STAGE:
            _runnable(argv[0], cwd)
    user_env = _env(settings, preset, env, inherited)
    home = agent_home(config, ticket.key, preset, user_env, review=True)
    plan = Launch(
        argv,
        {**user_env, **home.env} if home is not None else user_env,
        cwd,
        logs / run.review_output().name,
        logs / run.review_output().with_suffix(".err").name,
        stdin,
        settings.timeout,
        settings.stall_timeout,
        Workspace(cwd, None, sha, repo, worked.verified),
    )
    return _sandboxed(config, ticket.key, plan, preset, settings, repo, readable, False, home, user_env)


def start(kind: str, run: WorkerRun, launch: Launch) -> rt.Process:
    """Start the run described by ``launch`` (raises OSError when it cannot start). Its way out, if it
    has one, closes when the process's output is released."""
    try:
        process = _spawn(kind, run, launch)
    except BaseException:
        if launch.egress is not None:
            launch.egress.close()
        raise
    if launch.egress is not None:
        process.on_release.append(launch.egress.close)
    return process


def _spawn(kind: str, run: WorkerRun, launch: Launch) -> rt.Process:
    return rt.spawn(
        kind,
        run.id,
        run.ticket_id,
        launch.argv,
        launch.cwd,
        launch.env,
        launch.stdout,
        launch.stderr,
        launch.timeout,
        stdin_path=launch.stdin,
        stall_timeout=launch.stall_timeout,
    )

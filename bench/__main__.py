"""`python -m bench [--quick]`: Mission Control against its physical floor.

The floor is the cost of the worker and reviewer processes themselves: the same commands spawned from a
bare Python loop with the same concurrency, no database and no policy. Every figure is printed next to
its target and written to bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.bare_loop import bare_loop
from bench.sync_pass import sync_pass

ROOT = Path(__file__).resolve().parent
WORKER_DONE = ["sh", "-c", "echo 'DONE: 0123abcd'"]
# The first attempt of every ticket dies; {attempt} is a separate argument, never part of the script.
WORKER_RETRY = ["sh", "-c", 'test "$1" -gt 1 && echo "DONE: 0123abcd"', "sh", "{attempt}"]
REVIEWER_PASS = ["sh", "-c", 'echo \'{"verdict": "pass", "reasons": [], "gaps": []}\'']
# Reaction latency: each attempt prints its own clock at start; the first one then dies.
WORKER_CLOCK = ["bash", "-c", 'echo "T $EPOCHREALTIME"; test "$1" -gt 1 && echo "DONE: 0123abcd"', "bash", "{attempt}"]
BUILTINS = ("review_loop", "dead_worker_retry", "operator_guard", "killswitch")


def mc_root(base: Path, name: str, worker: list[str], **overrides: Any) -> Path:
    root = base / name
    root.mkdir()
    config = {
        "database": "mc.db",
        "max_workers": 4,
        "poll_interval": 1.0,
        "workers": {"default": {"command": worker, "timeout": 600}},
        "reviewer": {"enabled": True, "command": REVIEWER_PASS, "timeout": 600},
        "operator": {"interval": 3600},
        # The floor spawns bare processes: measure the controller against it, not bubblewrap's start-up
        # (the sandbox's own cost per run is the "sandbox start" figure).
        "sandbox": "off",
        # The four MC-4302/MC-4304 plugins; the retry path's storm of deaths would trip the circuit breaker.
        "plugins": {
            **{name: {"enabled": True} for name in BUILTINS},
            "circuit_breaker": {"enabled": False},
            "done_verifier": {"enabled": False},
        },
    }
    config.update(overrides)
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    mc(root, "init")
    return root


# Where the mc processes the bench starts keep their compiled bytecode (see compiled_bytecode).
PYCACHE: list[Path] = []


def env() -> dict[str, str]:
    """The environment of every mc process the bench starts: this one's, without MC_ settings, and with
    the bytecode cache of :func:`compiled_bytecode` once it is set up."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("MC_")}
    if PYCACHE:
        out.pop("PYTHONDONTWRITEBYTECODE", None)
        out["PYTHONPYCACHEPREFIX"] = str(PYCACHE[0])
    return out


def compiled_bytecode(base: Path) -> None:
    """Measure mc as an installed mc runs: with its modules' bytecode compiled (pip compiles it at
    install). Where PYTHONDONTWRITEBYTECODE is set, as on CI machines, every mc process would compile its
    source again (about 0.2 s of start-up each). The bytecode goes to a cache of the bench's own, filled
    by one small run that is not measured; nothing is written beside the sources."""
    PYCACHE[:] = [base / "pycache"]
    root = mc_root(base, "warm-up", WORKER_DONE)
    add_tickets(root, 1)
    run_until_idle(root)


def mc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mission_control.cli", "--config", str(root / "config.yaml"), *args],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    )


def add_tickets(root: Path, count: int) -> None:
    path = root / "tickets.jsonl"
    path.write_text("".join(json.dumps({"title": f"bench {i}"}) + "\n" for i in range(count)), encoding="utf-8")
    mc(root, "ticket", "import", str(path))


def run_until_idle(root: Path) -> tuple[float, float, dict[str, Any]]:
    """Wall time of `mc run --until-idle`, the controller's peak RSS in MB (VmHWM, sampled), and what it
    did (bench/counted.py: SQL statements, committed transactions, its own CPU seconds)."""
    stats = root / "counted.json"
    start = time.perf_counter()
    stderr = (root / "run.stderr").open("w+b")  # its narration, as a terminal or journal would take it
    argv = ["--config", str(root / "config.yaml"), "run", "--until-idle"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.counted", str(stats), *argv],
        env={**env(), "PYTHONPATH": str(ROOT.parent)},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    peak = 0.0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    with stderr:
        if proc.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"bench: mc run failed: {stderr.read().decode()[-2000:]}")
    return elapsed, peak, json.loads(stats.read_text(encoding="utf-8"))


def floor(commands: list[list[str]], concurrency: int, workdir: Path) -> float:
    """Seconds to run ``commands`` from a bare loop, ``concurrency`` at a time, output to files."""
    logs = workdir / "floor-logs"
    logs.mkdir(exist_ok=True)
    start = time.perf_counter()
    running: dict[int, subprocess.Popen[bytes]] = {}
    pending = list(reversed(commands))
    index = 0
    while pending or running:
        while pending and len(running) < concurrency:
            index += 1
            with open(logs / f"{index}.log", "wb") as out:
                proc = subprocess.Popen(
                    pending.pop(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            running[proc.pid] = proc
        pid, _ = os.wait()
        running.pop(pid, None)
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- the five figures ----------------------------------------------------------------------------


def throughput(tickets: int, elapsed: float, stats: dict[str, Any], floors: list[float]) -> dict[str, Any]:
    """MC's tickets/s against the floor (the mean of its runs' times) and the controller's own work per
    ticket: CPU, SQL statements, committed transactions."""
    mc_rate, floor_rate = tickets / elapsed, tickets * len(floors) / sum(floors)
    return {
        "tickets": tickets,
        "mc_tickets_per_s": mc_rate,
        "floor_tickets_per_s": floor_rate,
        "floor_runs_tickets_per_s": [tickets / seconds for seconds in floors],
        "ratio": mc_rate / floor_rate,
        "target": ">= 0.85",
        "cpu_ms_per_ticket": stats["cpu_s"] * 1000 / tickets,
        "statements_per_ticket": stats["statements_total"] / tickets,
        "transactions_per_ticket": stats["transactions"] / tickets,
        "statements": stats["statements"],
    }


def against_floor(root: Path, tickets: int, per_ticket: list[list[str]], base: Path) -> dict[str, Any]:
    """`mc run --until-idle` over ``root``'s tickets between two runs of the floor (the same commands for
    each ticket, 4 at a time): this machine's speed moves within minutes, and the ratio is only as good as
    a floor measured in the same minutes."""
    before = floor(per_ticket * tickets, 4, base)
    elapsed, _, stats = run_until_idle(root)
    after = floor(per_ticket * tickets, 4, base)
    return throughput(tickets, elapsed, stats, [before, after])


def lifecycle(base: Path, tickets: int, database: str = "mc.db") -> dict[str, Any]:
    """Straight through: every worker prints DONE at once, every review passes at once. On SQLite, also
    the bare loop of bench/bare_loop.py over the same tickets: the floor plus a store, no policy."""
    root = mc_root(base, f"lifecycle-{uuid.uuid4().hex[:6]}", WORKER_DONE, database=database)
    add_tickets(root, tickets)
    figure = against_floor(root, tickets, [WORKER_DONE, REVIEWER_PASS], base)
    if not database.startswith("postgresql://"):
        bare_rate = tickets / bare_loop(base, tickets, WORKER_DONE, REVIEWER_PASS)
        figure["bare_loop_tickets_per_s"] = bare_rate
        figure["bare_loop_ratio"] = bare_rate / figure["floor_tickets_per_s"]
    return figure


def retry_path(base: Path, tickets: int, database: str = "mc.db") -> dict[str, Any]:
    """Every ticket's first run dies; the retry is done at once and passes review."""
    root = mc_root(base, f"retry-{uuid.uuid4().hex[:6]}", WORKER_RETRY, database=database)
    add_tickets(root, tickets)
    first, second = ([*WORKER_RETRY[:-1], attempt] for attempt in ("1", "2"))
    return against_floor(root, tickets, [first, second, REVIEWER_PASS], base)


def reaction(base: Path, deaths: int, quick: bool = False) -> dict[str, Any]:
    # One slot: the latency of a reaction, not the queueing of a saturated controller (see lifecycle).
    root = mc_root(base, "reaction", WORKER_CLOCK, reviewer={"enabled": False}, max_workers=1)
    add_tickets(root, deaths)
    run_until_idle(root)
    db = sqlite3.connect(root / "mc.db")
    latencies = []
    for (key,) in db.execute("SELECT t.key FROM worker_run r JOIN ticket t ON t.id = r.ticket_id WHERE r.attempt = 1"):
        died_at = float((root / "logs" / key / "1.log").read_text().split()[1])
        started_at = float((root / "logs" / key / "2.log").read_text().split()[1])
        latencies.append((started_at - died_at) * 1000)
    db.close()
    switch = killswitch_reaction(base, 100 if quick else 400)
    return {
        "deaths": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "target_p99_ms": 20,
        **switch,
    }


def killswitch_reaction(base: Path, tickets: int) -> dict[str, Any]:
    """Touch .mc_killswitch while tickets flow; how long until the last automatic action."""
    root = mc_root(base, "killswitch", ["sh", "-c", "sleep 0.05; echo 'DONE: 0123abcd'"], poll_interval=0.5)
    add_tickets(root, tickets)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mission_control.cli", "--config", str(root / "config.yaml"), "run"],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    touched = time.time()
    (root / ".mc_killswitch").touch()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    db = sqlite3.connect(root / "mc.db")
    last = db.execute("SELECT max(created_at) FROM event WHERE kind = 'action'").fetchone()[0]
    db.close()
    after_ms = max(0.0, (last - touched) * 1000)
    return {
        "killswitch_last_action_after_ms": after_ms,
        "tick_ms": 500.0,
        "killswitch_within_one_tick": after_ms <= 500.0,
    }


def build_store(base: Path, name: str, tickets: int) -> Path:
    """A store with ``tickets`` tickets: 95% done (already swept), 5% parked in needs_input."""
    root = mc_root(base, name, WORKER_DONE)
    db = sqlite3.connect(root / "mc.db")
    now = time.time()
    rows = [
        (
            f"MC-{i}",
            f"ticket {i}",
            "",
            "default",
            "done" if i % 20 else "needs_input",
            "0123abcd",
            1,
            1 if i % 20 else 0,
            now,
            now,
        )
        for i in range(1, tickets + 1)
    ]
    db.executemany(
        "INSERT INTO ticket (key, title, body, worker, status, done_sha, attempts, operator_checked, "
        "created_at, updated_at, review_cycles, death_count, claim_token) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 1)",
        rows,
    )
    db.commit()
    db.close()
    return root


def scale(base: Path, sizes: tuple[int, int], run_sizes: tuple[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"target": "tick <= 5 ms, sweep <= 1 s, RSS <= 150 MB, flat as tickets grow 10x"}
    for size in sizes:
        root = build_store(base, f"scale{size}", size)
        code = (
            "import time, json\n"
            "from mission_control.config import load_config\n"
            "from mission_control.store.connection import open_database\n"
            f"config = load_config({str(root / 'config.yaml')!r}, env={{}})\n"
            "open_database(config.database)\n"
            "from mission_control.mc_pickup import Pickup\n"
            "p = Pickup(config); p.lease.register()\n"
            "ticks = []\n"
            "for _ in range(200):\n"
            "    t = time.perf_counter(); p.housekeeping(); p.step(force=True); ticks.append(time.perf_counter() - t)\n"
            "sweeps = []\n"
            "for _ in range(5):\n"
            "    t = time.perf_counter(); p.operator.sweep(); sweeps.append(time.perf_counter() - t)\n"
            "ticks.sort(); sweeps.sort()\n"
            "print(json.dumps({'tick_ms': ticks[len(ticks) // 2] * 1000, 'sweep_s': sweeps[len(sweeps) // 2]}))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True)
        out[f"{size}"] = json.loads(result.stdout)
    for size in run_sizes:
        root = mc_root(base, f"rss{size}", WORKER_DONE)
        add_tickets(root, size)
        _, peak, _ = run_until_idle(root)
        out[f"run_{size}_peak_rss_mb"] = peak
    return out


def hook_overhead() -> dict[str, Any]:
    import pluggy

    from mc_hooks import hookimpl, hookspecs
    from mc_hooks.manager import load_plugins
    from mission_control.config import DEFAULT_CONFIG_TEXT, load_config
    from mission_control.controller import Controller

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        # The hook machinery against pluggy's, with the default plugins' implementations; the circuit
        # breaker's own work (a count in the store before each dispatch) is policy, not machinery: off here.
        text = DEFAULT_CONFIG_TEXT.replace("circuit_breaker: {enabled: true,", "circuit_breaker: {enabled: false,")
        assert text != DEFAULT_CONFIG_TEXT
        path.write_text(text, encoding="utf-8")
        config = load_config(path, env={})
        host = load_plugins(config)
        controller = Controller(config, hooks=host.hook)
        impls = len(host.call_order("before_auto_action"))
        call = host.hook.before_auto_action
        n = 200_000
        mc_ns = (
            min(timeit.repeat(lambda: call(action="dispatch", ticket=None, controller=controller), number=n, repeat=5))
            / n
            * 1e9
        )

        pm = pluggy.PluginManager("mc_hooks")
        pm.add_hookspecs(hookspecs)
        for i in range(impls):

            class Noop:
                @hookimpl
                def before_auto_action(self, action, ticket, controller):
                    return None

            pm.register(Noop(), name=f"noop{i}")
        plain = pm.hook.before_auto_action
        pluggy_ns = (
            min(timeit.repeat(lambda: plain(action="dispatch", ticket=None, controller=controller), number=n, repeat=5))
            / n
            * 1e9
        )

        def direct(action: str, ticket: object, controller: object) -> None:
            return None

        direct_ns = (
            min(
                timeit.repeat(lambda: direct(action="dispatch", ticket=None, controller=controller), number=n, repeat=5)
            )
            / n
            * 1e9
        )
    return {
        "implementations": impls,
        "mc_ns": mc_ns,
        "pluggy_noop_ns": pluggy_ns,
        "direct_ns": direct_ns,
        "target_ns": 3000,
    }


@contextlib.contextmanager
def postgres_database(admin: Any, url: str, name: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one figure (dropped afterwards); yields its URL."""
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres(base: Path, tickets: int) -> dict[str, Any]:
    """On PostgreSQL: both workloads with one controller (the same figures as on SQLite), and the
    lifecycle with 1, 2 and 3 controllers sharing one database."""
    url = os.environ.get("MC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg2

        admin = psycopg2.connect(url, connect_timeout=3)
    except Exception as exc:
        return {"skipped": f"no PostgreSQL at {url}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"}
    admin.autocommit = True
    out: dict[str, Any] = {"tickets": tickets}
    try:
        with postgres_database(admin, url, f"mc_bench_{os.getpid()}_life") as database:
            out["lifecycle"] = lifecycle(base, tickets, database)
        with postgres_database(admin, url, f"mc_bench_{os.getpid()}_retry") as database:
            out["retry"] = retry_path(base, tickets, database)
        for count in (1, 2, 3):
            with postgres_database(admin, url, f"mc_bench_{os.getpid()}_{count}") as database:
                root = mc_root(base, f"pg{count}", WORKER_DONE, database=database)
                add_tickets(root, tickets)
                start = time.perf_counter()
                procs = [
                    subprocess.Popen(
                        [sys.executable, "-m", "mission_control.cli", "--config", str(root / "config.yaml")]
                        + ["run", "--until-idle"],
                        env=env(),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for _ in range(count)
                ]
                if any(p.wait() != 0 for p in procs):
                    raise SystemExit("bench: a controller failed on PostgreSQL")
                out[f"{count}_controllers_tickets_per_s"] = tickets / (time.perf_counter() - start)
    finally:
        admin.close()
    return out


def sandbox_start(count: int) -> dict[str, Any]:
    """What the sandbox adds to starting a run: spawn-to-exit of `true`, bare, inside bubblewrap with the
    mounts a worker gets, and also with its network allowlist (the run's egress listeners opened and
    closed, socat bridges started and waited for inside); and what reading a run's result costs (the
    confined fetch of its branch into the verified repository). Medians of ``count`` each."""
    from mission_control import egress, sandbox, worktrees

    why_not = sandbox.works()
    if why_not is not None:
        return {"skipped": why_not}
    with tempfile.TemporaryDirectory() as tmp:
        root, work = Path(tmp) / "mc", Path(tmp) / "mc" / "worktrees" / "MC-1"
        work.mkdir(parents=True)
        mounts = sandbox.Mounts(writable=(work,), hidden=(root,))
        wrapped = sandbox.wrap(["true"], work, mounts)
        targets = (egress.Target("127.0.0.1", 9), egress.Target("api.anthropic.com", 443))

        def with_network() -> None:
            way_out = egress.shared().open(targets)
            try:
                net = sandbox.Mounts(
                    writable=(work,),
                    hidden=(root, egress.socket_root()),
                    readable=(way_out.directory,),
                    offline=True,
                )
                subprocess.run(sandbox.wrap(way_out.wrap(["true"]), work, net), check=True, cwd=work)
            finally:
                way_out.close()

        out: dict[str, Any] = {}
        runs: dict[str, Any] = {
            "bare_ms": lambda: subprocess.run(["true"], check=True, cwd=work),
            "sandboxed_ms": lambda: subprocess.run(wrapped, check=True, cwd=work),
            "sandboxed_network_ms": with_network,
        }
        scratch = worktrees.prepare(Path(tmp) / "mc2", "MC-1", None, None, scratch_git=True)
        subprocess.run(["git", "-C", str(scratch.path), "commit", "-q", "--allow-empty", "-m", "w"], check=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                            "GIT_COMMITTER_EMAIL": "b@b"})  # fmt: skip
        confine = lambda argv: sandbox.wrap(argv, scratch.path, sandbox.Mounts(readable=(scratch.path,), offline=True))  # noqa: E731
        runs["collect_ms"] = lambda: worktrees.collect(scratch, confine)
        for label, run in runs.items():
            times = []
            for _ in range(count):
                start = time.perf_counter()
                run()
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            out[label] = times[len(times) // 2]
    return out


def board(base: Path, tickets: int, pages: int = 50) -> dict[str, Any]:
    """`mc board` over ``tickets`` tickets: the board page and /api/tickets (median of 5 after a warm-up),
    then its memory with ``pages`` live pages listening (server-sent event streams held open)."""
    import http.client
    import socket

    try:
        import starlette  # noqa: F401
    except ImportError:
        return {"skipped": "the web extra is not installed"}
    root = build_store(base, "board", tickets)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mission_control.cli", "--config", str(root / "config.yaml"), "board"]
    server = subprocess.Popen([*command, "--port", str(port)], env=env(), stderr=subprocess.DEVNULL)
    streams: list[socket.socket] = []
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)

        def fetch(path: str) -> float:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            start = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            conn.close()
            assert response.status == 200, (path, response.status)
            return (time.perf_counter() - start) * 1000

        out: dict[str, Any] = {
            "tickets": tickets,
            "target": "board page <= 500 ms, /api/tickets <= 1000 ms, RSS <= 150 MB",
        }
        store = sqlite3.connect(root / "mc.db")
        for name, path in (("board_page_ms", "/"), ("api_tickets_ms", "/api/tickets")):
            fetch(path)
            samples = []
            for sample in range(5):
                # A change, and time for the board to see it: every sample reads the store and renders.
                store.execute("UPDATE ticket SET updated_at = ? WHERE id = 1", (time.time() + sample,))
                store.commit()
                time.sleep(1.5)
                samples.append(fetch(path))
            out[name] = statistics.median(samples)
        store.close()
        out["cached_board_page_ms"] = statistics.median(fetch("/") for _ in range(5))  # nothing changed
        for _ in range(pages):
            stream = socket.create_connection(("127.0.0.1", port), timeout=10)
            stream.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            assert b"200" in stream.recv(4096).split(b"\r\n", 1)[0]
            streams.append(stream)
        time.sleep(3)
        status = Path(f"/proc/{server.pid}/status").read_text()
        fields = {k: v.split()[0] for k, _, v in (line.partition(":") for line in status.splitlines()) if v.split()}
        out["live_pages"] = pages
        out["rss_mb_with_live_pages"] = int(fields["VmRSS"]) / 1024
        out["peak_rss_mb"] = int(fields["VmHWM"]) / 1024
        return out
    finally:
        for stream in streams:
            stream.close()
        server.terminate()
        server.wait(timeout=30)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def workload_row(name: str, figure: dict[str, Any], target: float | None = 0.85) -> tuple[str, str, str, str, bool]:
    """A throughput figure as a table row: rates, ratio, and the controller's own work per ticket."""
    measured = (
        f"{figure['mc_tickets_per_s']:.1f} t/s vs floor {figure['floor_tickets_per_s']:.1f} t/s "
        f"(runs before and after: {' and '.join(f'{rate:.0f}' for rate in figure['floor_runs_tickets_per_s'])}) "
        f"({figure['tickets']} tickets); per ticket: controller CPU {figure['cpu_ms_per_ticket']:.2f} ms, "
        f"{figure['statements_per_ticket']:.1f} statements, {figure['transactions_per_ticket']:.1f} transactions"
    )
    if target is None:
        return name, measured, f"ratio {figure['ratio']:.2f}", "(no target)", True
    return name, measured, f"ratio {figure['ratio']:.2f}", f">= {target}", figure["ratio"] >= target


def table(results: dict[str, Any]) -> str:
    life, retry, react, sc, hooks = (results[k] for k in ("lifecycle", "retry", "reaction", "scale", "hooks"))
    pg = results["postgres"]
    sizes = [k for k in sc if k.isdigit()]
    runs = [k for k in sc if k.startswith("run_")]
    rows = [
        workload_row("lifecycle throughput, SQLite", life),
        (
            "bare loop with a store (reference)",
            f"{life['bare_loop_tickets_per_s']:.1f} t/s: the lifecycle's processes and three SQLite transactions "
            "per batch, no policy (bench/bare_loop.py)",
            f"ratio {life['bare_loop_ratio']:.2f}",
            "(no target)",
            True,
        ),
        workload_row("retry path, SQLite", retry),
        (
            "death -> retry start",
            f"p50 {react['p50_ms']:.1f} ms over {react['deaths']} deaths",
            f"p99 {react['p99_ms']:.1f} ms",
            "p99 <= 20 ms",
            react["p99_ms"] <= 20,
        ),
        (
            "kill-switch -> last action",
            f"{react['killswitch_last_action_after_ms']:.1f} ms after the touch",
            f"tick {react['tick_ms']:.0f} ms",
            "within one tick",
            react["killswitch_within_one_tick"],
        ),
        (
            "pickup tick",
            " | ".join(f"{s} tickets: {sc[s]['tick_ms']:.2f} ms" for s in sizes),
            "",
            "<= 5 ms",
            all(sc[s]["tick_ms"] <= 5 for s in sizes),
        ),
        (
            "operator sweep",
            " | ".join(f"{s} tickets: {sc[s]['sweep_s'] * 1000:.0f} ms" for s in sizes),
            "",
            "<= 1 s",
            all(sc[s]["sweep_s"] <= 1 for s in sizes),
        ),
        (
            "controller peak RSS",
            " | ".join(f"{k[4:-12]}-ticket run: {sc[k]:.0f} MB" for k in runs),
            "",
            "<= 150 MB",
            all(sc[k] <= 150 for k in runs),
        ),
        (
            "before_auto_action",
            f"{hooks['mc_ns']:.0f} ns ({hooks['implementations']} impl) | pluggy no-op "
            f"{hooks['pluggy_noop_ns']:.0f} ns | direct {hooks['direct_ns']:.0f} ns",
            "",
            "<= 3000 ns",
            hooks["mc_ns"] <= 3000,
        ),
        (
            "sync pass (trackers)",
            f"{results['sync']['tickets']} tracker tickets: idle {results['sync']['idle_pass_ms']:.2f} ms, "
            f"scan {results['sync']['scan_ms']:.1f} ms; {results['sync']['items_per_s']:.0f} new items/s",
            f"ratio {results['sync']['ratio']:.2f} of direct inserts",
            "idle <= 1 ms, scan <= 50 ms",
            results["sync"]["idle_pass_ms"] <= 1 and results["sync"]["scan_ms"] <= 50,
        ),
    ]
    web = results.get("board", {"skipped": "not measured"})
    if "skipped" in web:
        rows.append(("mc board", web["skipped"], "", "(no target)", True))
    else:
        rows.append(
            (
                f"mc board at {web['tickets']} tickets",
                f"board page {web['board_page_ms']:.0f} ms ({web['cached_board_page_ms']:.0f} ms unchanged) | "
                f"/api/tickets {web['api_tickets_ms']:.0f} ms | "
                f"RSS {web['rss_mb_with_live_pages']:.0f} MB with {web['live_pages']} live pages",
                "",
                "page <= 500 ms, API <= 1000 ms, RSS <= 150 MB",
                web["board_page_ms"] <= 500 and web["api_tickets_ms"] <= 1000 and web["rss_mb_with_live_pages"] <= 150,
            )
        )
    box = results.get("sandbox", {"skipped": "not measured"})
    if "skipped" in box:
        rows.append(("sandbox start per run", box["skipped"], "", "(no target)", True))
    else:
        added = box["sandboxed_ms"] - box["bare_ms"]
        rows.append(
            (
                "sandbox start per run",
                f"{box['sandboxed_ms']:.1f} ms in bubblewrap vs {box['bare_ms']:.1f} ms bare",
                f"+{added:.1f} ms",
                "(no target)",
                True,
            )
        )
        if "sandboxed_network_ms" in box:
            rows.append(
                (
                    "... with its network allowlist",
                    f"{box['sandboxed_network_ms']:.1f} ms (egress opened, socat bridges up, closed)",
                    f"+{box['sandboxed_network_ms'] - box['bare_ms']:.1f} ms",
                    "(no target)",
                    True,
                )
            )
            rows.append(
                (
                    "reading a run's commit",
                    f"{box['collect_ms']:.1f} ms (confined fetch into MC's repo)",
                    "",
                    "(no target)",
                    True,
                )
            )
    if "skipped" in pg:
        rows.append(("PostgreSQL", pg["skipped"], "", "(no target)", True))
    else:
        rows.append(workload_row("lifecycle throughput, PostgreSQL", pg["lifecycle"], target=None))
        rows.append(workload_row("retry path, PostgreSQL", pg["retry"], target=None))
        rates = " | ".join(f"{n}: {pg[f'{n}_controllers_tickets_per_s']:.1f} t/s" for n in (1, 2, 3))
        rows.append(("PostgreSQL, 1/2/3 controllers", f"{rates} ({pg['tickets']} tickets)", "", "(no target)", True))
    lines = ["| figure | measured | vs floor | target | met |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} | {'yes' if ok else 'NO'} |" for a, b, c, d, ok in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the bench works, not the targets")
    parser.add_argument(
        "--only",
        choices=("lifecycle", "retry", "reaction", "scale", "hooks", "sandbox", "postgres", "board", "sync"),
        help="run one figure and print its raw result (for profiling work)",
    )
    parser.add_argument("--tickets", type=int, help="with --only: how many tickets")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.only:
        base = Path(tempfile.mkdtemp(prefix="mc-bench-"))
        try:
            compiled_bytecode(base)
            n = args.tickets or 500
            figure = {
                "postgres": lambda: postgres(base, n),
                "lifecycle": lambda: lifecycle(base, n),
                "retry": lambda: retry_path(base, n),
                "reaction": lambda: reaction(base, n),
                "hooks": hook_overhead,
                "sandbox": lambda: sandbox_start(n),
                "scale": lambda: scale(base, (n, 10 * n), (n, 10 * n)),
                "board": lambda: board(base, n),
                "sync": lambda: sync_pass(n, min(n, 1000)),
            }[args.only]
            print(json.dumps(figure(), indent=2))
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return 0
    base = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    try:
        compiled_bytecode(base)
        results = {
            "machine": machine(),
            "quick": quick,
            "lifecycle": lifecycle(base, 50 if quick else 2000),
            "retry": retry_path(base, 50 if quick else 2000),
            "reaction": reaction(base, 30 if quick else 500, quick),
            "scale": scale(
                base, (1_000, 10_000) if quick else (10_000, 100_000), (100, 300) if quick else (1_000, 10_000)
            ),
            "hooks": hook_overhead(),
            "sandbox": sandbox_start(20 if quick else 200),
            "postgres": postgres(base, 30 if quick else 1000),
            "board": board(base, 1_000 if quick else 10_000, 10 if quick else 50),
            "sync": sync_pass(1_000 if quick else 10_000, 100 if quick else 1_000),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    (ROOT / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    m = results["machine"]
    print(
        f"Mission Control bench{' (quick)' if quick else ''}: Python {m['python']}, SQLite {m['sqlite']}, "
        f"{m['cpus']} CPUs, {m['platform']}, {m['when']}"
    )
    print(table(results))
    print(f"written to {ROOT / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

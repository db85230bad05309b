"""Reliability under injected faults (issue 5): nothing lost, nothing run twice, nothing forever.

The figures these tests print (`RELIABILITY ...` lines) go into docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scripts import expected, random_script

from conftest import McRoot, each_store, worker_runs

pytestmark = pytest.mark.slow


def add_scripted(mc: McRoot, scripts: list[list[str]]) -> list[str]:
    lines = [json.dumps({"title": f"scripted {i}", "body": "script: " + ", ".join(s)}) for i, s in enumerate(scripts)]
    path = mc.path / "tickets.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mc.mc("ticket", "import", str(path))
    return [f"MC-{i + 1}" for i in range(len(scripts))]


def check_all(mc: McRoot, keys: list[str], scripts: list[list[str]], seed: object) -> None:
    for key, script, ticket in zip(keys, scripts, mc.show_all(keys), strict=True):
        want = expected(script)
        got = (
            ticket["status"],
            mc.agent_runs(key),
            ticket["review_cycles"],
            ticket["death_count"],
            len(ticket["comments"]),
            len(ticket["escalations"]),
        )
        assert got == (want.status, want.runs, want.review_cycles, want.death_count, want.comments, want.escalations), (
            f"seed={seed} {key} script={script}: got {got}, expected {want}"
        )
        applied = [
            r for r in worker_runs(ticket) if r["applied_at"] is not None and r["death_reason"] != "never started"
        ]
        assert len(applied) == want.runs, f"seed={seed} {key}: {len(applied)} applied reports for {want.runs} runs"


def sigkill_controllers(
    mc: McRoot, env: dict[str, str], rng: random.Random, kills: int, window: tuple[float, float]
) -> int:
    """Start `mc run` and SIGKILL it at a random moment in ``window`` seconds, ``kills`` times."""
    for _ in range(kills):
        controller = mc.popen("run", env=env)
        time.sleep(rng.uniform(*window))
        controller.send_signal(signal.SIGKILL)
        controller.wait()
    return kills


def report(fault: str, how: str, times: int, held: str) -> None:
    print(f"\nRELIABILITY | {fault} | {how} | {times} | {held}")


def test_crash_campaign_sigkill_controller_at_random_moments(tmp_path: Path) -> None:
    seed = int(os.environ.get("MC_SEED", random.SystemRandom().randrange(1 << 30)))
    rng = random.Random(seed)
    mc = McRoot(tmp_path / "root", max_workers=4, poll_interval=0.05)
    scripts = [random_script(rng) for _ in range(50)]
    keys = add_scripted(mc, scripts)
    env = mc.env(MC_DEMO_DELAY="0.15")
    kills = sigkill_controllers(mc, env, rng, 30, (0.05, 0.6))
    mc.mc("run", "--until-idle", env=env, timeout=300)
    check_all(mc, keys, scripts, seed)
    report(
        "controller SIGKILLed",
        f"random moment 0.05-0.6 s after start, seed {seed}",
        kills,
        f"{len(keys)} tickets: runs, review_cycles, death_count, comments, escalations exact",
    )


CRASH_POINTS = (
    "review:after-spawn",
    "dispatch:after-claim",
    "dispatch:after-spawn",
    "report:before-commit",
    "report:after-commit",
    "apply:before-effects",
    "apply:before-commit",
    "apply:after-commit",
)


@each_store
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_report_is_applied_exactly_once_whenever_the_controller_dies(tmp_path: Path, point: str, store: str) -> None:
    mc = McRoot(tmp_path / "root", max_workers=1, database=store)
    scripts = [["fail", "die", "pass"], ["die", "die"], ["uncertain"]]
    keys = add_scripted(mc, scripts)
    crashes = 0
    for _ in range(2):  # crash at the point twice (three review starts are bounded: see below)
        result = mc.mc("run", "--until-idle", check=False, env=mc.env(MC_CRASH_AT=point))
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        crashes += 1
    mc.mc("run", "--until-idle")
    assert crashes >= 1, f"{point} was never reached"
    check_all(mc, keys, scripts, point)
    report(f"controller dies at {point}", "MC_CRASH_AT crash point (self SIGKILL)", crashes, "exact counts")


def test_attempts_are_counted_at_start_so_a_crash_loop_ends(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root", max_workers=1)
    key = mc.add("crashes its controller every time")
    for _ in range(60):
        if mc.mc("run", "--until-idle", check=False, env=mc.env(MC_CRASH_AT="dispatch:after-spawn")).returncode == 0:
            break
    ticket = mc.show(key)
    assert ticket["status"] in ("done", "needs_input")
    assert ticket["attempts"] <= 50


def test_a_review_whose_controller_dies_every_time_is_adopted_not_restarted(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root", max_workers=1)
    key = mc.add("its controller dies whenever a review starts")
    for _ in range(20):
        if mc.mc("run", "--until-idle", check=False, env=mc.env(MC_CRASH_AT="review:after-spawn")).returncode == 0:
            break
    ticket = mc.show(key)
    assert (ticket["status"], [r["verdict"] for r in ticket["reviews"]]) == ("done", ["pass"])
    assert len([e for e in ticket["events"] if e["action"] == "review"]) == 1  # started once


def test_a_reviewer_that_takes_its_controller_down_ends_uncertain(tmp_path: Path) -> None:
    # Without the sandbox, where a run can reach its controller (in one it cannot: test_hostile_workers).
    mc = McRoot(tmp_path / "root", max_workers=1, sandbox="off")
    mc.config["reviewer"]["command"] = ["sh", "-c", "kill -9 $PPID"]  # no verdict, and no controller left
    mc.write_config()
    key = mc.add("reviewed by a hostile reviewer")
    for _ in range(20):
        if mc.mc("run", "--until-idle", check=False).returncode == 0:
            break
    ticket = mc.show(key)
    assert ticket["status"] == "needs_input"
    assert [r["verdict"] for r in ticket["reviews"]] == ["uncertain"]
    assert "started 3 times and never finished" in ticket["reviews"][0]["reasons"][0]


def test_three_controllers_on_one_sqlite_database(tmp_path: Path) -> None:
    rng = random.Random(7)
    mc = McRoot(tmp_path / "root", max_workers=3, poll_interval=0.05)
    scripts = [random_script(rng) for _ in range(200)]
    keys = add_scripted(mc, scripts)
    controllers = [mc.popen("run", "--until-idle") for _ in range(3)]
    outputs = [c.communicate(timeout=600) for c in controllers]
    for controller, (_, err) in zip(controllers, outputs, strict=True):
        assert controller.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    check_all(mc, keys, scripts, "three-controllers")
    report(
        "3 controllers, one SQLite file",
        "concurrent `mc run --until-idle`",
        len(keys),
        "every ticket started exactly as scripted; no 'database is locked'",
    )


def test_kill_switch_under_load_stops_automatic_actions_and_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(11)
    mc = McRoot(tmp_path / "root", max_workers=4, poll_interval=0.05)
    scripts = [random_script(rng) for _ in range(60)]
    keys = add_scripted(mc, scripts)
    env = mc.env(MC_DEMO_DELAY="0.1")
    controllers = [mc.popen("run", env=env) for _ in range(2)]
    time.sleep(1.0)
    mc.mc("killswitch", "on")
    time.sleep(1.5)  # workers keep reporting while engaged
    db = sqlite3.connect(mc.path / "mc.db")
    engaged = db.execute("SELECT max(id) FROM event WHERE action = 'killswitch' AND detail LIKE 'engaged%'").fetchone()[
        0
    ]
    late = db.execute("SELECT actor, action, detail FROM event WHERE kind = 'action' AND id > ?", (engaged,)).fetchall()
    reports = db.execute("SELECT count(*) FROM event WHERE kind = 'report' AND id > ?", (engaged,)).fetchone()[0]
    assert late == []
    mc.mc("killswitch", "off")
    for controller in controllers:
        controller.send_signal(signal.SIGTERM)
        controller.wait(timeout=60)
    mc.mc("run", "--until-idle", env=env, timeout=300)
    check_all(mc, keys, scripts, "killswitch-under-load")
    attempts = db.execute("SELECT count(*), count(DISTINCT ticket_id || ':' || attempt) FROM worker_run").fetchone()
    assert attempts[0] == attempts[1]
    report(
        "kill-switch engaged under load",
        "`mc killswitch on` with 2 controllers and 60 tickets flowing",
        1,
        f"0 automatic actions after it; {reports} reports kept meanwhile and applied on release",
    )


HOSTILE = {
    "100 MB without a newline": ("head -c 100000000 /dev/zero | tr '\\0' x", None),
    "NUL bytes and invalid UTF-8": ("printf '\\000\\377\\376 junk\\000\\nDONE: abcdef1\\n\\377'", "abcdef1"),
    "a million short lines": ("seq 1000000; echo 'DONE: 0123abcd'", "0123abcd"),
    "DONE with non-hex sha": ("echo 'DONE: xyz1234'", None),
    "DONE with 41 digits": ("echo 'DONE: 01234567890123456789012345678901234567890'", None),
    "DONE without a sha": ("echo 'DONE:'; echo 'DONE: '", None),
    "DONE on stderr only": ("echo 'DONE: abcdef1' >&2", None),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_worker_output_never_crashes_or_bloats_the_controller(tmp_path: Path, name: str) -> None:
    script, sha = HOSTILE[name]
    mc = McRoot(tmp_path / "root")
    mc.config["workers"]["default"]["command"] = ["sh", "-c", script]
    mc.config["plugins"]["dead_worker_retry"] = {"enabled": False}
    mc.config["reviewer"]["enabled"] = False
    mc.write_config()
    key = mc.add(name)
    controller = mc.popen("run")  # ru_maxrss would include pytest's RSS (inherited across fork): read VmHWM
    try:
        deadline = time.time() + 120
        while mc.show(key)["status"] not in ("done", "needs_input"):
            assert time.time() < deadline and controller.poll() is None, controller.stderr
            time.sleep(0.1)
        status = Path(f"/proc/{controller.pid}/status").read_text()
        peak_mb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    finally:
        controller.send_signal(signal.SIGTERM)
        assert controller.wait(timeout=60) == 0
    assert peak_mb < 200
    ticket = mc.show(key)
    if sha:
        assert (ticket["status"], ticket["done_sha"]) == ("done", sha)
    else:
        assert (ticket["status"], ticket["done_sha"], ticket["death_count"]) == ("needs_input", None, 1)
    report(f"worker output: {name}", "sh -c worker", 1, f"controller peak RSS {peak_mb:.0f} MB; contract held")


def test_a_pass_for_one_sha_never_passes_another(mc_root: McRoot) -> None:
    key = mc_root.add("fails its first review", "fail, pass")
    mc_root.mc("review", "record", key, "--sha", "a00000900000", "--verdict", "pass")  # some other commit
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["review_cycles"], mc_root.agent_runs(key)) == ("done", 1, 2)
    assert ("f00000100000", "fail") in [(r["done_sha"], r["verdict"]) for r in ticket["reviews"]]


def test_before_operator_reopen_that_raises_fails_closed(mc_root: McRoot) -> None:
    (mc_root.path / "broken_guard.py").write_text(
        "from mc_hooks import hookimpl\n@hookimpl(tryfirst=True)\ndef before_operator_reopen(ticket):\n"
        "    raise RuntimeError('guard broke')\n",
        encoding="utf-8",
    )
    mc_root.config["plugins"]["broken_guard"] = {"enabled": True}
    mc_root.config["plugins"]["operator_guard"] = {"enabled": False}
    mc_root.write_config()
    key = mc_root.add("weak")
    mc_root.mc("ticket", "set", key, "--status", "done")  # no sha: a weak completion
    mc_root.mc("operator", "--once", env=mc_root.env(PYTHONPATH=str(mc_root.path)))
    ticket = mc_root.show(key)
    assert ticket["status"] == "done"
    assert any(
        e["actor"] == "broken_guard" and "raised in before_operator_reopen" in e["detail"] for e in ticket["events"]
    )


def test_wal_and_shm_files_are_owner_only(tmp_path: Path) -> None:
    import stat

    mc_root = McRoot(tmp_path / "root")  # SQLite's own files
    mc_root.add("x")
    controller = mc_root.popen("run")
    time.sleep(0.5)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in mc_root.path.glob("mc.db*")}
    controller.send_signal(signal.SIGTERM)
    controller.wait(timeout=30)
    assert modes and all(mode == 0o600 for mode in modes.values()), modes


def test_kill_switch_file_and_config_are_read_never_executed(mc_root: McRoot) -> None:
    marker = mc_root.path / "executed"
    switch = mc_root.path / ".mc_killswitch"
    switch.write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
    switch.chmod(0o755)
    assert mc_root.mc("killswitch", "status").stdout.startswith("engaged")
    key = mc_root.add("held")
    mc_root.run()
    assert mc_root.show(key)["status"] == "todo" and not marker.exists()
    mc_root.config_path.write_text(f"database: !!python/object/apply:os.system ['touch {marker}']\n")
    result = mc_root.mc("ticket", "list", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and not marker.exists()


def test_read_only_database_directory_is_a_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "config.yaml").write_text("database: mc.db\n", encoding="utf-8")
    command = [sys.executable, "-m", "mission_control.cli", "--config", str(ro / "config.yaml"), "init"]
    if os.geteuid() == 0:  # root ignores permission bits: make the directory a read-only mount instead
        shell = f'mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", shell, "sh", *command]
    else:
        ro.chmod(0o500)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mc.db" in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("sandbox", ["off", "on"])
def test_hostile_campaign_hostile_workers_and_controller_sigkills(tmp_path: Path, sandbox: str) -> None:
    """Issue 13's hostile behaviours, chosen at random per run, mixed with controller SIGKILLs: every
    count stays exact, no forged verdict, no refused command succeeds, nothing outside is overwritten."""
    from mission_control import sandbox as sandbox_module

    if sandbox == "on" and sandbox_module.works() is not None:
        pytest.skip(f"no sandbox here: {sandbox_module.works()}")
    seed = int(os.environ.get("MC_SEED", random.SystemRandom().randrange(1 << 30)))
    rng = random.Random(seed)
    root = tmp_path / "root"
    agent = [sys.executable, str(Path(__file__).with_name("hostile_agent.py")), str(root)]
    mc = McRoot(root, max_workers=3, poll_interval=0.05, sandbox=sandbox, workers={"default": {"command": agent}})
    precious = mc.state / "precious"
    precious.write_text("not yours", encoding="utf-8")
    scripts = [random_script(rng) for _ in range(30)]
    keys = add_scripted(mc, scripts)
    env = mc.env(MC_DEMO_DELAY="0.1", MC_HOSTILE_SEED=str(seed))
    kills = sigkill_controllers(mc, env, rng, 12, (0.1, 0.8))
    mc.mc("run", "--until-idle", env=env, timeout=300)
    check_all(mc, keys, scripts, seed)
    acts = [json.loads(line) for line in (mc.state / "hostile.jsonl").read_text().splitlines()]
    refused = [a for a in acts if a["act"] in ("record-own-verdict", "release-killswitch", "set-own-status")]
    assert all(a["outcome"] != 0 for a in refused), refused  # no person's command worked from inside a run
    assert precious.read_text(encoding="utf-8") == "not yours"
    reviewers = {r["reviewer"] for ticket in mc.show_all(keys) for r in ticket["reviews"]}
    assert reviewers <= {"shadow_reviewer"}, reviewers
    report(
        f"hostile workers (sandbox {sandbox}) + controller SIGKILLed",
        f"{len(acts)} hostile acts of {len({a['act'] for a in acts})} kinds, seed {seed}",
        kills,
        f"{len(keys)} tickets: counts exact; 0 forged verdicts; {len(refused)} person's commands refused",
    )

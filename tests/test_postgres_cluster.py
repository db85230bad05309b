"""Several controllers on one PostgreSQL (issue 7): claims, leases, fencing, the cluster kill-switch.
Real PostgreSQL; CI must run these (they fail there, rather than skip, without a server)."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from scripts import random_script
from test_reliability import add_scripted, check_all

from conftest import McRoot, worker_runs

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_three_controllers_on_one_postgresql(tmp_path: Path, fresh_postgres: str) -> None:
    rng = random.Random(3)
    mc = McRoot(tmp_path / "root", database=fresh_postgres, max_workers=3, poll_interval=0.2)
    scripts = [random_script(rng) for _ in range(300)]
    keys = add_scripted(mc, scripts)
    controllers = [mc.popen("run", "--until-idle") for _ in range(3)]
    for controller in controllers:
        _, err = controller.communicate(timeout=600)
        assert controller.returncode == 0, err
        assert "Traceback" not in err
    check_all(mc, keys, scripts, "postgres-three-controllers")
    starts = mc.sql("SELECT controller, count(*) FROM worker_run GROUP BY controller")
    assert len(starts) >= 2, f"the work was not shared: {starts}"


@pytest.mark.parametrize("hosts", ["same-host", "two-hosts"])
def test_controller_paused_past_its_lease_is_fenced_out(tmp_path: Path, fresh_postgres: str, hosts: str) -> None:
    mc = McRoot(tmp_path / "root", database=fresh_postgres, max_workers=4, poll_interval=0.2, lease_seconds=2)
    keys = [mc.add(f"slow {i}") for i in range(4)]
    slow = mc.env(MC_DEMO_DELAY="4", MC_HOST="host-a")
    first = mc.popen("run", env=slow)
    wait_for(lambda: all(t["status"] == "in_progress" for t in mc.show_all(keys)))
    first.send_signal(signal.SIGSTOP)
    second_host = "host-a" if hosts == "same-host" else "host-b"
    second = mc.popen("run", env=mc.env(MC_DEMO_DELAY="0.1", MC_HOST=second_host))
    try:
        wait_for(lambda: all(t["status"] == "done" for t in mc.show_all(keys)), timeout=90)
        first.send_signal(signal.SIGCONT)
        time.sleep(2.5)  # the paused controller resumes, finds its lease gone, lets go
    finally:
        first.send_signal(signal.SIGCONT)
        for controller in (first, second):
            controller.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=60)
        second.communicate(timeout=60)
    assert "lease expired" in first_err
    for key in keys:
        ticket = mc.show(key)
        applied = [r for r in worker_runs(ticket) if r["applied_at"] and r["death_reason"] != "never started"]
        assert ticket["status"] == "done" and ticket["escalations"] == []
        if hosts == "same-host":  # the second controller adopted the running worker: nothing ran twice
            assert (len(worker_runs(ticket)), mc.agent_runs(key), ticket["death_count"]) == (1, 1, 0), ticket
        else:  # another host cannot watch it: counted as one dead worker, retried once
            assert (len(worker_runs(ticket)), ticket["review_cycles"]) == (2, 0), ticket
            assert worker_runs(ticket)[0]["death_reason"].startswith("its controller on host-a is gone")
        assert [r["outcome"] for r in applied][-1] == "done"
        assert len(ticket["reviews"]) == 1  # no stale or second verdict


def test_one_killswitch_stops_three_controllers_within_a_tick(tmp_path: Path, fresh_postgres: str) -> None:
    tick = 0.5
    rng = random.Random(5)
    mc = McRoot(tmp_path / "root", database=fresh_postgres, max_workers=2, poll_interval=tick)
    scripts = [random_script(rng) for _ in range(60)]
    keys = add_scripted(mc, scripts)
    env = mc.env(MC_DEMO_DELAY="0.1")
    controllers = [mc.popen("run", env=env) for _ in range(3)]
    elsewhere = McRoot(tmp_path / "operator-laptop", database=fresh_postgres)  # another root: the file is not shared
    try:
        time.sleep(1.5)
        elsewhere.mc("killswitch", "on", "--reason", "bad deploy")
        status = elsewhere.mc("killswitch", "status", "--json")
        assert json.loads(status.stdout)["reason"] == "bad deploy"
        time.sleep(3 * tick)
        engaged = mc.sql("SELECT id, created_at FROM event WHERE action = 'killswitch' ORDER BY id")[-1]
        late = mc.sql("SELECT actor, detail, created_at FROM event WHERE kind = 'action' AND id > ?", engaged[0])
        assert all(created - engaged[1] <= tick + 0.25 for _, _, created in late), late
        quiet = mc.sql("SELECT count(*) FROM event WHERE kind = 'action' AND created_at > ?", engaged[1] + tick + 0.25)
        assert quiet == [(0,)]
        elsewhere.mc("killswitch", "off")
        wait_for(lambda: all(t["status"] in ("done", "needs_input") for t in mc.show_all(keys)), timeout=180)
    finally:
        for controller in controllers:
            controller.send_signal(signal.SIGTERM)
            controller.communicate(timeout=60)
    check_all(mc, keys, scripts, "postgres-cluster-killswitch")

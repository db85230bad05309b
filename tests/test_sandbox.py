"""A run in the sandbox (bubblewrap) cannot see the store, the config, other tickets' prompts or
worktrees, cannot reach the kill-switch or record its own verdict, and leaves no process behind.
The worker here is a hostile script that tries each of those and writes down what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import McRoot, make_repo, skip_or_fail
from mission_control import sandbox

pytestmark = pytest.mark.slow  # end-to-end: real `mc` processes in real sandboxes

SANDBOX_SKIPPED: list[str] = []

HOSTILE = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from pathlib import Path

    root, state = Path(sys.argv[1]), Path(sys.argv[2])
    key = os.environ["MC_TICKET"]
    tried = {}

    def attempt(name, fn):
        try:
            tried[name] = "done" if fn() else "empty"
        except Exception as exc:
            tried[name] = type(exc).__name__

    attempt("read the store", lambda: (root / "mc.db").read_bytes())
    attempt("read the config", lambda: (root / "config.yaml").read_text())
    attempt("read another prompt", lambda: (root / "logs" / "MC-1" / "1.prompt.md").read_text())
    attempt("list another worktree", lambda: os.listdir(root / "worktrees" / "MC-1"))
    attempt("write the MC root", lambda: (root / "planted").write_text("x"))
    attempt("read its own prompt", lambda: Path(os.environ["MC_PROMPT_FILE"]).read_text())
    attempt("write its worktree", lambda: (Path.cwd() / "note.txt").write_text("mine"))
    mc = [sys.executable, "-m", "mission_control.cli", "--config", str(root / "config.yaml")]
    env = {k: v for k, v in os.environ.items() if k != "MC_TICKET"}
    verdict = ["review", "record", key, "--sha", "a" * 12, "--verdict", "pass"]
    tried["record its own verdict"] = subprocess.run(mc + verdict, env=env, capture_output=True).returncode
    tried["release the kill-switch"] = subprocess.run(mc + ["killswitch", "off"], env=env).returncode
    parent = Path(f"/proc/{os.getppid()}/cmdline")
    tried["see the controller"] = parent.exists() and b"mission_control" in parent.read_bytes()
    late = f"sleep 30; touch {state}/{key}.late"
    helper = subprocess.Popen(["setsid", "sh", "-c", late], start_new_session=True)
    (state / f"{key}.helper").write_text(str(helper.pid))
    (state / f"{key}.tried.json").write_text(json.dumps(tried))
    print("DONE: " + "a" * 12)
    """
)


@pytest.fixture
def sandboxed(tmp_path: Path) -> McRoot:
    why_not = sandbox.works()
    if why_not is not None:
        skip_or_fail(f"sandbox tests skipped: {why_not}", SANDBOX_SKIPPED)
    agent = tmp_path / "hostile_agent.py"  # outside the MC root, as a user's agent would be
    agent.write_text(HOSTILE, encoding="utf-8")
    root = tmp_path / "root"
    state = root.with_name("root-agent-state")  # McRoot's scripted state, outside the MC root
    worker = {"command": [sys.executable, str(agent), str(root), str(state)], "timeout": 60}
    return McRoot(root, sandbox="on", max_workers=1, workers={"default": worker})


def tried(mc: McRoot, key: str) -> dict[str, object]:
    return json.loads((mc.state / f"{key}.tried.json").read_text())


def test_a_sandboxed_worker_cannot_see_the_store_the_config_or_other_tickets(sandboxed: McRoot) -> None:
    repo = make_repo(sandboxed.path.with_name("repo"))
    first = sandboxed.add("first", "pass", "--repo", str(repo))
    sandboxed.run()
    second = sandboxed.add("second", "pass", "--repo", str(repo))
    sandboxed.run()
    seen = tried(sandboxed, second)
    assert (first, second) == ("MC-1", "MC-2")
    for blocked in ("read the store", "read the config", "read another prompt", "list another worktree"):
        assert seen[blocked] != "done", blocked
    assert seen["write the MC root"] != "done"
    assert seen["read its own prompt"] == "done" and seen["write its worktree"] == "done"
    assert not (sandboxed.path / "planted").exists()


def test_a_sandboxed_worker_cannot_record_its_own_verdict_or_release_the_kill_switch(sandboxed: McRoot) -> None:
    key = sandboxed.add("judge yourself", "pass")
    sandboxed.run()
    seen = tried(sandboxed, key)
    assert seen["record its own verdict"] != 0 and seen["release the kill-switch"] != 0
    reviews = sandboxed.show(key)["reviews"]
    assert [r["reviewer"] for r in reviews] == ["shadow_reviewer"]  # only the reviewer MC started judged it
    assert seen["see the controller"] is False


def test_a_sandboxed_worker_leaves_no_process_behind(sandboxed: McRoot) -> None:
    key = sandboxed.add("leave a helper", "pass")
    sandboxed.run()
    assert (sandboxed.state / f"{key}.helper").exists()  # it did start one, detached with setsid
    assert not any(_runs_helper(pid, sandboxed.state) for pid in _pids())  # and it ended with the run
    assert not (sandboxed.state / f"{key}.late").exists()


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _runs_helper(pid: int, state: Path) -> bool:
    """Whether ``pid`` is the hostile helper (its ``sh -c``, which names this test's state directory, or
    its ``sleep 30`` exactly: a `sleep 300` elsewhere on the machine is not it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmdline == b"sleep\x0030\x00" or (cmdline.startswith(b"sh\x00-c\x00") and str(state).encode() in cmdline)


def test_a_directory_a_cli_makes_under_tmp_is_private_to_each_run(tmp_path: Path) -> None:
    if sandbox.works() is not None:
        skip_or_fail(f"no sandbox here: {sandbox.works()}", SANDBOX_SKIPPED)
    target = Path("/tmp") / f"mc-test-private-{os.getpid()}"
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    try:
        assert sandbox.mount_point(target)
        write = ["sh", "-c", f"echo secret > {target}/left"]
        subprocess.run(sandbox.wrap(write, tmp_path, sandbox.Mounts(private=((mine, target),))), check=True)
        look = ["ls", "-A", str(target)]
        second = subprocess.run(
            sandbox.wrap(look, tmp_path, sandbox.Mounts(private=((other, target),))), capture_output=True, text=True
        )
        assert (mine / "left").read_text() == "secret\n"
        assert second.stdout == ""  # the next run does not see what the first left there
        assert not (target / "left").exists()  # nor does the host
    finally:
        target.rmdir()


def test_nothing_is_mounted_over_a_link_planted_where_a_cli_looks_under_tmp(tmp_path: Path) -> None:
    target = Path("/tmp") / f"mc-test-planted-{os.getpid()}"
    target.symlink_to(tmp_path)
    try:
        assert not sandbox.mount_point(target)
    finally:
        target.unlink()

"""`mc demo`: every path of the loop once, in a temporary MC root, with a scripted agent and
reviewer (plain Python scripts shipped in the package). No network, no API key, no agent CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import yaml

from mc_hooks.manager import load_plugins
from mission_control import mc_orchestrator_flags as flags
from mission_control.config import load_config
from mission_control.controller import Controller
from mission_control.luci_operator import Operator
from mission_control.mc_pickup import Pickup
from mission_control.store import views
from mission_control.store.connection import close_database, open_database
from mission_control.store.migration import init_schema
from mission_control.store.transactions import write

SCRIPTS = Path(__file__).with_name("scripts")

STORIES = (
    ("Pass on the first try", "pass"),
    ("Review fails once, then passes", "fail, pass"),
    ("Three review fails: escalation", "fail, fail, fail"),
    ("Uncertain review: escalation", "uncertain"),
    ("A worker death, then success", "die, pass"),
    ("Two worker deaths: escalation", "die, die"),
    ("Passed review, TODO in the log: the operator is guarded", "todo"),
    ("The same gap comes back: escalated early", "stuck, stuck, pass"),
)


def demo_config(root: Path, state: Path) -> Path:
    """Write a config.yaml using the bundled scripted agent and reviewer, which keep their state in
    ``state`` (outside the MC root, which a sandboxed run cannot see)."""
    python = sys.executable
    writable = [str(state)]
    config = {
        "database": "mc.db",
        "escalation": {"owner": "elmar"},
        "max_workers": 4,
        "poll_interval": 0.2,
        "workers": {
            "default": {"command": [python, str(SCRIPTS / "agent.py")], "timeout": 60, "writable_paths": writable}
        },
        "reviewer": {
            "enabled": True,
            "command": [python, str(SCRIPTS / "reviewer.py"), "{sha}"],
            "timeout": 60,
            "writable_paths": writable,
        },
        "operator": {"weak_patterns": [r"(?i)\bTODO\b"], "interval": 3600},
        "plugins": {
            name: {"enabled": True} for name in ("review_loop", "dead_worker_retry", "operator_guard", "killswitch")
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _demo_repo(root: Path) -> Path | None:
    """A git repository for the verified-DONE story, or None (story skipped) where git is missing."""
    if shutil.which("git") is None:
        print("(git is not installed: the verified-DONE story is skipped)")
        return None
    repo = root / "repo"
    repo.mkdir()
    identity = ["-c", "user.name=demo", "-c", "user.email=demo@mc.invalid"]
    for args in (["init", "-q"], [*identity, "commit", "--allow-empty", "-q", "-m", "base"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return repo


def _killswitch(controller: Controller, state: str) -> None:
    """Flip the kill-switch as a person would (`mc killswitch on|off`), through the same facade."""
    write(lambda: controller.engage_killswitch("demo") if state == "on" else controller.release_killswitch())
    print(f"kill-switch {'engaged' if state == 'on' else 'released'}")


def _run(config_path: Path) -> None:
    Pickup(load_config(config_path, env={}), until_idle=True).run()


def _show(keys: list[str], controller: Controller) -> None:
    for key in keys:
        ticket = controller.ticket(key)
        print(f"\n{ticket.key}  {ticket.title}")
        print(
            f"  -> {ticket.status} · review cycles {ticket.review_cycles} · deaths {ticket.death_count} · "
            f"attempts {ticket.attempts}"
        )
        for ts, text in views.activity(ticket):
            print(f"    {datetime.fromtimestamp(ts).strftime('%H:%M:%S')}  {text}")


def run_demo(keep: bool = False) -> int:
    """Run the demo; returns 0. With ``keep`` the MC root stays and its path is printed."""
    root = Path(tempfile.mkdtemp(prefix="mc-demo-"))
    state = Path(tempfile.mkdtemp(prefix="mc-demo-agent-state-"))
    saved = {k: os.environ.get(k) for k in ("MC_DEMO_STATE", "MC_KILLSWITCH", "MC_ORCH_SHADOW_REVIEW")}
    os.environ["MC_DEMO_STATE"] = str(state)
    os.environ.pop("MC_KILLSWITCH", None)
    try:
        config_path = demo_config(root, state)
        config = load_config(config_path, env={})
        open_database(config.database, create=True)
        init_schema()
        controller = Controller(config, actor="demo", manual=True)

        def add(**fields: object) -> str:
            return write(lambda: controller.add_ticket(fields, "")).key

        print(f"Mission Control demo in {root}")
        print("A scripted agent and reviewer stand in for real ones; each ticket's body says what they do.")

        repo = _demo_repo(root)
        keys = [add(title=title, body=f"script: {script}") for title, script in STORIES]
        if repo is not None:
            keys.append(
                add(
                    title="Claims a commit that does not exist, then commits",
                    body="script: bogus, commit",
                    repo=str(repo),
                )
            )
        _run(config_path)
        _show(keys, controller)

        print("\n--- kill-switch: engaged before a ticket arrives ---")
        _killswitch(controller, "on")
        held = add(title="Held by the kill-switch until released", body="script: pass")
        _run(config_path)
        print(f"{held} while engaged: {controller.ticket(held).status} (nothing automatic ran)")
        _killswitch(controller, "off")
        _run(config_path)
        _show([held], controller)

        print("\n--- operator: sweeps done tickets for weak completions ---")
        weak = add(title="Marked done by hand without a commit", body="script: pass", status="done", attempts=0)
        Operator(Controller(config, hooks=load_plugins(config).hook, actor="operator")).sweep()
        print(f"{keys[6]} (passed review, 'TODO' in its log): {controller.ticket(keys[6]).status} — guarded")
        print(f"{weak} (no done_sha, never reviewed): {controller.ticket(weak).status} — reopened")
        _run(config_path)
        _show([keys[6], weak], controller)

        print("\n--- circuit breaker: a broken agent CLI kills every run ---")
        broken = [add(title=f"Broken agent {i}", body="script: die, die") for i in range(1, 7)]
        _run(config_path)
        status = flags.cluster_killswitch() or {}  # the breaker engages it for every host: the store's flag
        print(f"kill-switch engaged by {status.get('who')}: {status.get('reason')}")
        print(
            "runs of the broken tickets: "
            + ", ".join(f"{k} {(state / f'{k}.runs').read_text()}" for k in broken if (state / f"{k}.runs").exists())
        )
        _show(broken, controller)
    finally:
        close_database()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if keep:
            print(f"\nkept {root}: try `mc --config {root / 'config.yaml'} ticket show MC-2`")
        else:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
    return 0

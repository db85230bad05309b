"""Doctor and health tell the truth (issue 27, part 4): `mc doctor` fails where `mc run` would refuse or
every run would die; `mc health` answers from the start; a person's decisions leave nothing stale."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import McRoot, git, make_repo


def doctor_lines(mc: McRoot, **env: str) -> list[str]:
    return mc.mc("doctor", check=False, env=mc.env(**env)).stdout.splitlines()


def test_doctor_fails_on_a_misspelled_plugin_name_as_mc_run_would(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root")
    mc.config["plugins"]["review_lop"] = {"enabled": True}
    mc.write_config()
    failed = [line for line in doctor_lines(mc) if line.startswith("FAIL plugins:")]
    assert len(failed) == 1 and "plugins.review_lop: no built-in plugin, entry point or importable module" in failed[0]
    assert mc.mc("run", "--until-idle", check=False).returncode == 2  # what doctor foretold


def test_doctor_fails_on_a_misspelled_plugin_setting(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root")
    mc.config["plugins"]["review_loop"] = {"enabled": True, "max_review_cycle": 5}
    mc.write_config()
    failed = [line for line in doctor_lines(mc) if line.startswith("FAIL plugins:")]
    assert len(failed) == 1 and "plugins.review_loop.max_review_cycle" in failed[0]


def test_doctor_fails_when_claude_code_has_no_key_and_no_login(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    mc = McRoot(tmp_path / "root", workers={"default": {"agent": "claude-code", "executable": sys.executable}})
    lines = doctor_lines(mc, HOME=str(home))
    assert (
        "FAIL workers.default: Claude Code is not logged in: set ANTHROPIC_API_KEY (environment or the "
        "profile's env) or run `claude`" in lines
    )
    with_key = doctor_lines(mc, HOME=str(home), ANTHROPIC_API_KEY="sk-ant-x")
    assert not [line for line in with_key if "not logged in" in line]


def test_doctor_says_when_nobody_is_told_about_escalations(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root")
    assert any("nobody is told when a ticket needs a person" in line for line in doctor_lines(mc))


def test_mc_health_answers_before_any_snapshot_was_recorded(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root")
    mc.add("one")
    result = mc.mc("health")
    assert result.returncode == 0 and "tickets: todo 1" in result.stdout


def test_a_ticket_made_done_by_hand_has_its_clone_removed(mc_root: McRoot, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    key = mc_root.add("stuck", "die", "--repo", str(repo))
    mc_root.run()
    assert (mc_root.path / "worktrees" / key).exists()
    mc_root.mc("ticket", "set", key, "--status", "done")
    assert not (mc_root.path / "worktrees" / key).exists()
    assert git(repo, "worktree", "list").count("\n") == 0


def test_mc_run_until_idle_says_which_tickets_wait_for_a_person(mc_root: McRoot) -> None:
    key = mc_root.add("unsure", "uncertain")
    told = mc_root.run().stderr
    assert f"1 ticket(s) wait for a person: {key}" in told

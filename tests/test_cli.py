"""The `mc` command: results on stdout, one-line errors with exit 2, manual ticket operations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import McRoot, clean_env, each_store


def mc_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mission_control.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )


def test_init_add_list_work_in_an_empty_directory_with_the_default_config(tmp_path: Path) -> None:
    assert mc_in(tmp_path, "init").returncode == 0
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "mc.db").exists()
    added = mc_in(tmp_path, "ticket", "add", "x")
    assert added.returncode == 0 and added.stdout.strip().splitlines()[-1] == "MC-1"
    listed = mc_in(tmp_path, "ticket", "list")
    assert listed.returncode == 0 and listed.stdout.split()[:2] == ["MC-1", "todo"]


def test_ticket_show_json_has_the_documented_fields(mc_root: McRoot) -> None:
    key = mc_root.add("shown")
    mc_root.mc("ticket", "comment", key, "first look")
    ticket = mc_root.show(key)
    for field in ("key", "title", "status", "review_cycles", "death_count", "done_sha", "comments", "events"):
        assert field in ticket
    assert ticket["comments"][0]["body"] == "first look"
    assert set(ticket["comments"][0]) == {"author", "body", "created_at"}
    assert ticket["events"][0]["action"] == "created"


def test_ticket_list_filters_by_status_and_prints_json(mc_root: McRoot) -> None:
    first, second = mc_root.add("one"), mc_root.add("two")
    mc_root.mc("ticket", "set", second, "--status", "done", "--done-sha", "ABCDEF1")
    done = json.loads(mc_root.mc("ticket", "list", "--status", "done", "--json").stdout)
    assert [(t["key"], t["done_sha"]) for t in done] == [(second, "abcdef1")]
    assert first in mc_root.mc("ticket", "list", "--status", "todo").stdout


def test_a_ticket_budget_comes_from_the_ticket_or_its_profile_and_a_person_can_raise_it(mc_root: McRoot) -> None:
    mc_root.config["workers"]["default"]["max_cost_usd"] = 2.5
    mc_root.write_config()
    own = mc_root.mc("ticket", "add", "capped", "--max-cost-usd", "0.75").stdout.strip()
    inherited = mc_root.add("profile's")
    assert (mc_root.show(own)["budget_usd"], mc_root.show(own)["max_cost_usd"]) == (0.75, 0.75)
    assert (mc_root.show(inherited)["budget_usd"], mc_root.show(inherited)["max_cost_usd"]) == (2.5, None)
    mc_root.mc("ticket", "set", own, "--status", "todo", "--max-cost-usd", "5")
    assert mc_root.show(own)["budget_usd"] == 5.0
    for bad in ("0", "-1", "lots", "nan"):
        result = mc_root.mc("ticket", "add", "x", "--max-cost-usd", bad, check=False)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"mc: max_cost_usd: expected an amount of US dollars above 0, got '{bad}'"
        ]


def test_ticket_set_rejects_a_bad_sha_with_one_line(mc_root: McRoot) -> None:
    key = mc_root.add("x")
    result = mc_root.mc("ticket", "set", key, "--status", "done", "--done-sha", "not-hex", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["mc: --done-sha: expected 7 to 40 hex digits, got 'not-hex'"]
    assert mc_root.show(key)["status"] == "todo"


def test_unknown_ticket_and_unknown_worker_are_one_line_errors(mc_root: McRoot) -> None:
    result = mc_root.mc("ticket", "show", "MC-99", check=False)
    assert (result.returncode, result.stderr.strip()) == (2, "mc: no ticket 'MC-99' (see `mc ticket list`)")
    result = mc_root.mc("ticket", "add", "x", "--worker", "nope", check=False)
    assert result.returncode == 2 and "worker: expected one of the profiles" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_arguments_exit_2_with_one_line(mc_root: McRoot) -> None:
    result = mc_root.mc("ticket", "set", "MC-1", "--status", "finished", check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_the_loop_owned_statuses_cannot_be_set_by_hand(mc_root: McRoot) -> None:
    key = mc_root.add("x")
    result = mc_root.mc("ticket", "set", key, "--status", "in_progress", check=False)
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert mc_root.show(key)["status"] == "todo"


@each_store
def test_ticket_import_adds_every_line_or_none(mc_root: McRoot, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"title": "a"}\n\n{"title": "b", "body": "x", "worker": "default"}\n', encoding="utf-8")
    assert mc_root.mc("ticket", "import", str(good)).stdout.strip() == "added 2 tickets"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "c"}\n{"title": ""}\n', encoding="utf-8")
    result = mc_root.mc("ticket", "import", str(bad), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"mc: {bad}:2: title: expected a non-empty string; nothing was added"
    assert len(json.loads(mc_root.mc("ticket", "list", "--json").stdout)) == 2


@each_store
def test_ticket_text_is_stored_and_shown_byte_exact(mc_root: McRoot) -> None:
    body = "line one\n\t$(rm -rf /); `id` && echo 'quoted' \"double\" | ünïcødé 🚀 \\ back\\slash\n" + "x" * 100_000
    key = mc_root.mc("ticket", "add", "weird $HOME", "--body", body).stdout.strip()
    ticket = mc_root.show(key)
    assert (ticket["title"], ticket["body"]) == ("weird $HOME", body)


def test_manual_set_to_todo_from_needs_input_gives_a_fresh_budget(mc_root: McRoot) -> None:
    key = mc_root.add("dies", "die, die, pass")
    mc_root.run()
    assert mc_root.show(key)["death_count"] == 2
    mc_root.mc("ticket", "set", key, "--status", "todo")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["death_count"], mc_root.agent_runs(key)) == ("done", 0, 3)


def test_plugins_lists_sources_and_call_order(mc_root: McRoot) -> None:
    out = mc_root.mc("plugins").stdout
    assert "review_loop          built-in (mc_plugins.review_loop:ReviewLoop)" in out
    assert "  on_worker_death: dead_worker_retry" in out


@each_store
def test_nul_characters_in_ticket_text_are_refused_with_one_line(mc_root: McRoot, tmp_path: Path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_text(json.dumps({"title": "a\u0000b"}) + "\n", encoding="utf-8")
    result = mc_root.mc("ticket", "import", str(path), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"mc: {path}:1: title: expected text without NUL characters; nothing was added"


@each_store
def test_a_reviewer_printing_nul_in_its_reasons_is_stored_safely(mc_root: McRoot) -> None:
    mc_root.config["reviewer"]["command"] = [
        sys.executable,
        "-c",
        'print(\'{"verdict": "pass", "reasons": ["ok\\\\u0000then"], "gaps": []}\')',
    ]
    mc_root.write_config()
    key = mc_root.add("nul reasons")
    mc_root.run()
    ticket = mc_root.show(key)
    assert (ticket["status"], ticket["reviews"][0]["reasons"]) == ("done", ["ok\\0then"])


def test_run_refuses_to_start_when_the_agent_cli_is_missing(tmp_path: Path) -> None:
    assert mc_in(tmp_path, "init").returncode == 0  # the default config: agent: claude-code
    (tmp_path / "config.yaml").write_text(
        (tmp_path / "config.yaml")
        .read_text()
        .replace(
            "agent: claude-code\n    timeout: 3600",
            "agent: claude-code\n    executable: /nonexistent/claude\n    timeout: 3600",
        ),
        encoding="utf-8",
    )
    mc_in(tmp_path, "ticket", "add", "x")
    result = mc_in(tmp_path, "run", "--until-idle")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "workers.default: the agent CLI '/nonexistent/claude' is not found" in result.stderr
    assert json.loads(mc_in(tmp_path, "ticket", "show", "MC-1", "--json").stdout)["status"] == "todo"


def test_doctor_prints_one_line_per_check_and_fails_on_a_missing_cli(tmp_path: Path) -> None:
    assert mc_in(tmp_path, "init").returncode == 0
    config = tmp_path / "config.yaml"
    text = config.read_text()
    config.write_text(
        text.replace("  agent: claude-code\n  timeout: 600", f"  command: [{sys.executable!r}]\n  timeout: 600")
    )
    config.write_text(
        config.read_text().replace(
            "agent: claude-code\n    timeout: 3600",
            "agent: claude-code\n    executable: /nonexistent/claude\n    timeout: 3600",
        )
    )
    result = mc_in(tmp_path, "doctor")
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert lines[0].startswith("ok   config:")
    plugins = [line for line in lines[1:] if line[5:].startswith("plugins:")]  # loaded as `mc run` would
    lines = [lines[0], *lines[1 + len(plugins) :]]
    assert plugins and lines[1].startswith("ok   database:")
    assert lines[2].startswith("FAIL workers.default: '/nonexistent/claude' is not found")
    assert lines[3].startswith(f"ok   reviewer: {sys.executable}")
    assert lines[4].startswith("ok   sandbox: ")
    network = [line for line in lines[5:] if ": network: " in line]  # one per profile, where runs are sandboxed
    rest = lines[5 + len(network) :]
    assert rest[0].startswith("ok   git: git version") and rest[1].startswith("ok   worktrees:")


def test_run_tells_each_decision_on_stderr_unless_quiet(mc_root: McRoot) -> None:
    first = mc_root.add("told")
    told = mc_root.run().stderr
    assert f"{first} dispatch: attempt 1 started (worker default) [host]" in told
    assert f"{first} verdict: pass for" in told and f"{first} status: in_review -> done" in told
    mc_root.add("quiet")
    assert mc_root.mc("run", "--until-idle", "--quiet").stderr == ""


def test_doctor_points_an_upgraded_config_with_the_old_claude_command_to_the_preset(tmp_path: Path) -> None:
    old_default = '["claude", "-p", "--session-id", "{session}", "{prompt}"]'
    (tmp_path / "config.yaml").write_text(
        f"workers:\n  default:\n    command: {old_default}\nreviewer:\n  enabled: false\n", encoding="utf-8"
    )
    result = mc_in(tmp_path, "doctor")
    assert result.returncode == 1
    assert result.stdout.startswith(
        "FAIL config: config.yaml: workers.default.command: expected `agent: claude-code` instead of "
        "the old default `claude -p --session-id ...` command"
    )


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    import importlib.metadata

    result = mc_in(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mc {importlib.metadata.version('mc-hooks')}"


def test_config_may_come_after_the_command(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert mc_in(elsewhere, "init").returncode == 0
    config = str(elsewhere / "config.yaml")
    assert mc_in(tmp_path, "ticket", "add", "x", "--config", config).returncode == 0
    listed = mc_in(tmp_path, "ticket", "list", "--config", config)
    assert listed.returncode == 0 and listed.stdout.startswith("MC-1")
    assert mc_in(tmp_path, "doctor", "--config", config).stdout.startswith("ok   config:")

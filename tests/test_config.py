"""config.yaml validation: every mistake is exit 2 with one line naming file, key and expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env
from mc_hooks.settings import ConfigError
from mission_control.config import DEFAULT_CONFIG_TEXT, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_config_yaml_is_the_packaged_default() -> None:
    assert (REPO / "config.yaml").read_text(encoding="utf-8") == DEFAULT_CONFIG_TEXT


def test_default_config_loads_with_documented_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DEFAULT_CONFIG_TEXT), env={})
    assert config.database == str(tmp_path / "mc.db")
    assert config.ticket_prefix == "MC"
    assert config.owner_title == "Elmar"
    assert config.workers["default"].timeout == 3600
    assert (config.workers["default"].agent, config.workers["default"].stall_timeout) == ("claude-code", 600)
    assert (config.reviewer.enabled, config.reviewer.agent) == (True, "claude-code")
    assert config.keep_worktrees is False
    assert config.plugins["review_loop"]["max_review_cycles"] == 3
    assert config.max_workers == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("databse: x.db\n", "databse: expected one of the known keys"),
        ("ticket_prefix: mc\n", "ticket_prefix: expected 1-16 capital letters or digits, got 'mc'"),
        ("max_workers: 0\n", "max_workers: expected an integer >= 1, got 0"),
        ("max_workers: two\n", "max_workers: expected an integer >= 1, got 'two'"),
        ("escalation: elmar\n", "escalation: expected a mapping, got 'elmar'"),
        ("escalation: {owner: 'a b'}\n", "escalation.owner: expected a name"),
        (
            "workers: {default: {command: 'claude -p {prompt}'}}\n",
            "workers.default.command: expected a list of strings",
        ),
        ("workers: {default: {command: []}}\n", "workers.default.command: expected a non-empty list"),
        (
            "workers: {default: {command: [x, '{promt}']}}\n",
            "workers.default.command[1]: expected only the placeholders",
        ),
        ("workers: {default: {command: [x], timeout: -1}}\n", "workers.default.timeout: expected a number > 0"),
        ("workers: {other: {command: [x]}}\n", "workers.default: expected a worker profile named 'default'"),
        (
            "workers: {default: {command: [my-agent, '{prompt}']}}\n",
            "workers.default.command[1]: expected no {prompt}: ticket text never goes into a command line",
        ),
        ("reviewer: {enabled: yes please}\n", "reviewer.enabled: expected true or false"),
        ("workers: {default: {agent: claude}}\n", "workers.default.agent: expected one of the agent presets"),
        ("workers: {default: {agent: claude-code, command: [x]}}\n", "workers.default.command: expected either"),
        ("workers: {default: {command: [x], model: opus}}\n", "workers.default.model: expected a setting of agent"),
        ("workers: {default: {agent: claude-code, env: {A: 1}}}\n", "workers.default.env.A: expected NAME: text"),
        ("workers: {default: {agent: claude-code, stall_timeout: 0}}\n", "workers.default.stall_timeout: expected"),
        ("workers: {default: {agent: claude-code, allowed_tools: Bash}}\n", "allowed_tools: expected a list"),
        ("keep_worktrees: sometimes\n", "keep_worktrees: expected true or false"),
        ("reviewer: {command: [x, '{prompt}']}\n", "reviewer.command[1]: expected no {prompt}"),
        (
            "operator: {weak_patterns: ['(unclosed']}\n",
            "operator.weak_patterns[0]: expected a valid regular expression",
        ),
        ("operator: {interval: 0}\n", "operator.interval: expected a number > 0"),
        ("workers: {default: {agent: claude-code, timeout: .nan}}\n", "workers.default.timeout: expected a number"),
        ("poll_interval: .nan\n", "poll_interval: expected a number > 0"),
        ("lease_seconds: .inf\n", "lease_seconds: expected a number > 0"),
        ("hook_timeout: .nan\n", "hook_timeout: expected a number > 0"),
        (
            "workers: {default: {agent: claude-code, max_cost_usd: -1}}\n",
            "workers.default.max_cost_usd: expected a number > 0 (US dollars)",
        ),
        (
            "workers: {default: {agent: codex, price_per_mtok: {input: 2}}}\n",
            "workers.default.price_per_mtok.output: expected US dollars per million tokens",
        ),
        (
            "workers: {default: {agent: codex, price_per_mtok: {input: 2, output: -1}}}\n",
            "workers.default.price_per_mtok.output: expected a number >= 0 (US dollars)",
        ),
        ("reviewer: {agent: aider}\n", "reviewer.agent: expected one of the agent presets (claude-code, codex, tests)"),
        ("board: {token: 12}\n", "board.token: expected 16 to 256 printable characters"),
        ("board: {tokn: abcdefghijklmnopq}\n", "board.tokn: expected one of the known keys (token)"),
        ("plugins: {review_loop: {enabled: maybe}}\n", "plugins.review_loop.enabled: expected true or false"),
        ("plugins: [review_loop]\n", "plugins: expected a mapping"),
        ("database: mysql://x/y\n", "database: expected a file path, sqlite:///PATH or postgresql://"),
        ("- just\n- a list\n", "(top level): expected a mapping of settings"),
    ],
)
def test_each_wrong_key_type_or_value_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_codex_and_aider_profiles_load_with_their_token_prices(tmp_path: Path) -> None:
    text = (
        "workers:\n  default: {agent: codex, model: gpt-5, price_per_mtok: {input: 1.25, output: 10}}\n"
        "  small: {agent: aider, model: openai/gpt-4o-mini}\n"
        "reviewer: {agent: codex}\n"
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.workers["default"].price_per_mtok == (1.25, 10.0)
    assert (config.workers["small"].program, config.workers["small"].price_per_mtok) == ("aider", None)
    assert config.reviewer.stage(0).agent == "codex"


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "database: mc.db\nworkers:\n  default: {command: [a, b\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        load_config(path, env={})


def test_duplicate_yaml_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 2, column 1: invalid YAML: duplicate key 'database'"):
        load_config(write(tmp_path, "database: a.db\ndatabase: b.db\n"), env={})


def test_missing_config_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found .*mc init"):
        load_config(tmp_path / "nope.yaml", env={})


def test_shadow_review_environment_overrides_enabled(tmp_path: Path) -> None:
    path = write(tmp_path, "reviewer: {enabled: true}\n")
    assert load_config(path, env={"MC_ORCH_SHADOW_REVIEW": "0"}).reviewer.enabled is False
    path = write(tmp_path, "reviewer: {enabled: false}\n")
    assert load_config(path, env={"MC_ORCH_SHADOW_REVIEW": "1"}).reviewer.enabled is True


def test_bad_shadow_review_environment_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MC_ORCH_SHADOW_REVIEW: expected 0 or 1, got 'yes'"):
        load_config(write(tmp_path, "{}\n"), env={"MC_ORCH_SHADOW_REVIEW": "yes"})


def test_database_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "database: sqlite:///data/x.db\n"), env={})
    assert config.database == str(tmp_path / "data" / "x.db")
    assert load_config(write(tmp_path, "database: postgresql://u@h:5432/d\n"), env={}).is_sqlite is False


def test_cli_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "max_workers: -3\n")
    result = subprocess.run(
        [sys.executable, "-m", "mission_control.cli", "--config", str(path), "ticket", "list"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"mc: {path}: max_workers: expected an integer >= 1, got -3"]
    assert "Traceback" not in result.stderr


def test_mc_config_environment_variable_picks_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "ticket_prefix: [\n")
    result = subprocess.run(
        [sys.executable, "-m", "mission_control.cli", "ticket", "list"],
        capture_output=True,
        text=True,
        env=clean_env(MC_CONFIG=str(path)),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and "invalid YAML" in result.stderr

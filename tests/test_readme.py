"""The README's set-up commands stay true: CI runs exactly its test command."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import McRoot

ROOT = Path(__file__).resolve().parents[1]


README_TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    assert README_TEST_COMMAND in (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_readme_first_command_runs_the_demo() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/mc demo" in readme


def _python_block(readme: str, first_line: str) -> str:
    start = readme.index(f"```python\n{first_line}\n") + len("```python\n")
    return readme[start : readme.index("```", start)]


def test_the_readme_plugin_and_its_tests_run_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (tmp_path / "acme_notify.py").write_text(_python_block(readme, "# acme_notify.py"), encoding="utf-8")
    (tmp_path / "test_acme_notify.py").write_text(_python_block(readme, "# test_acme_notify.py"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def mc_plugins_with_readme_plugin(tmp_path: Path, settings: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`mc plugins` with the README's plugin enabled with ``settings`` (YAML flow mapping)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (tmp_path / "acme_notify.py").write_text(_python_block(readme, "# acme_notify.py"), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f'plugins:\n  "acme_notify:AcmeNotify": {settings}\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mission_control.cli", "--config", str(config), "plugins"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
        check=False,
    )
    return config, result


def test_a_misspelled_plugin_setting_is_a_one_line_error(tmp_path: Path) -> None:
    config, result = mc_plugins_with_readme_plugin(tmp_path, '{outbox: /tmp/x.jsonl, chanel: "#ops"}')
    assert result.returncode == 2
    known = "(channel, enabled, outbox)"
    expected = f"mc: {config}: plugins.acme_notify:AcmeNotify.chanel: expected one of the known keys {known}"
    assert result.stderr.strip().splitlines() == [expected]


def test_a_missing_required_plugin_setting_is_a_one_line_error(tmp_path: Path) -> None:
    config, result = mc_plugins_with_readme_plugin(tmp_path, '{channel: "#ops"}')
    assert result.returncode == 2
    assert result.stderr.strip() == f"mc: {config}: plugins.acme_notify:AcmeNotify.outbox: expected a string (required)"


def test_every_agent_config_in_the_readme_loads(tmp_path: Path) -> None:
    import re

    from mission_control.config import load_config

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith(("workers:", "reviewer:"))]
    assert len(blocks) >= 4  # one per agent, and the stages-and-budget example
    agents = set()
    for index, block in enumerate(blocks):
        path = tmp_path / f"config{index}.yaml"
        path.write_text(block, encoding="utf-8")
        config = load_config(path, env={})
        agents.add(config.workers["default"].agent)
    assert agents == {"claude-code", "codex", "aider"}


def test_the_readme_source_plugin_makes_tickets_with_mc_sync(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    root = McRoot(tmp_path / "root")
    (root.path / "todo_file.py").write_text(_python_block(readme, "# todo_file.py: each line of todo.txt is a ticket"))
    todo = tmp_path / "todo.txt"
    todo.write_text("Add a greeting\n\nRename the CLI\n", encoding="utf-8")
    root.config["plugins"]["todo_file:TodoFile"] = {"path": str(todo)}
    root.write_config()

    first = root.mc("sync")
    again = root.mc("sync")

    assert first.stdout.splitlines() == ["todo_file:1: added MC-1", "todo_file:3: added MC-2"]
    assert again.stdout.strip() == "nothing new"

"""Review stages (issue 15): `reviewer` as a list of stages run in order on each done sha, the first
verdict other than pass deciding, and the built-in `agent: tests` stage, whose verdict is a test
command's exit status with the failing tests as gaps. Real `mc run`, real git, real pytest."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import McRoot, git, make_repo, worker_runs
from mc_hooks.settings import ConfigError
from mission_control.config import load_config
from mission_control.test_results import failing_tests

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]

# A worker that commits a test module: failing on its first attempt, fixed on the next.
FIXING_WORKER = textwrap.dedent(
    """
    import os, pathlib, subprocess
    attempt = int(os.environ["MC_ATTEMPT"])
    repo = pathlib.Path(os.environ["MC_REPO"])
    expected = 3 if attempt == 1 else 2
    tests = f"def test_add():\\n    assert 1 + 1 == {expected}\\n\\n\\ndef test_sub():\\n    assert 2 - 1 == 1\\n"
    (repo / "test_calc.py").write_text(tests)
    git = ["git", "-c", "user.name=agent", "-c", "user.email=agent@mc.invalid"]
    subprocess.run([*git, "add", "test_calc.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", f"attempt {attempt}"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    print("DONE: " + head.stdout.strip())
    """
)

# A second, "paid" stage: counts its runs beside the MC root and passes.
COUNTING_REVIEWER = textwrap.dedent(
    """
    import json, pathlib, sys
    counter = pathlib.Path(sys.argv[1])
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    print(json.dumps({"verdict": "pass", "reasons": ["the paid reviewer looked"], "gaps": []}))
    """
)


def test_pytest_go_and_tap_failures_are_named() -> None:
    output = "\n".join(
        [
            "FAILED tests/test_calc.py::test_add - assert 2 == 3",
            "ERROR tests/test_db.py::test_connect - OSError",
            "--- FAIL: TestParse (0.00s)",
            "not ok 3 - handles empty input",
            "ok 4 - still fine",
            "FAILED tests/test_calc.py::test_add - assert 2 == 3",
        ]
    )
    assert failing_tests(output) == [
        "tests/test_calc.py::test_add",
        "tests/test_db.py::test_connect",
        "TestParse",
        "handles empty input",
    ]


@pytest.mark.parametrize(
    ("reviewer", "expected"),
    [
        ([], "reviewer: expected at least one review stage"),
        ([{"agent": "tests"}], "reviewer[0].command: expected the test command to run"),
        ([{"agent": "tests", "command": ["pytest"], "model": "x"}], "reviewer[0].model: expected a setting of agent"),
        (["pytest"], "reviewer[0]: expected a review stage"),
        ([{"agent": "tests", "command": ["pytest"], "tiemout": 5}], "reviewer[0].tiemout: expected one of the known"),
    ],
)
def test_a_wrong_review_stage_is_one_line_naming_it(tmp_path: Path, reviewer: Any, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"reviewer": reviewer}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_tests_is_a_review_stage_not_a_worker(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"workers": {"default": {"agent": "tests", "command": ["pytest"]}}}), encoding="utf-8")
    expected = r"workers.default.agent: expected one of the agent presets \(claude-code, codex, aider\)"
    with pytest.raises(ConfigError, match=expected):
        load_config(path, env={})


@pytest.fixture
def staged(tmp_path: Path) -> tuple[McRoot, Path, Path]:
    worker = tmp_path / "fixing_worker.py"  # outside the MC root, as a user's agent would be
    worker.write_text(FIXING_WORKER, encoding="utf-8")
    reviewer = tmp_path / "counting_reviewer.py"
    reviewer.write_text(COUNTING_REVIEWER, encoding="utf-8")
    counter = tmp_path / "paid-reviews"
    stages = [
        {"agent": "tests", "command": PYTEST, "timeout": 120, "env": {"PYTHONDONTWRITEBYTECODE": "1"}},
        {"command": [sys.executable, str(reviewer), str(counter)], "timeout": 60, "writable_paths": [str(tmp_path)]},
    ]
    workers = {"default": {"command": [sys.executable, str(worker)], "timeout": 60}}
    root = McRoot(tmp_path / "root", workers=workers, max_workers=1)
    root.config["reviewer"] = stages
    root.write_config()
    return root, make_repo(tmp_path / "app"), counter


@pytest.mark.slow
def test_a_failing_test_is_a_gap_and_the_paid_stage_runs_only_once_the_tests_pass(
    staged: tuple[McRoot, Path, Path],
) -> None:
    root, repo, counter = staged
    key = root.mc("ticket", "add", "Add test_calc", "--repo", str(repo)).stdout.strip()

    root.run()

    ticket = root.show(key)
    assert ticket["status"] == "done"
    first, second = ticket["reviews"]
    assert first["verdict"] == "fail" and first["gaps"] == ["test_calc.py::test_add"]
    assert first["reasons"][0] == "the tests failed (exit 1): 1 failing"
    assert any("assert (1 + 1) == 3" in reason for reason in first["reasons"])  # the output's tail
    assert second["verdict"] == "pass" and second["reasons"] == ["the paid reviewer looked"]
    assert int(counter.read_text()) == 1  # the paid stage never saw the failing commit
    assert len(worker_runs(ticket)) == 2 and ticket["done_sha"] == git(repo, "rev-parse", f"mc/{key}")
    stages = [e for e in ticket["events"] if e["action"] == "review_stage"]
    assert [e["data"]["name"] for e in stages] == ["tests"]
    verdicts = [e["data"].get("stage") for e in ticket["events"] if e["action"] == "verdict"]
    assert verdicts == ["tests", "command"]  # which stage decided each verdict


@pytest.mark.slow
def test_a_test_command_that_is_missing_or_too_slow_is_uncertain(tmp_path: Path) -> None:
    root = McRoot(tmp_path / "root", max_workers=2)
    root.config["reviewer"] = [{"agent": "tests", "command": ["no-such-test-runner"], "timeout": 30}]
    root.write_config()
    missing = root.add("missing runner", "pass")
    root.run()
    review = root.show(missing)["reviews"][0]
    assert review["verdict"] == "uncertain" and "no-such-test-runner" in review["reasons"][0]
    root.config["reviewer"] = [
        {"agent": "tests", "command": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout": 1}
    ]
    root.write_config()
    slow = root.add("slow suite", "pass")
    root.run()
    review = root.show(slow)["reviews"][0]
    assert review["verdict"] == "uncertain" and review["reasons"][0] == "the tests did not finish within 1s"

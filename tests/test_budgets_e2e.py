"""Spend budgets (issue 15): a ticket stops at its budget, and a storm of expensive runs trips the
circuit breaker on cost alone. The real Claude Code CLI reports each run's cost (from the tokens the
scripted model server says it used), through the real `mc run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import AgentRoot, make_repo, reviewer_of, worker_of, worker_runs
from model_server import bash, text, verdict, write

pytestmark = pytest.mark.slow

EXPENSIVE = (40_000, 4_000)  # tokens in, out: about $0.18 a request at the CLI's default model's prices


def expensive_commit(path: str) -> list[Any]:
    """A worker that writes and commits a file, then answers, at a price."""
    return [
        write(path, "x\n"),
        bash(f"git add {path} && git commit -q -m '{path}'"),
        text("Committed.", usage=EXPENSIVE),
    ]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "app")


def test_a_ticket_stops_at_its_budget_instead_of_starting_another_run(
    tmp_path: Path, claude_cli: str, model_server: Any, repo: Path
) -> None:
    plugins = {"review_loop": {"enabled": True, "max_review_cycles": 10}}
    root = AgentRoot(tmp_path / "root", claude_cli, model_server)
    root.config["plugins"].update(plugins)
    root.write_config()
    key = root.mc("ticket", "add", "Never good enough", "--repo", str(repo), "--max-cost-usd", "0.30").stdout.strip()
    model_server.script([step for name in "abc" for step in expensive_commit(f"{name}.txt")], match=worker_of(key))
    gaps = ["add tests", "handle errors", "write docs", "log progress", "clean up"]
    fails = [verdict("fail", ["not yet"], [gap]) for gap in gaps]  # new gaps each time: the review loop goes on
    model_server.script(fails, match=reviewer_of(key))

    root.run()

    ticket = root.show(key)
    workers = worker_runs(ticket)
    assert len(workers) == 2  # a third run was never started: the ticket had spent its budget
    assert ticket["status"] == "needs_input"
    assert ticket["budget_usd"] == 0.30 and ticket["spent_usd"] >= 0.30
    reason = ticket["escalations"][-1]["reason"]
    assert reason == f"Spent ${ticket['spent_usd']:.2f} of its $0.30 budget. Needs Elmar decision."
    # The CLI reports a resumed session's running total; each run is charged its own share only.
    assert workers[0]["cost_usd"] == pytest.approx(workers[1]["cost_usd"])
    assert workers[0]["input_tokens"] == workers[1]["input_tokens"]
    shown = root.mc("ticket", "show", key).stdout
    assert f"spent ${ticket['spent_usd']:.4f} of its $0.30 budget" in shown


def test_a_storm_of_expensive_runs_trips_the_breaker_on_cost_alone(
    tmp_path: Path, claude_cli: str, model_server: Any, repo: Path
) -> None:
    breaker = {"enabled": True, "max_cost_usd": 0.40, "max_deaths": 100, "max_review_fails": 100}
    root = AgentRoot(tmp_path / "root", claude_cli, model_server, max_workers=1)
    root.config["plugins"]["circuit_breaker"] = breaker
    root.write_config()
    keys = [root.mc("ticket", "add", f"Costly {n}", "--repo", str(repo)).stdout.strip() for n in range(4)]
    for key in keys:
        model_server.script(expensive_commit(f"{key}.txt"), match=worker_of(key))
        model_server.script([verdict("pass", ["fine"])], match=reviewer_of(key))

    result = root.mc("run", "--until-idle", env=root.env(), check=False, timeout=300)

    assert result.returncode == 1, result.stderr
    statuses = [t["status"] for t in root.show_all(keys)]
    # Healthy runs, but the money ran out when the second one reported: its review is held, and the
    # last two tickets never start.
    assert statuses == ["done", "in_review", "todo", "todo"]
    status = json.loads(root.mc("killswitch", "status", "--json").stdout)
    assert status["engaged"] and status["who"] == "circuit_breaker"
    assert "spent (limit $0.40) within 10 minutes" in status["reason"]
    health = root.mc("health").stdout if root.mc("operator", "--once") else ""
    assert "circuit breaker budget: $0.4" in health and "of $0.40 spent in the last 10 minutes" in health


@pytest.mark.parametrize("version", ["claude_cli", "claude_older_cli"])
def test_each_resumed_run_is_charged_its_own_cost_whichever_way_the_cli_reports_it(
    tmp_path: Path, model_server: Any, repo: Path, version: str, request: pytest.FixtureRequest
) -> None:
    # Claude Code 2.1.330 reports a resumed session's running total, 2.1.197 each run's own: three runs
    # of the same work cost the same either way, and none is charged nothing.
    root = AgentRoot(tmp_path / "root", request.getfixturevalue(version), model_server)  # 3 review cycles
    key = root.mc("ticket", "add", "Three tries", "--repo", str(repo)).stdout.strip()
    model_server.script([step for name in "abc" for step in expensive_commit(f"{name}.txt")], match=worker_of(key))
    model_server.script([verdict("fail", ["not yet"], [gap]) for gap in ("a1", "b2", "c3")], match=reviewer_of(key))

    root.run()

    costs = [run["cost_usd"] for run in worker_runs(root.show(key))]
    assert len(costs) == 3 and costs[0] > 0.1
    assert costs == pytest.approx([costs[0]] * 3)

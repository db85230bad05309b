"""Smaller holes found while attacking the sandbox: each is one line or a correct figure, never a
traceback, a poisoned figure or raw terminal control."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import peewee
import pytest

from conftest import McRoot
from mission_control.agents import ClaudeCode
from mission_control.config import DEFAULT_CONFIG_TEXT, load_config
from mission_control.narration import Narrator
from mission_control.store.connection import StoreError, open_database


def claude_result(tmp_path: Path, cost: str, tokens: str) -> Path:
    """A Claude Code stream whose result reports ``cost`` and ``tokens`` as raw JSON (Infinity, NaN, ...)."""
    path = tmp_path / "1.log"
    result = (
        '{"type": "result", "subtype": "success", "is_error": false, "session_id": "s-1", '
        f'"total_cost_usd": {cost}, "num_turns": 1, "usage": {{"input_tokens": {tokens}, "output_tokens": 5}}}}'
    )
    path.write_text('{"type": "system", "subtype": "init", "session_id": "s-1"}\n' + result + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("cost", "tokens"), [("Infinity", "10"), ("1e400", "10"), ("0.5", "100000000000000000000000000000")]
)
def test_a_non_finite_cost_or_token_count_in_a_stream_is_unreported(tmp_path: Path, cost: str, tokens: str) -> None:
    said = ClaudeCode().report(claude_result(tmp_path, cost, tokens))
    assert said.finished
    assert said.cost_usd is None or said.cost_usd == 0.5
    assert said.input_tokens is None or said.input_tokens == 10
    assert (said.cost_usd, said.input_tokens) != (0.5, 10)


def test_reviewer_reasons_with_terminal_escapes_reach_the_narration_escaped() -> None:
    read_end, write_end = os.pipe()
    narrator = Narrator(write_end)
    hostile = "verdict fail: \x1b]0;owned\x07 \x1b[2J\x1b[H looks fine\r[ok]"
    narrator.event("MC-1", SimpleNamespace(created_at=time.time(), action="verdict", detail=hostile, actor="\x1b[31m"))
    narrator.flush()
    line = os.read(read_end, 4096).decode()
    os.close(read_end)
    os.close(write_end)
    assert not any(ch in line for ch in "\x1b\x07\r")
    assert "\\x1b]0;owned\\x07" in line and line.endswith("[\\x1b[31m]\n")


def test_a_lone_surrogate_a_reviewer_reported_is_shown_by_ticket_show_json(tmp_path: Path) -> None:
    verdict = '{"verdict": "uncertain", "reasons": ["cannot tell \\ud800 here"]}'
    reviewer = {"command": [sys.executable, "-c", f"print({verdict!r})"], "timeout": 60}
    mc = McRoot(tmp_path / "root", reviewer={"enabled": True, **reviewer})
    key = mc.add("surrogate")
    mc.run()
    shown = mc.mc("ticket", "show", key, "--json")
    reasons = [r for run in json.loads(shown.stdout)["runs"] for r in run.get("reasons") or []]
    assert "cannot tell \ufffd here" in reasons or "cannot tell \ufffd here" in shown.stdout
    plain = mc.mc("ticket", "show", key)
    assert "Traceback" not in plain.stderr


def test_a_postgresql_url_without_psycopg2_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peewee, "psycopg2", None)
    with pytest.raises(StoreError, match=r"postgresql needs a driver: pip install 'mc-hooks\[postgres\]'"):
        open_database("postgresql://postgres@127.0.0.1:5432/test")


def mc_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mission_control.cli", "--config", str(root / "config.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def plain_root(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    assert mc_cli(tmp_path, "init").returncode == 0
    return tmp_path


def test_ticket_import_of_a_deeply_nested_json_line_is_one_line(plain_root: Path) -> None:
    lines = plain_root / "tickets.jsonl"
    lines.write_text('{"title": "ok"}\n' + "[" * 200_000 + "\n", encoding="utf-8")
    result = mc_cli(plain_root, "ticket", "import", str(lines))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"mc: {lines}:2: JSON nested too deeply; nothing was added"


def test_ticket_import_reads_a_line_at_a_time_and_refuses_a_line_over_16_mebibytes(plain_root: Path) -> None:
    lines = plain_root / "tickets.jsonl"
    with lines.open("w", encoding="utf-8") as out:
        out.write('{"title": "ok"}\n')
        out.write('{"title": "huge", "body": "' + "x" * (64 << 20) + '"}\n')  # 64 MiB on one line
    result = mc_cli(plain_root, "ticket", "import", str(lines))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"mc: {lines}:2: longer than 16777216 bytes; nothing was added"
    assert "MC-1" not in mc_cli(plain_root, "ticket", "list").stdout


@pytest.mark.parametrize(("written", "meant"), [("on", "on"), ("off", "off"), ("yes", "on"), ("false", "off")])
def test_sandbox_on_and_off_written_as_the_docs_write_them_load(tmp_path: Path, written: str, meant: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(DEFAULT_CONFIG_TEXT.replace("sandbox: auto", f"sandbox: {written}"), encoding="utf-8")
    assert load_config(path).sandbox == meant


def test_a_stall_is_caught_at_stall_timeout_after_the_output_last_grew(tmp_path: Path) -> None:
    from mission_control import ticket_runtime as rt

    code = "import time; print('one line, then a request that hangs', flush=True); time.sleep(60)"
    started = time.time()
    process = rt.spawn(
        "worker", 1, 1, [sys.executable, "-c", code], tmp_path, dict(os.environ),
        tmp_path / "1.log", tmp_path / "1.err", timeout=60, stall_timeout=2,
    )  # fmt: skip
    watcher = rt.Watcher()
    watcher.add(process)
    try:
        while not watcher.wait(0.5):
            watcher.enforce_deadlines(time.time())
        stopped_after = time.time() - started
    finally:
        watcher.close()
    assert process.stalled
    # The look at 2 s saw the line (written at once) and dated it by its write: the next look, at about
    # 2 s after the line, stops it. Dated by the look, it ran until 4 s.
    assert stopped_after < 3.5, stopped_after

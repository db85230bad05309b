"""The verdict of an ``agent: tests`` review stage: the test command's exit status decides, and the
failing tests named in its output become the gaps. Runners understood: pytest (``FAILED``/``ERROR``
summary lines), Go (``--- FAIL: TestName``), and anything that prints TAP (``not ok N - name``)."""

from __future__ import annotations

import re

from mission_control import ticket_runtime as rt

SCAN_BYTES = 256 * 1024  # runners print their summary last: the end of the output is read
MAX_GAPS = 50  # a suite that fails everywhere is reported by its first failures, not all of them
TAIL_LINES = 20

_FAILING = (
    re.compile(r"^(?:FAILED|ERROR) (\S+::\S+|\S+\.py)(?: - .*)?$"),  # pytest's short test summary
    re.compile(r"^\s*--- FAIL: (\S+)"),  # go test -v
    re.compile(r"^not ok \d+ (?:- )?(.+?)(?:\s+# .*)?$"),  # TAP (node --test, prove, bats, ...)
)


def failing_tests(output: str) -> list[str]:
    """The ids of the failing tests an output names, in order, each once."""
    found: list[str] = []
    for line in output.splitlines():
        for pattern in _FAILING:
            match = pattern.match(line.rstrip())
            if match and match.group(1) not in found:
                found.append(match.group(1))
                break
    return found[:MAX_GAPS]


def verdict(process: rt.Process, timeout: float) -> tuple[str, list[str], list[str]]:
    """(verdict, reasons, gaps) of a finished test command: exit 0 is a pass; a failing exit is a fail
    with the failing tests as gaps and the output's tail as reasons; a command that was stopped
    (timed out, stalled) or killed by a signal is uncertain."""
    output = rt.read_tail(process.stdout, SCAN_BYTES) + rt.read_tail(process.stderr, SCAN_BYTES)
    tail = [line for line in output.splitlines() if line.strip()][-TAIL_LINES:]
    if process.timed_out:
        return "uncertain", [f"the tests did not finish within {timeout:g}s", *tail], []
    if process.stopped or process.signal is not None:
        return "uncertain", [f"the test command was stopped: {rt.describe_death(process)}", *tail], []
    if process.exit_code == 0:
        return "pass", [tail[-1] if tail else "the tests passed"], []
    failing = failing_tests(output)
    summary = f"the tests failed (exit {process.exit_code})" + (f": {len(failing)} failing" if failing else "")
    return "fail", [summary, *tail], failing or [f"make the test command pass (it exited {process.exit_code})"]

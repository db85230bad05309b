"""Shadow reviewer: judges each reported done_sha once and stores the verdict.

The verdict is the last stdout line of the reviewer command that parses as a JSON object with a
known ``verdict``. Anything else (no JSON, an unknown verdict, a crash, a timeout) is recorded as
``uncertain`` with the failure as its reason: a broken reviewer never passes a ticket. Only the
reviewer's own output counts: nothing a worker prints can become a verdict.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mission_control import ticket_runtime as rt
from mission_control.store import audit
from mission_control.store.models import VERDICTS, ShadowReview

REVIEWER_NAME = "shadow_reviewer"
TAIL_SCAN = 1 << 20  # the verdict is near the end: read at most the last 1 MiB
MAX_ITEMS = 50
MAX_ITEM_CHARS = 2000


def _clean_list(value: object) -> list[str] | None:
    if value is None:
        return []
    if not isinstance(value, list):
        return None
    return [str(item)[:MAX_ITEM_CHARS].replace("\x00", "\\0") for item in value[:MAX_ITEMS]]


def clean_verdict(obj: object) -> tuple[str, list[str], list[str]] | None:
    """(verdict, reasons, gaps) from a verdict object, bounded and cleaned, or None if it is not one."""
    if not isinstance(obj, dict) or obj.get("verdict") not in VERDICTS:
        return None
    reasons, gaps = _clean_list(obj.get("reasons")), _clean_list(obj.get("gaps"))
    if reasons is None or gaps is None:
        return None
    return obj["verdict"], reasons, gaps


def parse_verdict(stdout: rt.Output) -> tuple[str, list[str], list[str]] | None:
    """(verdict, reasons, gaps) from the last verdict line of the reviewer's stdout, or None."""
    handle = rt.open_output(stdout)
    if handle is None:
        return None
    try:
        with handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_SCAN))
            data = handle.read(TAIL_SCAN)
    except OSError:
        return None
    for raw in reversed(data.splitlines()):
        line = raw.strip()
        if not line.startswith(b"{"):
            continue
        try:
            parsed = clean_verdict(json.loads(line.decode("utf-8")))
        except (ValueError, UnicodeDecodeError):
            continue
        if parsed is not None:
            return parsed
    return None


def judge(parsed: tuple[str, list[str], list[str]] | None, failure: str | None) -> tuple[str, list[str], list[str]]:
    """The verdict to record for a finished reviewer: its parsed verdict, unless it failed
    (``failure``: why it did not finish well), in which case never a pass."""
    if failure and parsed is None:
        return "uncertain", [f"the reviewer failed: {failure}"], []
    if parsed is None:
        return "uncertain", ["the reviewer gave no verdict (pass, fail or uncertain)"], []
    if failure and parsed[0] == "pass":
        return "uncertain", [f"the reviewer passed but then failed: {failure}"], parsed[2]
    return parsed


def store_verdict(
    ticket_id: int,
    sha: str,
    verdict: str,
    reasons: list[str],
    gaps: list[str],
    reviewer: str = REVIEWER_NAME,
    **stats: Any,
) -> ShadowReview:
    """Insert a shadow review row (inside the caller's transaction); ``stats``: the reviewer run's
    ``attempt``, ``session``, ``cost_usd``, ``input_tokens``, ``output_tokens``, ``turns``."""
    return audit.new_review(ticket_id, sha, verdict, reasons, gaps, reviewer, **stats)

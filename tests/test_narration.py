"""`mc run`'s narration never blocks the controller, whoever reads (or does not read) its stderr."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from mission_control.narration import Narrator


def event(detail: str) -> SimpleNamespace:
    return SimpleNamespace(created_at=time.time(), action="dispatch", detail=detail, actor="host")


def test_a_pipe_nobody_reads_never_blocks_and_what_did_not_fit_is_counted() -> None:
    read_end, write_end = os.pipe()
    narrator = Narrator(write_end, backlog=200_000)
    started = time.monotonic()
    for number in range(5000):  # far more than a pipe holds (64 KiB)
        narrator.event("MC-1", event(f"attempt {number} started " + "x" * 100))
        narrator.flush()
    assert time.monotonic() - started < 5
    assert narrator.dropped > 0 and narrator.size <= 200_000
    os.set_blocking(read_end, False)
    while True:  # the reader catches up: the backlog goes out, then a note says how much was not shown
        try:
            chunk = os.read(read_end, 1 << 16)
        except BlockingIOError:
            chunk = b""
        narrator.flush()
        if not chunk and not narrator.pending:
            break
        seen = chunk
    assert b"line(s) not shown: stderr was not being read" in seen
    os.close(read_end)
    os.close(write_end)


def test_each_event_is_one_line_with_time_ticket_action_detail_and_actor() -> None:
    read_end, write_end = os.pipe()
    narrator = Narrator(write_end)
    narrator.event("MC-7", event("attempt 1 started\n(worker default)"))
    narrator.flush()
    line = os.read(read_end, 4096).decode()
    assert line.endswith(" MC-7 dispatch: attempt 1 started (worker default) [host]\n") and line.startswith("mc: ")
    os.close(read_end)
    os.close(write_end)


def test_the_lines_of_a_tick_go_out_in_one_write_in_order(mocker) -> None:
    read_end, write_end = os.pipe()
    narrator = Narrator(write_end)
    for number in range(10):
        narrator.event("MC-1", event(f"attempt {number} started"))
    writes = mocker.spy(os, "write")
    narrator.flush()
    assert writes.call_count == 1
    lines = os.read(read_end, 1 << 16).decode().splitlines()
    assert [line.split(" started")[0].rsplit(" ", 1)[1] for line in lines] == [str(n) for n in range(10)]
    os.close(read_end)
    os.close(write_end)


def test_a_line_longer_than_a_pipe_write_goes_out_whole_in_pieces() -> None:
    read_end, write_end = os.pipe()
    narrator = Narrator(write_end)
    narrator.line("x" * 10_000 + "\n")
    narrator.line("next\n")
    narrator.flush(wait=1.0)
    seen = os.read(read_end, 1 << 16)
    assert seen == b"x" * 10_000 + b"\nnext\n" and narrator.size == 0
    os.close(read_end)
    os.close(write_end)

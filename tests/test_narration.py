"""`mc run`'s narration never blocks the controller, whoever reads (or does not read) its stderr."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from types import SimpleNamespace

import pytest

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


def test_a_line_longer_than_the_room_left_in_a_pipe_never_blocks_and_goes_out_whole() -> None:
    read_end, write_end = os.pipe()  # stderr is a blocking descriptor: a write larger than the room left waits
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"." * 4096)
    os.set_blocking(write_end, True)
    backlog = os.read(read_end, 8192)  # room for two pipe writes, not for the line below
    narrator = Narrator(write_end)
    narrator.line("x" * 10_000 + "\n")
    narrator.line("next\n")
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("narration blocked the controller"))
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        narrator.flush()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    os.set_blocking(read_end, False)
    while narrator.size:  # the reader catches up: the rest goes out, in order
        with contextlib.suppress(BlockingIOError):
            backlog += os.read(read_end, 1 << 16)
        narrator.flush(wait=0.1)
    with contextlib.suppress(BlockingIOError):
        backlog += os.read(read_end, 1 << 16)
    assert backlog.lstrip(b".") == b"x" * 10_000 + b"\nnext\n"
    os.close(read_end)
    os.close(write_end)

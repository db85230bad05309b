"""`mc run` telling a person what it decides: one line per audit event on stderr, written without ever
blocking the controller. A terminal or a file takes every line at once; a pipe whose reader stalls
gets what it has room for, the rest waits in a bounded backlog, and lines past that are dropped and
counted (the audit trail in the store has them all)."""

from __future__ import annotations

import os
import select
import time
from collections import deque
from typing import Any

from mission_control.controller import short
from mission_control.text import printable

CHUNK = 4096  # a pipe reported writable takes this much without blocking (PIPE_BUF)
BACKLOG = 1 << 20  # bytes kept for a reader that stalls


class Narrator:
    """Formats events into lines and writes them to ``fd`` (stderr) when it can take them."""

    def __init__(self, fd: int = 2, backlog: int = BACKLOG) -> None:
        self.fd = fd
        self.backlog = backlog
        self.pending: deque[bytes] = deque()
        self.size = 0
        self.dropped = 0

    def event(self, key: str | None, event: Any) -> None:
        """Queue the line for one audit event."""
        stamp = time.strftime("%H:%M:%S", time.localtime(event.created_at))
        fields = (key or "-", event.action, short(event.detail, 300), event.actor)
        key, action, detail, actor = (printable(str(field)) for field in fields)  # agents' words among them
        line = f"mc: {stamp} {key} {action}: {detail} [{actor}]\n"
        self.line(line)

    def line(self, text: str) -> None:
        """Queue one line (dropped, and counted, when the backlog is full)."""
        data = text.encode("utf-8", errors="replace")
        if self.size + len(data) > self.backlog:
            self.dropped += 1
            return
        self.pending.append(data)
        self.size += len(data)

    def flush(self, wait: float = 0.0) -> None:
        """Write what the output takes now, without blocking, or waiting at most ``wait`` seconds for
        it to take the rest (at exit)."""
        deadline = time.monotonic() + wait
        if self.dropped and self.size < self.backlog // 2:
            note = f"mc: {self.dropped} line(s) not shown: stderr was not being read (see `mc ticket show`)\n"
            self.pending.append(note.encode())
            self.size += len(note)
            self.dropped = 0
        while self.pending:
            try:
                _, writable, _ = select.select([], [self.fd], [], max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError):
                writable = [self.fd]  # not selectable (unusual): a plain write
            if not writable:
                return
            data = self._next_chunk()
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                self.pending.appendleft(data)
                return
            except OSError:  # stderr is gone (closed terminal): nobody to tell
                self.pending.clear()
                self.size = 0
                return
            self.size -= written
            if written < len(data):
                self.pending.appendleft(data[written:])

    def _next_chunk(self) -> bytes:
        """Take up to :data:`CHUNK` bytes off the backlog, whole lines joined (one write for a tick's lines,
        not one per line), or the head of a line longer than that."""
        first = self.pending.popleft()
        if len(first) > CHUNK:
            self.pending.appendleft(first[CHUNK:])
            return first[:CHUNK]
        parts, size = [first], len(first)
        while self.pending and size + len(self.pending[0]) <= CHUNK:
            line = self.pending.popleft()
            parts.append(line)
            size += len(line)
        return b"".join(parts) if len(parts) > 1 else first

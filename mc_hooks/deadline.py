"""A time limit on one hook implementation: a plugin that overruns it is stopped with
:class:`HookTimeout`, raised inside it by ``SIGALRM``, so no plugin can hold the controller (or the
store's write lock it may be holding) longer than the host allows.

The limit applies on the main thread (where the controller runs; signals are delivered only there). A
timer already armed by someone else (a test's own alarm, an outer hook call) is put back afterwards with
what was left of it; when it would fire before ours, it stays in charge.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

REPEAT = 1.0  # a plugin that swallows HookTimeout is interrupted again every second until it returns


class HookTimeout(BaseException):
    """A hook implementation ran past its time limit. A BaseException, like KeyboardInterrupt, so a
    plugin's ``except Exception`` does not swallow it."""


def _expired(limit: float) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise HookTimeout(f"ran past its {limit:g} s time limit and was stopped")

    return handler


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Run the body for at most ``seconds`` (None: no limit), then raise :class:`HookTimeout` in it."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if outer_left and outer_left <= seconds:
        yield  # an outer timer fires first: it is in charge
        return
    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _expired(seconds))
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            left = outer_left - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), outer_interval)

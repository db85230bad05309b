"""A time limit on one hook implementation: a plugin that overruns it is stopped with
:class:`HookTimeout`, raised inside it by ``SIGALRM``, so no plugin can hold the controller (or the
store's write lock it may be holding) longer than the host allows.

The limit applies on the main thread (where the controller runs; signals are delivered only there). A
timer already armed by someone else (a test's own alarm, an outer hook call) is put back afterwards with
what was left of it; when it would fire before ours, it stays in charge.

The ``SIGALRM`` handler is installed once and left in place (installing and restoring it around every
call cost more than the rest of a hook call): while no hook runs under a limit, it passes the signal on
to whatever handler was there before it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

try:
    from _signal import getsignal as _raw_getsignal  # type: ignore[import-not-found]  # signal.getsignal, minus its enum
except ImportError:  # pragma: no cover - other interpreters
    _raw_getsignal = signal.getsignal

REPEAT = 1.0  # a plugin that swallows HookTimeout is interrupted again every second until it returns


class HookTimeout(BaseException):
    """A hook implementation ran past its time limit. A BaseException, like KeyboardInterrupt, so a
    plugin's ``except Exception`` does not swallow it."""


_limits: list[float] = []  # the limits of the hook calls running now, innermost last
_passed_on: Any = signal.SIG_DFL  # the handler installed before ours


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _limits:
        raise HookTimeout(f"ran past its {_limits[-1]:g} s time limit and was stopped")
    if callable(_passed_on):
        _passed_on(signum, frame)
    elif _passed_on == signal.SIG_DFL:  # what SIGALRM would have done without us: end the process
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGALRM)


def _install() -> None:
    global _passed_on
    current = _raw_getsignal(signal.SIGALRM)  # the handler as is: signal.getsignal's enum lookup costs more
    if current is not _on_alarm:  # first use, or someone installed a handler of their own since
        _passed_on = current
        signal.signal(signal.SIGALRM, _on_alarm)


class time_limit:  # noqa: N801 - used like a function: `with time_limit(5):`
    """Run the body for at most ``seconds`` (None: no limit), then raise :class:`HookTimeout` in it."""

    __slots__ = ("seconds", "armed", "outer", "started")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.armed = False

    def __enter__(self) -> None:
        seconds = self.seconds
        if not seconds or threading.current_thread() is not _MAIN:
            return
        self.outer = signal.getitimer(signal.ITIMER_REAL)
        if self.outer[0] and self.outer[0] <= seconds:
            return  # an outer timer fires first: it is in charge
        self.started = time.monotonic()
        _install()
        _limits.append(seconds)
        signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
        self.armed = True

    def __exit__(self, *exc: object) -> None:
        if not self.armed:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        _limits.pop()
        self.armed = False
        outer_left, outer_interval = self.outer
        if outer_left:
            left = outer_left - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), outer_interval)


_MAIN = threading.main_thread()

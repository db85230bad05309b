"""A time limit on one hook implementation: a plugin that overruns it is stopped with
:class:`HookTimeout`, raised inside it, so no plugin can hold the controller (or the store's write lock
it may be holding) longer than the host allows.

A watchdog thread looks at the deadlines of the calls under way every :data:`WATCH` seconds and, when
one has passed, sends the main thread :data:`SIGNAL` (a real-time signal of this module's own), whose
handler raises HookTimeout there. So entering and leaving a limit costs no system call (arming a timer
for every call cost more than the rest of the call), an overrun is stopped within ``WATCH`` of its
limit, and nobody else's timer (``alarm``, ``setitimer``, ``SIGALRM``) is touched.

The limit applies on the main thread (where the controller runs; signals are delivered only there).
The watchdog starts with the first limited call and sleeps while none is under way.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from types import FrameType
from typing import Any

try:
    from _signal import getsignal as _raw_getsignal  # type: ignore[import-not-found]  # signal.getsignal, minus its enum
except ImportError:  # pragma: no cover - other interpreters
    _raw_getsignal = signal.getsignal

REPEAT = 1.0  # a plugin that swallows HookTimeout is interrupted again every second until it returns
WATCH = 0.05  # seconds between the watchdog's looks at the running calls
# Linux has real-time signals nobody else here uses; elsewhere SIGALRM, passed on when it is not ours.
SIGNAL = signal.SIGRTMAX - 2 if hasattr(signal, "SIGRTMAX") else signal.SIGALRM


class HookTimeout(BaseException):
    """A hook implementation ran past its time limit. A BaseException, like KeyboardInterrupt, so a
    plugin's ``except Exception`` does not swallow it."""


class _Call:
    """One limited call under way. It ends with its ``with`` block, even where a signal cut its exit
    short: its ``time_limit`` is gone then, and a call whose owner is gone is never interrupted."""

    __slots__ = ("seconds", "due", "owner")

    def __init__(self, seconds: float, owner: time_limit) -> None:
        self.seconds = seconds
        self.due = time.monotonic() + seconds  # when the watchdog interrupts it (again)
        self.owner = weakref.ref(owner)

    def running(self) -> bool:
        return self.owner() is not None and any(call is self for call in _calls)


_calls: list[_Call] = []  # the limited calls running now, innermost last
_fired: list[_Call] = []  # the call the watchdog last signalled for (a signal may arrive after it ended)
_passed_on: Any = signal.SIG_DFL  # the handler installed before ours
_busy = threading.Event()  # set while calls run: the watchdog waits for it instead of polling
_watchdog: list[threading.Thread] = []
_MAIN = threading.main_thread()
_MAIN_ID = _MAIN.ident


def _on_signal(signum: int, frame: FrameType | None) -> None:
    fired = _fired.pop() if _fired else None
    if fired is not None:
        if fired.running():
            raise HookTimeout(f"ran past its {fired.seconds:g} s time limit and was stopped")
        return  # the watchdog's, for a call that ended meanwhile
    if callable(_passed_on):
        _passed_on(signum, frame)
    elif _passed_on == signal.SIG_DFL:  # what the signal would have done without us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _live() -> list[_Call]:
    """The calls under way whose ``with`` block has not ended, outermost first."""
    return [call for call in list(_calls) if call.owner() is not None]


def _watch() -> None:
    while True:
        _busy.wait()
        time.sleep(WATCH)
        calls = _live()
        if not calls:
            _busy.clear()
            if _live():  # one started between the look and the clear
                _busy.set()
            continue
        now = time.monotonic()
        overdue = [call for call in calls if call.due <= now]
        if overdue:
            call = overdue[0]  # the outermost overdue call: its limit is the one in charge
            call.due = now + REPEAT
            _fired[:] = [call]
            signal.pthread_kill(_MAIN_ID or 0, SIGNAL)


def _start() -> None:
    """On the main thread, at the first limited call: install the handler and start the watchdog (and
    again if someone installed a handler of their own since)."""
    global _passed_on
    current = _raw_getsignal(SIGNAL)
    if current is not _on_signal:
        _passed_on = current
        signal.signal(SIGNAL, _on_signal)
    if not _watchdog:
        thread = threading.Thread(target=_watch, name="mc-hook-time-limits", daemon=True)
        thread.start()
        _watchdog.append(thread)


def _forget_watchdog() -> None:  # in a forked child, which has no threads: the next call starts one
    global _busy
    _watchdog.clear()
    _calls.clear()
    _fired.clear()
    _busy = threading.Event()


os.register_at_fork(after_in_child=_forget_watchdog)


class time_limit:  # noqa: N801 - used like a function: `with time_limit(5):`
    """Run the body for at most ``seconds`` (None: no limit), then raise :class:`HookTimeout` in it."""

    __slots__ = ("seconds", "call", "__weakref__")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.call: _Call | None = None

    def __enter__(self) -> None:
        seconds = self.seconds
        if not seconds or threading.get_ident() != _MAIN_ID:
            return
        if not _watchdog or _raw_getsignal(SIGNAL) is not _on_signal:
            _start()
        self.call = _Call(seconds, self)
        _calls.append(self.call)
        if not _busy.is_set():
            _busy.set()

    def __exit__(self, *exc: object) -> None:
        call, self.call = self.call, None
        if call is None:
            return
        if _calls and _calls[-1] is call:
            _calls.pop()
            if not _calls or _calls[-1].owner() is not None:
                return
        # A call whose exit a signal cut short left its entry: it goes now.
        _calls[:] = [c for c in _calls if c is not call and c.owner() is not None]

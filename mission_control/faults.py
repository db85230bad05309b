"""Crash points for fault-injection tests: ``MC_CRASH_AT=<name>`` makes the controller SIGKILL
itself the first time it passes that point (as a power cut or `kill -9` would), so tests can prove
that nothing is lost or applied twice whatever the moment. Unset in normal use: one dict lookup."""

from __future__ import annotations

import os
import signal

_target = os.environ.get("MC_CRASH_AT", "")


def crash_point(name: str) -> None:
    """Die here, at once and without cleanup, if ``MC_CRASH_AT`` names this point."""
    if _target and _target == name:
        os.kill(os.getpid(), signal.SIGKILL)

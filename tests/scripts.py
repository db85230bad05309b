"""Scripted tickets for fault-injection tests, and what each script implies under the built-in policy."""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_CYCLES, MAX_DEATHS = 3, 2


@dataclass(frozen=True)
class Expected:
    status: str
    runs: int
    review_cycles: int
    death_count: int
    comments: int
    escalations: int


def expected(script: list[str]) -> Expected:
    """Walk the script as review_loop and dead_worker_retry would (default settings)."""
    cycles = deaths = comments = 0
    for runs, step in enumerate(script, start=1):
        if step == "die":
            deaths += 1
            if deaths >= MAX_DEATHS:
                return Expected("needs_input", runs, cycles, deaths, comments + 1, 1)
        elif step in ("pass", "todo"):
            return Expected("done", runs, cycles, 0, comments, 0)
        elif step == "uncertain":
            return Expected("needs_input", runs, cycles, deaths, comments + 1, 1)
        elif step == "fail":
            cycles += 1
            comments += 1
            if cycles >= MAX_CYCLES:
                return Expected("needs_input", runs, cycles, deaths, comments + 1, 1)
    raise ValueError(f"script {script} does not end")


def random_script(rng: random.Random) -> list[str]:
    """A script that ends: random steps, then a pass."""
    steps = rng.choices(["pass", "fail", "die", "uncertain"], weights=[3, 3, 2, 1], k=rng.randint(1, 4))
    return [*steps, "pass"]

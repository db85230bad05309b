"""A scripted stand-in for an agent CLI, for `mc demo` and the tests. Not a real agent.

The ticket body holds a line ``script: a, b, c``: the k-th time this agent runs for a ticket it
does the k-th step (the last one repeats). Steps: ``pass``, ``fail``, ``uncertain`` (print
``DONE: <sha>``; the sha tells the scripted reviewer which verdict to give), ``stuck`` (DONE; the
reviewer fails it with the same gap every time), ``commit`` (a real commit in the ticket's git repo,
and DONE with its sha), ``bogus`` (DONE with a sha that does not exist), ``die`` (exit 1
without DONE), ``hang`` (sleep until killed), ``todo`` (DONE, with "TODO" in the log).
It counts its runs in ``$MC_DEMO_STATE/<ticket>.runs`` and first sleeps ``$MC_DEMO_DELAY`` seconds.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

VERDICT_CODE = {"pass": "a", "fail": "f", "uncertain": "c", "todo": "a", "stuck": "e"}


def steps(prompt: str) -> list[str]:
    match = re.search(r"^script:\s*(.+)$", prompt, re.MULTILINE)
    return [s.strip() for s in match.group(1).split(",")] if match else ["pass"]


def main() -> int:
    ticket = os.environ["MC_TICKET"]
    prompt = Path(os.environ["MC_PROMPT_FILE"]).read_text(encoding="utf-8")
    state = Path(os.environ.get("MC_DEMO_STATE", "."))
    counter = state / f"{ticket}.runs"
    run = int(counter.read_text()) + 1 if counter.exists() else 1
    written = counter.with_name(f".{counter.name}.{os.getpid()}")
    written.write_text(str(run))
    os.replace(written, counter)  # whole or absent: a run killed mid-write never leaves an empty counter
    time.sleep(float(os.environ.get("MC_DEMO_DELAY", "0")))
    plan = steps(prompt)
    step = plan[min(run, len(plan)) - 1]
    print(f"agent: {ticket} run {run} attempt {os.environ['MC_ATTEMPT']}: {step}")
    if "Reviewer feedback" in prompt:
        print("agent: read the reviewer's feedback")
    if step == "die":
        print("agent: crashing", file=sys.stderr)
        return 1
    if step == "hang":
        time.sleep(3600)
        return 1
    if step == "todo":
        print("agent: left a TODO for later")
    if step == "bogus":
        print("DONE: 0badc0de0badc0de")
        return 0
    if step == "commit":
        message = f"{ticket}: run {run}"
        git = ["git", "-c", "user.name=agent", "-c", "user.email=agent@mc.invalid"]
        subprocess.run([*git, "commit", "--allow-empty", "-q", "-m", message], check=True)
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        print(f"DONE: {head.stdout.strip()}")
        return 0
    # The sha carries the step for the scripted reviewer: <verdict code><run, 6 hex><padding>.
    print(f"DONE: {VERDICT_CODE[step]}{run:06x}00000")
    return 0


if __name__ == "__main__":
    sys.exit(main())

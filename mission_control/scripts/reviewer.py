"""A scripted stand-in for a shadow reviewer, for `mc demo` and the tests. Not a real reviewer.

Usage: reviewer.py SHA. The first hex digit of the sha says the verdict (a: pass, f: fail,
c: uncertain, e: fail with the same gap as before), as the scripted agent wrote it. Prints one JSON
verdict line.
"""

import json
import sys

VERDICTS = {"a": "pass", "f": "fail", "c": "uncertain", "e": "fail"}
# Each failed run names a different gap, so the review loop sees the worker converging; "e" (the
# agent's "stuck" step) always names the same one.
GAPS = [
    "add a test for the failure case",
    "document the new flag in the README",
    "handle an empty input file",
    "log why a retry happens",
    "close the file on the error path",
    "name the magic timeout",
    "check the exit code of the helper",
    "remove the debug print",
]
STUCK_GAP = "the migration for the new column is still missing"


def main() -> int:
    sha = sys.argv[1]
    if len(sha) == 40:  # a real commit (the agent's "commit" step): the verifier already checked it
        print(json.dumps({"verdict": "pass", "reasons": [f"commit {sha[:12]} is in the repo"], "gaps": []}))
        return 0
    verdict = VERDICTS.get(sha[:1], "uncertain")
    run = int(sha[1:7], 16) if len(sha) >= 7 else 0
    reasons = {
        "pass": [f"run {run} does what the ticket asks"],
        "fail": [f"run {run}: the tests do not cover the change", "the error path is unhandled"],
        "uncertain": [f"run {run}: cannot tell whether the migration is safe"],
    }[verdict]
    gaps = []
    if verdict == "fail":
        gaps = [STUCK_GAP] if sha[:1] == "e" else [GAPS[(run - 1) % len(GAPS)]]
    print("reviewer: looking at", sha)
    print(json.dumps({"verdict": verdict, "reasons": reasons, "gaps": gaps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

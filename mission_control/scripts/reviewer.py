"""A scripted stand-in for a shadow reviewer, for `mc demo` and the tests. Not a real reviewer.

Usage: reviewer.py SHA. The first hex digit of the sha says the verdict (a: pass, f: fail,
c: uncertain), as the scripted agent wrote it. Prints one JSON verdict line.
"""

import json
import sys

VERDICTS = {"a": "pass", "f": "fail", "c": "uncertain"}


def main() -> int:
    sha = sys.argv[1]
    verdict = VERDICTS.get(sha[:1], "uncertain")
    run = int(sha[1:7], 16) if len(sha) >= 7 else 0
    reasons = {
        "pass": [f"run {run} does what the ticket asks"],
        "fail": [f"run {run}: the tests do not cover the change", "the error path is unhandled"],
        "uncertain": [f"run {run}: cannot tell whether the migration is safe"],
    }[verdict]
    gaps = ["add a test for the failure case"] if verdict == "fail" else []
    print("reviewer: looking at", sha)
    print(json.dumps({"verdict": verdict, "reasons": reasons, "gaps": gaps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

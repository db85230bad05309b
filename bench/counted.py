"""`python -m bench.counted STATS_FILE mc-args...`: run `mc` in this process and write what the store saw
and what the process itself spent to STATS_FILE as JSON: SQL statements by kind, committed transactions,
and this process's own CPU seconds (RUSAGE_SELF: the controller, not the workers it starts).

The counting wraps peewee's ``Database.execute_sql`` and ``Database.commit`` from outside; nothing in
Mission Control knows it is being counted.
"""

from __future__ import annotations

import atexit
import collections
import json
import resource
import sys
from pathlib import Path
from typing import Any

import peewee as pw

CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")


def main(argv: list[str]) -> int:
    stats_file, mc_args = Path(argv[0]), argv[1:]
    statements: collections.Counter[str] = collections.Counter()
    commits = [0]
    execute_sql, commit = pw.Database.execute_sql, pw.Database.commit

    def counted_execute(self: pw.Database, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
        if verb in CONTROL:
            if verb == "COMMIT":
                commits[0] += 1
        else:
            statements[verb] += 1
        return execute_sql(self, sql, params, *args, **kwargs)

    def counted_commit(self: pw.Database) -> Any:
        commits[0] += 1
        return commit(self)

    pw.Database.execute_sql = counted_execute  # type: ignore[method-assign]
    pw.Database.commit = counted_commit  # type: ignore[method-assign]

    def report() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = {
            "statements": dict(statements),
            "statements_total": sum(statements.values()),
            "commits": commits[0],
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
        stats_file.write_text(json.dumps(stats), encoding="utf-8")

    atexit.register(report)
    from mission_control.cli import main as mc_main

    return mc_main(mc_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

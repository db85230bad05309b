"""`python -m bench.counted STATS_FILE mc-args...`: run `mc` in this process and write what the store saw
and what the process itself spent to STATS_FILE as JSON: SQL statements by kind (savepoints apart),
transactions (outermost ``atomic`` blocks: each one BEGIN ... COMMIT), and this process's own CPU seconds
(RUSAGE_SELF: the controller, not the workers it starts).

The counting wraps peewee's ``Database.execute_sql`` and ``_transaction.__enter__`` from outside; nothing
in Mission Control knows it is being counted.
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

CONTROL = ("BEGIN", "RELEASE", "ROLLBACK", "COMMIT")


def main(argv: list[str]) -> int:
    stats_file, mc_args = Path(argv[0]), argv[1:]
    statements: collections.Counter[str] = collections.Counter()
    transactions = [0]
    execute_sql, enter = pw.Database.execute_sql, pw._transaction.__enter__

    def counted_execute(self: pw.Database, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        statement = sql.split(";", 1)[1] if sql.startswith("BEGIN TRANSACTION") else sql  # BEGIN sent along
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        if verb not in CONTROL:
            statements[verb] += 1
        return execute_sql(self, sql, params, *args, **kwargs)

    def counted_enter(self: Any) -> Any:
        if self.db.transaction_depth() == 0:
            transactions[0] += 1
        return enter(self)

    pw.Database.execute_sql = counted_execute  # type: ignore[method-assign]
    pw._transaction.__enter__ = counted_enter  # type: ignore[method-assign]

    def report() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = {
            "statements": dict(statements),
            "statements_total": sum(n for verb, n in statements.items() if verb != "SAVEPOINT"),
            "transactions": transactions[0],
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "cpu_user_s": usage.ru_utime,
            "cpu_system_s": usage.ru_stime,
        }
        stats_file.write_text(json.dumps(stats), encoding="utf-8")

    atexit.register(report)
    from mission_control.cli import main as mc_main

    return mc_main(mc_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

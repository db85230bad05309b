"""The store layer: everything that talks SQL lives in this package.

* :mod:`.models`: the tables;
* :mod:`.connection`: opening the database, its clock and id, wake-ups between controllers;
* :mod:`.migration`: the schema and bringing it up to date;
* :mod:`.transactions`: one retried transaction per state change, cached single-row statements;
* :mod:`.queries`: the loop's queries, as named functions;
* :mod:`.views`: what the CLI (and the board) read, as plain dicts.

The layers above (the loop, the facade, the CLI) call these functions and hold no queries.
"""


class StoreError(Exception):
    """The database cannot be opened or used; the message is one line for the user."""


_MASKING = ("cannot rollback - no transaction is active", "cannot commit - no transaction is active")


def database_problem(exc: BaseException) -> str:
    """What went wrong with the database, in one line. SQLite rolls a transaction back by itself when
    a commit fails (a full disk, say), and the driver's own rollback then fails with "cannot rollback -
    no transaction is active"; the failure that caused it is the one worth telling."""
    while any(text in str(exc) for text in _MASKING) and exc.__context__ is not None:
        exc = exc.__context__
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "database or disk is full" in first:
        first += " (free some space on the disk that holds the database)"
    return first

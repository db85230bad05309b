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

"""The store's tables as peewee models, bound to one database proxy that :mod:`.connection` opens.

The store knows nothing above it. Timestamps are float epoch seconds (portable and cheap to
compare); JSON lists are stored as text.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import peewee as pw

from mission_control.text import utf8_safe

STATUSES = ("todo", "in_progress", "in_review", "done", "needs_input")
VERDICTS = ("pass", "fail", "uncertain")
ACTIVE = ("in_progress", "in_review")

db = pw.DatabaseProxy()


def storable(value: Any) -> Any:
    """Text as every store can keep it: lone surrogates (from JSON escapes like ``\\ud800``) become U+FFFD
    and NUL (which PostgreSQL refuses) becomes the two characters ``\\0``. Anything else as it is."""
    if not isinstance(value, str):
        return value
    if "\x00" in value:
        value = value.replace("\x00", "\\0")
    return utf8_safe(value)


class Text(pw.TextField):
    """A text column that stores any Python string (see :func:`storable`): text from tickets and agents
    is untrusted, and one unstorable character must not crash the controller on every restart."""

    def db_value(self, value: Any) -> Any:
        return super().db_value(storable(value))


class Char(pw.CharField):
    """A short text column with the same guarantee as :class:`Text`."""

    def db_value(self, value: Any) -> Any:
        return super().db_value(storable(value))


class BaseModel(pw.Model):
    id: pw.AutoField[int]  # the implicit primary key, declared for type checkers (``Meta`` keys by ``key``)

    class Meta:
        database = db
        legacy_table_names = False


class Meta(BaseModel):
    """Key/value facts about the database itself (its id, schema version, flags)."""

    key = Char(primary_key=True, max_length=64)
    value = Text()


class Ticket(BaseModel):
    # NULL only inside the transaction that inserts the ticket (new_ticket gives it its key): a str to readers.
    key = cast("pw.CharField[str]", Char(max_length=40, unique=True, null=True))
    title = Text()
    body = Text(default="")
    repo = Text(null=True)
    worker = Char(max_length=64, default="default")
    branch = Text(null=True)
    status = Char(max_length=16, default="todo", index=True)
    review_cycles = pw.IntegerField(default=0)
    death_count = pw.IntegerField(default=0)
    attempts = pw.IntegerField(default=0)
    max_cost_usd = pw.DoubleField(null=True)  # this ticket's spend budget (None: its profile's, if any)
    done_sha = Char(max_length=40, null=True)
    # Reviewer feedback waiting for the next dispatch (JSON {"sha", "reasons", "gaps"}).
    pending_feedback = Text(null=True)
    # The controller responsible for the ticket's in-flight work, and the fencing token of its claim.
    claimed_by = pw.IntegerField(null=True, index=True)
    claim_token = pw.IntegerField(default=0)
    operator_checked = pw.BooleanField(default=False)
    created_at = pw.DoubleField(default=time.time)
    updated_at = pw.DoubleField(default=time.time)
    worktree = Text(null=True)  # where its runs work (removed when done, for repo tickets)
    # The tracker item it was made from (``github:acme/app#12``, see mc_hooks.work): one ticket per item.
    source = Char(max_length=255, null=True, unique=True)
    source_url = Text(null=True)  # where a person reads that item

    class Meta:
        indexes = ((("status", "id"), False), (("status", "operator_checked"), False))

    def __str__(self) -> str:
        return self.key or f"#{self.id}"


class Comment(BaseModel):
    ticket_id: pw.IntegerField[int]  # the foreign key's raw value, declared for type checkers
    ticket = pw.ForeignKeyField(Ticket, backref="comments", on_delete="CASCADE")
    author = Char(max_length=64)
    body = Text()
    created_at = pw.DoubleField(default=time.time)


class ShadowReview(BaseModel):
    ticket_id: pw.IntegerField[int]  # the foreign key's raw value, declared for type checkers
    ticket = pw.ForeignKeyField(Ticket, backref="reviews", on_delete="CASCADE")
    done_sha = Char(max_length=40)
    verdict = Char(max_length=16)
    reasons_json = Text(default="[]", column_name="reasons")
    gaps_json = Text(default="[]", column_name="gaps")
    reviewer = Char(max_length=64, default="reviewer")
    created_at = pw.DoubleField(default=time.time, index=True)
    attempt = pw.IntegerField(null=True)  # the worker attempt whose sha it judged (None: recorded by hand)
    session = Text(null=True)  # what the reviewer's agent CLI reported about its run
    cost_usd = pw.DoubleField(null=True)
    input_tokens = pw.IntegerField(null=True)
    output_tokens = pw.IntegerField(null=True)
    turns = pw.IntegerField(null=True)

    class Meta:
        indexes = ((("ticket", "done_sha"), False),)

    @property
    def reasons(self) -> list[str]:
        return json.loads(self.reasons_json)

    @property
    def gaps(self) -> list[str]:
        return json.loads(self.gaps_json)


class Event(BaseModel):
    """The audit trail: who (host or plugin name) decided what, about which ticket, when."""

    ticket_id: pw.IntegerField[int | None]  # the foreign key's raw value, declared for type checkers

    ticket = pw.ForeignKeyField(Ticket, backref="events", null=True, on_delete="CASCADE")
    action = Char(max_length=64)
    actor = Char(max_length=128)
    # report (a worker or reviewer said something), action (an automatic decision),
    # veto, manual (a person's command), error (a plugin or the host failed).
    kind = Char(max_length=16, default="action")
    detail = Text(default="")
    created_at = pw.DoubleField(default=time.time, index=True)
    # Structured facts per action, as JSON (see mc_hooks.events); None on events that carry none.
    data_json = Text(null=True, column_name="data")

    @property
    def data(self) -> dict[str, Any]:
        """The event's structured facts (``{}`` when it has none)."""
        return json.loads(self.data_json) if self.data_json else {}


class HealthSnapshot(BaseModel):
    created_at = pw.DoubleField(default=time.time, index=True)
    data = Text()


class ControllerProcess(BaseModel):
    """A running `mc run` / `mc operator` process (its lease), for recovery of what it leaves behind.

    Not the facade :class:`mission_control.controller.Controller`: this is one row per process."""

    host = Char(max_length=255)
    pid = pw.IntegerField()
    proc_start = Char(max_length=32, default="")
    started_at = pw.DoubleField(default=time.time)
    heartbeat_at = pw.DoubleField(default=time.time)
    stopped_at = pw.DoubleField(null=True)

    class Meta:
        table_name = "controller"


class WorkerRun(BaseModel):
    """One attempt of one ticket. (ticket, attempt) keys its effect: applied exactly once."""

    ticket_id: pw.IntegerField[int]  # the foreign key's raw value, declared for type checkers

    ticket = pw.ForeignKeyField(Ticket, backref="runs", on_delete="CASCADE")
    attempt = pw.IntegerField()
    profile = Char(max_length=64)
    session = Char(max_length=64)
    controller = pw.IntegerField(null=True)
    token = pw.IntegerField(default=0)
    host = Char(max_length=255, default="")
    pid = pw.IntegerField(null=True)
    proc_start = Char(max_length=32, default="")
    started_at = pw.DoubleField(default=time.time)
    ended_at = pw.DoubleField(null=True, index=True)
    exit_code = pw.IntegerField(null=True)
    signal = pw.IntegerField(null=True)
    timed_out = pw.BooleanField(default=False)
    log_path = Text(default="")
    # running -> done | died (the report, stored before anything acts on it)
    outcome = Char(max_length=16, default="running", index=True)
    done_sha = Char(max_length=40, null=True)
    death_reason = Text(null=True)
    log_tail = Text(null=True)
    feedback = Text(null=True)
    applied_at = pw.DoubleField(null=True)
    review_pid = pw.IntegerField(null=True)
    review_starts = pw.IntegerField(default=0)
    review_stage = pw.IntegerField(default=0)  # the review stage running or next (0: the first)
    review_spent_usd = pw.DoubleField(null=True)  # what its passed review stages cost
    base_sha = Char(max_length=40, null=True)  # the branch head when the worker started
    review_proc_start = Char(max_length=32, default="")
    workdir = Text(null=True)  # where it ran (the ticket's worktree or scratch directory)
    # What an agent preset's CLI reported: its session (resumed by the next run), spend and turns.
    agent_session = Text(null=True)
    cost_usd = pw.DoubleField(null=True)
    input_tokens = pw.IntegerField(null=True)
    output_tokens = pw.IntegerField(null=True)
    turns = pw.IntegerField(null=True)
    leftovers = Text(null=True)  # uncommitted changes left beside a new commit (git status lines)

    def review_output(self, stage: int | None = None) -> Path:
        """Where the stdout of review stage ``stage`` (default: the run's current one) goes, beside the
        worker's log: ``<attempt>.review.log`` for the first stage, ``<attempt>.review-<n>.log`` after."""
        stage = self.review_stage if stage is None else stage
        name = f"{self.attempt}.review.log" if stage == 0 else f"{self.attempt}.review-{stage + 1}.log"
        return Path(self.log_path).with_name(name)

    class Meta:
        indexes = ((("ticket", "attempt"), True), (("outcome", "applied_at"), False))


class Escalation(BaseModel):
    """A ticket handed to a person; ``notified_at`` is when ``on_escalate`` first reached a plugin with it."""

    ticket_id: pw.IntegerField[int]  # the foreign key's raw value, declared for type checkers

    ticket = pw.ForeignKeyField(Ticket, backref="escalations", on_delete="CASCADE")
    owner = Char(max_length=64)
    reason = Text()
    actor = Char(max_length=128)
    created_at = pw.DoubleField(default=time.time)
    notified_at = pw.DoubleField(null=True, index=True)


class Delivery(BaseModel):
    """A ticket's done work handed back to its tracker (``deliver_work``): where it is, which commit was
    delivered last, its state, and which feedback and answers from there were acted on (each once)."""

    ticket_id: pw.IntegerField[int]  # the foreign key's raw value, declared for type checkers

    ticket = pw.ForeignKeyField(Ticket, backref="deliveries", on_delete="CASCADE", unique=True)
    plugin = Char(max_length=128)
    url = Text(default="")
    ref = Text(default="")
    sha = Char(max_length=40)
    # open, merged, closed; pending: nothing delivered yet, only answers seen
    state = Char(max_length=16, default="open", index=True)
    seen_json = Text(default="[]", column_name="seen")  # ids of feedback and answers acted on
    created_at = pw.DoubleField(default=time.time)
    updated_at = pw.DoubleField(default=time.time)

    @property
    def seen(self) -> list[str]:
        return list(json.loads(self.seen_json))


MODELS: tuple[type[BaseModel], ...] = (
    Meta,
    Ticket,
    Comment,
    ShadowReview,
    Event,
    HealthSnapshot,
    ControllerProcess,
    WorkerRun,
    Escalation,
    Delivery,
)

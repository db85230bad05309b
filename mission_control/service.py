"""People's actions: the one place the CLI, the board and plugins go to add, edit, comment on, answer,
requeue, stop or set a ticket, record a verdict by hand, and flip the kill-switch.

Each action validates what it is given (a :class:`Refused` with one line naming the field and what was
expected), checks that the caller may act (a person's change is refused from inside a run: see
``guard``), records the actor and the event in one transaction through the controller facade, and
wakes the controllers. The callers only parse their input and print or render the result.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw

from mc_hooks import events
from mc_hooks.work import WorkItem
from mission_control import mc_orchestrator_flags as flags
from mission_control import worktrees
from mission_control.config import Config
from mission_control.controller import Controller, short
from mission_control.store import audit, queries, sources
from mission_control.store.connection import notify_controllers, wait_for_locks_at_most
from mission_control.store.models import STATUSES, VERDICTS, Ticket, storable
from mission_control.store.transactions import write

TICKET_FIELDS = ("title", "body", "repo", "worker", "branch", "max_cost_usd")
SHA_DIGITS = "0123456789abcdef"
MAX_TEXT = 4 << 20  # characters of a title, body, comment or answer
MAX_TITLE = 300  # characters of a title taken from a tracker


class Refused(Exception):
    """The action cannot be taken as asked; the message says why, in one line."""


def _no_guard(what: str) -> None:
    """Anyone may act (a plugin, a test)."""


@dataclass
class Service:
    """People's actions, taken as ``actor`` (``mc:alice`` at the terminal, ``board:alice`` on the board).

    ``guard(what)`` raises :class:`Refused` when the caller may not make a person's change (the CLI's
    refuses from inside a run or a controller, by the process tree)."""

    config: Config
    actor: str
    guard: Callable[[str], None] = _no_guard
    controller: Controller = field(init=False)

    def __post_init__(self) -> None:
        self.controller = Controller(self.config, actor=self.actor, manual=True)

    # -- reading ---------------------------------------------------------------------------------

    def ticket(self, key: str) -> Ticket:
        """The ticket ``key`` (any case), or Refused naming it."""
        found = self.controller.ticket(key)
        if found is None:
            raise Refused(f"no ticket {key!r} (see `mc ticket list`)")
        return found

    # -- tickets ---------------------------------------------------------------------------------

    def ticket_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A new ticket's fields (:data:`TICKET_FIELDS`) checked and normalised, or Refused naming the
        first wrong one."""
        unknown = sorted(set(values) - set(TICKET_FIELDS))
        if unknown:
            raise Refused(f"unknown field {unknown[0]!r} (expected {', '.join(sorted(TICKET_FIELDS))})")
        fields: dict[str, Any] = {"title": _required("title", values.get("title"))}
        fields["body"] = _text("body", values.get("body")) or ""
        worker = values.get("worker") or "default"
        if not isinstance(worker, str) or worker not in self.config.workers:
            profiles = ", ".join(self.config.workers)
            raise Refused(f"worker: expected one of the profiles in {self.config.file} ({profiles}), got {worker!r}")
        fields["worker"] = worker
        repo = values.get("repo")
        if repo is not None:
            if not isinstance(repo, str) or not Path(repo).expanduser().is_dir():
                raise Refused(f"repo: expected an existing directory, got {repo!r}")
            fields["repo"] = str(Path(repo).expanduser().resolve())
            if worktrees.head(fields["repo"]) is None:
                raise Refused(f"repo: expected a git repository with a commit (its runs get a clone), got {repo!r}")
        branch = values.get("branch")
        if branch is not None:
            valid = isinstance(branch, str) and not branch.startswith("-")
            if not valid or worktrees.git(".", "check-ref-format", "--branch", branch).returncode != 0:
                raise Refused(f"branch: expected a valid git branch name, got {branch!r}")
            fields["branch"] = branch
        if values.get("max_cost_usd") is not None:
            fields["max_cost_usd"] = budget(values["max_cost_usd"])
        return fields

    def add(self, values: Mapping[str, Any]) -> Ticket:
        """A new ticket from ``values`` (:meth:`ticket_fields`)."""
        return self.add_many([self.ticket_fields(values)], "added by hand")[0]

    def add_many(self, rows: Iterable[Mapping[str, Any]], why: str) -> list[Ticket]:
        """New tickets from checked fields (:meth:`ticket_fields`), all in one transaction (a tracker's
        item: ``why`` is followed by its ``source``)."""
        rows = list(rows)
        added = write(lambda: [self.controller.add_ticket(fields, _why(why, fields)) for fields in rows])
        notify_controllers()
        return added

    def edit(self, key: str, title: str | None = None, body: str | None = None) -> Ticket:
        """Change the ticket's title or body; a run under way keeps the prompt it started with, the
        next one gets the new text."""
        self.guard("ticket edit")
        ticket = self.ticket(key)
        fields: dict[str, Any] = {}
        if title is not None:
            fields["title"] = _required("title", title)
        if body is not None:
            fields["body"] = _text("body", body)
        if not fields:
            raise Refused("ticket edit: nothing to change (give --title, --body or both)")
        changed = sorted(name for name, value in fields.items() if getattr(ticket, name) != value)

        def change() -> None:
            self.controller.edit(ticket, **fields)
            self.controller.record(
                ticket, events.EDITED, f"edited: {', '.join(changed) or 'nothing changed'}", data={"fields": changed}
            )

        write(change)
        return ticket

    def comment(self, key: str, text: str) -> Ticket:
        """Add a person's comment."""
        ticket = self.ticket(key)
        body = _required("comment", text)
        write(lambda: self.controller.comment(ticket, body, author=self.actor.split(":", 1)[-1]))
        return ticket

    def take_work_items(self, items: Iterable[WorkItem]) -> list[str]:
        """A tracker's items as tickets (see ``list_work_items``): new open items are added, all in one
        transaction (one ticket per ``item.source``, whichever controller sees it first); a known one that
        has not started takes the new title and body; a closed one stops its unfinished ticket. Returns what
        was done, a few words per item."""
        items = list({item.source: item for item in items}.values())  # the last word on each item
        known = sources.tickets_by_source([item.source for item in items])
        new = [self._fields_of(item) for item in items if item.source not in known and item.open]
        done: list[str] = []
        if new:
            try:
                added = self.add_many(new, "from a tracker")
            except pw.IntegrityError:  # another controller added one of them a moment ago: one by one
                added = []
                for fields in new:
                    with contextlib.suppress(pw.IntegrityError):
                        added.extend(self.add_many([fields], "from a tracker"))
            done.extend(f"{ticket.source}: added {ticket.key}" for ticket in added)
        for item in items:
            ticket = known.get(item.source)
            changed = self._update_from(ticket, item) if ticket is not None else None
            if changed:
                done.append(f"{item.source}: {changed}")
        return done

    def _fields_of(self, item: WorkItem) -> dict[str, Any]:
        title = " ".join(storable(item.title).split())[:MAX_TITLE] or "(untitled)"
        body = storable(item.body)[:MAX_TEXT]
        return {"title": title, "body": body, "repo": item.repo, "source": item.source, "source_url": item.url or None}

    def _update_from(self, known: Ticket, item: WorkItem) -> str | None:
        if not item.open:
            if known.status not in ("todo", "in_progress", "in_review"):
                return None
            self.stop(known.key, why=f"{item.source} was closed" + (f" by {item.closed_by}" if item.closed_by else ""))
            return f"stopped {known.key}"
        fields = self._fields_of(item)
        if (
            known.status == "todo"
            and known.attempts == 0
            and (known.title, known.body) != (fields["title"], fields["body"])
        ):
            self.edit(known.key, title=fields["title"], body=fields["body"])
            return f"updated {known.key}"
        return None

    def answer(self, key: str, text: str, also: Callable[[], object] | None = None) -> Ticket:
        """Answer a ticket waiting for a person: it goes back to its worker, in the same agent session,
        with the person's words and the reason it was escalated under their own heading in the next
        prompt; its review cycles and deaths count from zero again, as for any requeue by hand. ``also``
        runs in the same transaction (a tracker's answer is marked seen with it)."""
        self.guard("ticket answer")
        ticket = self.ticket(key)
        words = _required("answer", text)
        if ticket.status != "needs_input":
            raise Refused(
                f"{ticket.key} is {ticket.status}: only a ticket waiting for a person (needs_input) can be "
                "answered; add a comment instead (`mc ticket comment`)"
            )
        escalated = audit.escalations(ticket.id)
        reason = escalated[-1].reason if escalated else ""
        person = self.actor.split(":", 1)[-1]
        pending = json.loads(ticket.pending_feedback) if ticket.pending_feedback else {}
        feedback = {**pending, "answer": {"text": words, "by": person, "escalated": reason}}

        def answer() -> None:
            if also is not None:
                also()
            self.controller.comment(ticket, words, author=person)
            self.controller.record(ticket, events.ANSWER, f"answered: {short(words)}", data={"by": person})
            self.controller.requeue_by_hand(ticket, f"answered by {person}", pending_feedback=json.dumps(feedback))

        write(answer)
        notify_controllers()
        return ticket

    def set_status(
        self, key: str, status: str, done_sha: str | None = None, max_cost_usd: Any = None, why: str = "set by hand"
    ) -> Ticket:
        """Move the ticket to ``status`` by hand (``todo`` is a requeue: from ``needs_input`` its review
        cycles and deaths count from zero again); a run under way for it is stopped, not a death."""
        self.guard("ticket set")
        ticket = self.ticket(key)
        if status not in STATUSES:
            raise Refused(f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
        fields: dict[str, Any] = {}
        if done_sha:
            fields["done_sha"] = sha_of(done_sha, "--done-sha")
        if max_cost_usd is not None:
            fields["max_cost_usd"] = budget(max_cost_usd)
        if status == "todo":
            write(lambda: self.controller.requeue_by_hand(ticket, why, **fields))
        else:
            write(lambda: self.controller.set_status(ticket, status, why, **fields))
        notify_controllers()
        # A tracker's ticket keeps its clone and agent session while its delivery may send it back.
        removable = status == "done" and ticket.repo and not ticket.source and not self.config.keep_worktrees
        if removable and worktrees.remove(self.config.root, ticket.key, ticket.repo):  # after commit, as the loop does
            write(lambda: queries.forget_worktree(ticket.id))
        return ticket

    def stop(self, key: str, why: str | None = None) -> Ticket:
        """Stop the ticket's run now and park it with its owner (``needs_input``): the controller that
        runs it stops it at once, and its end is not counted as a death."""
        self.guard("ticket stop")
        ticket = self.ticket(key)
        if ticket.status not in ("todo", "in_progress", "in_review"):
            raise Refused(f"{ticket.key} is {ticket.status}: there is nothing to stop")
        person = self.actor.split(":", 1)[-1]
        why = why or f"stopped by {person}"

        def stop() -> None:
            self.controller.record(ticket, events.STOPPED, why, data={"by": person})
            self.controller.set_status(ticket, "needs_input", why)

        write(stop)
        notify_controllers()
        return ticket

    # -- reviews ---------------------------------------------------------------------------------

    def record_verdict(
        self, key: str, sha: str, verdict: str, reasons: list[str], gaps: list[str], reviewer: str | None = None
    ) -> Ticket:
        """A verdict on ``sha`` recorded by a person, as the shadow reviewer's would be."""
        self.guard("review record")
        ticket = self.ticket(key)
        if verdict not in VERDICTS:
            raise Refused(f"verdict: expected one of {', '.join(VERDICTS)}, got {verdict!r}")
        full = sha_of(sha, "--sha")
        by = reviewer or self.actor
        write(lambda: self.controller.record_review(ticket, full, verdict, list(reasons), list(gaps), by))
        notify_controllers()
        return ticket

    # -- the kill-switch -------------------------------------------------------------------------

    def killswitch_on(self, reason: str = "", stop_runs: bool = False, store: bool = True) -> str | None:
        """Engage the kill-switch: this root's file at once (every controller here stops at its next
        look, whatever the store is doing), then the store's flag and its event, for every host. With
        ``stop_runs`` the runs under way are stopped too (back to todo, not deaths). Returns None, or
        why the store could not be told (the file still holds)."""
        who = self.actor.split(":", 1)[-1]
        info = {**flags.killswitch_info(who, reason), **({"stop_runs": True} if stop_runs else {})}
        flags.write_killswitch_file(self.config.root, info)
        if not store:
            return None
        wait_for_locks_at_most(1.0)
        write(lambda: self.controller.engage_killswitch(reason, who=who, stop_runs=stop_runs), attempts=2)
        notify_controllers()
        return None

    def killswitch_off(self, store: bool = True) -> bool:
        """Release the kill-switch (file and store flag) while holding the store's write lock, so every
        automatic action commits either before the change or after it. Returns whether it was engaged."""
        if not store:  # no store yet: nothing to check the caller against; only the file is released
            return flags.release_killswitch(self.config.root)
        self.guard("killswitch off")
        changed = write(self.controller.release_killswitch)
        notify_controllers()
        return bool(changed)


def _why(why: str, fields: Mapping[str, Any]) -> str:
    return f"from {fields['source']}" if fields.get("source") else why


def _required(name: str, value: Any) -> str:
    """A non-empty text a person gave, checked (Refused otherwise)."""
    checked = _text(name, value, required=True)
    assert checked is not None
    return checked


def _text(name: str, value: Any, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise Refused(f"{name}: expected {'a non-empty' if required else 'a'} string")
    if "\x00" in value:  # PostgreSQL cannot store it, and no tracker needs it
        raise Refused(f"{name}: expected text without NUL characters")
    if len(value) > MAX_TEXT:
        raise Refused(f"{name}: expected at most {MAX_TEXT} characters, got {len(value)}")
    return value


def budget(value: Any) -> float:
    """A spend budget given by a person: a finite amount of US dollars above 0."""
    try:
        amount = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        amount = math.nan
    if not math.isfinite(amount) or amount <= 0:
        raise Refused(f"max_cost_usd: expected an amount of US dollars above 0, got {value!r}")
    return amount


def sha_of(value: str, what: str) -> str:
    """``value`` as a lowercase sha (7 to 40 hex digits), or Refused naming ``what``."""
    lowered = value.lower() if isinstance(value, str) else ""
    if not 7 <= len(lowered) <= 40 or any(ch not in SHA_DIGITS for ch in lowered):
        raise Refused(f"{what}: expected 7 to 40 hex digits, got {value!r}")
    return lowered

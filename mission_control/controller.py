"""The controller facade: the one way plugins (and manual commands) change tickets.

Every write is one transaction (part of the caller's when it already holds one: a plugin's hook call
runs in a savepoint of its own) and writes its audit event under the current actor: the plugin being
called, ``host``, or the person at the CLI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mc_hooks import events
from mc_hooks.manager import PluginFailed
from mission_control import mc_orchestrator_flags as flags
from mission_control import mirrors, shadow_reviewer, worktrees
from mission_control.config import Config
from mission_control.facade_reads import TicketReads
from mission_control.store import audit, deferred, queries
from mission_control.store.models import (
    STATUSES,
    Comment,
    Event,
    Ticket,
    db,
)
from mission_control.store.transactions import after_commit, atomic, insert_row, one_transaction, update_row, write

RELEASED = ("todo", "done", "needs_input")


@dataclass(frozen=True)
class Death:
    """How a worker ended without a DONE sentinel (what ``on_worker_death`` receives)."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    log_tail: str
    reason: str

    @classmethod
    def of(cls, reason: str, exit_code: int | None = None, signal: int | None = None, timed_out: bool = False) -> Death:
        """A death for ``reason`` (the log tail is added when it is stored)."""
        return cls(exit_code, signal, timed_out, "", reason)


def short(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for event details."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class Controller(TicketReads):
    """What a plugin may do to tickets, and what it may read.

    :param config: the validated config.
    :param hooks: the plugin host's hook relay (the decision hooks); None where no plugins are loaded.
        Effect hooks (``on_ticket_event``, ``on_escalate``) are delivered after commit by
        :mod:`mission_control.effects`, which the host plugs in as ``effects``.
    :param actor: who acts when no plugin is being called.
    :param manual: True when a person drives this facade (events are of kind ``manual``).
    """

    def __init__(self, config: Config, hooks: Any = None, actor: str = "host", manual: bool = False) -> None:
        self.config = config
        self.hooks = hooks
        self.actor = actor
        self.manual = manual
        self.cluster_killswitch: dict[str, Any] | None = None
        self.on_record: Callable[[Ticket | None, Event], None] | None = None  # e.g. `mc run` narrating
        # Called once something is committed, for the effect hooks: `mc run` wakes its delivery threads,
        # a one-shot command or a test delivers there and then (see mission_control.effects).
        self.effects: Callable[[], object] | None = None

    # -- context -------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The MC root (the directory holding config.yaml)."""
        return self.config.root

    @property
    def owner(self) -> str:
        """Who escalations go to (``escalation.owner``)."""
        return self.config.owner

    @property
    def owner_title(self) -> str:
        """The owner as written in messages (``Elmar``)."""
        return self.config.owner_title

    def verified_repository(self, ticket: Ticket) -> Path | None:
        """Mission Control's verified copy of the ticket's branch, where a DONE claim is checked: a bare
        git repository holding exactly what the ticket's runs committed (hashed on arrival, no replace
        refs, no configuration a run wrote), its branch at the latest such commit. None for a ticket
        that works without git."""
        if not ticket.branch:
            return None
        path = self.config.root / "worktrees" / f"{ticket.key}.git"
        return path if path.is_dir() else None

    def repository_env(self, url: str) -> dict[str, str]:
        """What git needs to reach ``url`` (``repository_env`` of the plugin that knows it; ``{}`` when
        none does). For the controller's own git commands only."""
        found = self.hooks.repository_env(url=url, controller=self) if self.hooks else None
        return dict(found or {})

    def refresh_mirror(self, ticket: Ticket) -> None:
        """For a ticket that names its repository by URL, bring this root's mirror of it up to date (see
        :mod:`mission_control.mirrors`); nothing for a local one. WorkspaceError when it cannot be read."""
        if ticket.repo and mirrors.is_url(ticket.repo):
            mirrors.update(self.config.root, ticket.repo, self.repository_env(ticket.repo))

    def push_done_work(self, ticket: Ticket, url: str, branch: str) -> None:
        """Push the ticket's verified done commit to ``branch`` at ``url`` (a fast-forward), from Mission
        Control's verified repository with its own git configuration only, credentials from
        ``repository_env`` for this command alone. WorkspaceError (one line) when it cannot."""
        verified = self.verified_repository(ticket)
        if verified is None or not ticket.done_sha:
            raise worktrees.WorkspaceError(f"{ticket.key} has no verified commit to push")
        env = self.repository_env(url)
        pushed = worktrees.own_git(verified, "push", "-q", url, f"{ticket.done_sha}:refs/heads/{branch}", env=env)
        if pushed.returncode != 0:
            detail = " ".join((pushed.stderr or pushed.stdout).split())[:300] or f"exit {pushed.returncode}"
            raise worktrees.WorkspaceError(f"push of {branch} to {mirrors.without_credentials(url)} failed: {detail}")

    def plugin_config(self, name: str | None = None) -> Mapping[str, Any]:
        """A plugin's own config section (default: the plugin being called)."""
        return self.config.plugins.get(name or self.actor, {})

    def killswitch_active(self) -> bool:
        """Whether the kill-switch is engaged: this MC root's file or environment, or the cluster
        flag in the store as of the controller's last look (each tick). Fails closed."""
        return self.cluster_killswitch is not None or flags.killswitch_active(self.config.root)

    def refresh_cluster_killswitch(self) -> None:
        """Look at the store's cluster-wide kill-switch flag (the loop does this every tick)."""
        self.cluster_killswitch = flags.cluster_killswitch()

    @contextmanager
    def plugin_scope(self, plugin: str, hook: str) -> Iterator[None]:
        """Run a plugin's hook call as one transaction, attributed to the plugin."""
        previous, self.actor = self.actor, plugin
        try:
            with atomic():
                yield
        finally:
            self.actor = previous

    def record_plugin_error(self, plugin: str, hook: str, error: BaseException, ticket: Ticket | None) -> None:
        """Write an error event naming the plugin and hook that raised (its own transaction when the
        hook was called outside one)."""
        detail = f"{plugin} raised in {hook}: {type(error).__name__}: {error}"
        facts = {"plugin": plugin, "hook": hook}
        if db.in_transaction():
            self.record(ticket, events.PLUGIN_ERROR, detail, kind="error", actor=plugin, data=facts)
        else:
            write(lambda: self.record(ticket, events.PLUGIN_ERROR, detail, kind="error", actor=plugin, data=facts))

    # -- writes --------------------------------------------------------------------------------

    def record(
        self,
        ticket: Ticket | None,
        action: str,
        detail: str = "",
        kind: str | None = None,
        actor: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an event to the audit trail (``on_ticket_event`` plugins are handed it once it is
        committed, see :mod:`mission_control.effects`). ``action`` is one of :mod:`mc_hooks.events` for the
        host's own events; ``data`` its structured facts. Inside a transaction the row is inserted when it
        commits, with the rest of its events (see ``store.deferred``)."""
        event = Event(
            ticket=ticket.id if ticket is not None else None,
            action=action,
            actor=actor or self.actor,
            kind=kind or ("manual" if self.manual else "action"),
            detail=detail,
            created_at=time.time(),
            data_json=json.dumps(dict(data)) if data else None,
        )
        deferred.add_event(
            (event.ticket_id, event.action, event.actor, event.kind, event.detail, event.created_at, event.data_json)
        )
        if self.on_record is not None:
            self.on_record(ticket, event)
        if self.effects is not None:
            after_commit(self.effects)

    def _update(self, ticket: Ticket, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        update_row(Ticket, ticket.id, **fields)
        for name, value in fields.items():
            setattr(ticket, name, value)

    def comment(self, ticket: Ticket, body: str, author: str | None = None) -> None:
        """Add a comment to the ticket (author: the current actor unless given)."""
        with one_transaction():
            insert_row(Comment, ticket=ticket.id, author=author or self.actor, body=body, created_at=time.time())
            self._update(ticket)

    def set_status(self, ticket: Ticket, status: str, why: str = "", **fields: Any) -> None:
        """Move the ticket to ``status`` and record why.

        Moving to ``done`` resets ``death_count`` (the ticket completed). Leaving the active states
        releases the controller's claim. A person's change also bumps the claim token, so a worker
        still running for the old claim is stopped and its report not applied over the change.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        previous = ticket.status
        if status == "done":
            fields.update(death_count=0, pending_feedback=None, operator_checked=False)
        if status in RELEASED:
            fields["claimed_by"] = None
        if self.manual:
            fields["claim_token"] = ticket.claim_token + 1
            fields["claimed_by"] = None
        with one_transaction():
            self._update(ticket, status=status, **fields)
            detail = f"{previous} -> {status}" + (f": {why}" if why else "")
            self.record(ticket, events.STATUS, detail, data={"from": previous, "to": status})

    def complete(self, ticket: Ticket, why: str = "") -> None:
        """Mark the ticket done (the host default for a DONE)."""
        self.set_status(ticket, "done", why or f"done at {ticket.done_sha or 'no sha'}")

    def count_death(self, ticket: Ticket) -> int:
        """Add one to ``death_count`` in the store and return the new count. Counted by the database,
        not in memory, so a transaction retried after a deadlock or a busy store counts the death once."""
        with one_transaction():
            ticket.death_count = queries.add_to_counter(ticket, "death_count")
        return ticket.death_count

    def count_review_cycle(self, ticket: Ticket) -> int:
        """Add one to ``review_cycles`` and return the new count."""
        with one_transaction():
            ticket.review_cycles = queries.add_to_counter(ticket, "review_cycles")
        return ticket.review_cycles

    def redispatch(self, ticket: Ticket, feedback: Mapping[str, Any] | None = None, why: str = "") -> None:
        """Send the ticket back to its worker profile and session, with optional reviewer feedback.

        ``feedback`` (``{"sha", "reasons", "gaps"}``) is appended to the next prompt.
        """
        pending = json.dumps(dict(feedback)) if feedback else None
        self.set_status(ticket, "todo", why or "sent back to worker", pending_feedback=pending)

    def escalate(self, ticket: Ticket, reason: str) -> None:
        """Hand the ticket to the owner: ``needs_input``, the reason as a comment, an escalation
        record, and ``on_escalate`` for notification plugins once the change is committed."""
        with one_transaction():
            if ticket.status != "needs_input":
                self.set_status(ticket, "needs_input", f"escalated to {self.owner}")
            self.comment(ticket, reason)
            self._tell_owner(ticket, reason, events.ESCALATE, f"to {self.owner}")
        if not db.in_transaction():
            self.deliver_effects()

    def _tell_owner(self, ticket: Ticket, reason: str, action: str, what: str) -> None:
        """Record an escalation with its event; ``on_escalate`` is handed it once it is committed."""
        audit.new_escalation(ticket.id, self.owner, reason, self.actor)
        self.record(ticket, action, f"{what}: {short(reason)}", data={"owner": self.owner})

    def deliver_effects(self) -> None:
        """Something was committed: hand it to the effect hooks (see ``effects``)."""
        if self.effects is not None:
            self.effects()

    def notify_owner(self, ticket: Ticket, reason: str) -> None:
        """Tell the owner (``on_escalate``, once committed) without parking the ticket."""
        self._tell_owner(ticket, reason, "notify", self.owner)

    def edit(self, ticket: Ticket, **fields: Any) -> None:
        """Change a ticket's ``title`` and/or ``body`` (a person's edit; the caller records why)."""
        unknown = set(fields) - {"title", "body"}
        if unknown:
            raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
        with one_transaction():
            self._update(ticket, **fields)

    def engage_killswitch(self, reason: str, who: str | None = None, stop_runs: bool = False) -> None:
        """Engage the kill-switch for every host by ``who`` (default: the current actor): the store's flag
        and its event, in one transaction, and nothing outside the store (a crash before the commit
        leaves nothing engaged; the commit engages it everywhere at once). Only a person (`mc killswitch
        off`) releases it."""
        info = {**flags.killswitch_info(who or self.actor, reason), **({"stop_runs": True} if stop_runs else {})}
        detail = "engaged" + (" (runs under way stopped)" if stop_runs else "") + (f": {reason}" if reason else "")
        with one_transaction():
            flags.set_cluster_killswitch(info)
            self.record(None, events.KILLSWITCH, detail, data={"engaged": True, "reason": reason})
        self.cluster_killswitch = info

    def release_killswitch(self) -> bool:
        """Release the kill-switch (this root's file and the store's flag); a person's act. Returns
        whether it was engaged."""
        had_file = flags.release_killswitch(self.config.root)
        had_flag = flags.cluster_killswitch() is not None
        flags.set_cluster_killswitch(None)
        self.cluster_killswitch = None
        self.record(None, events.KILLSWITCH, "released", data={"engaged": False, "reason": ""})
        return had_file or had_flag

    def add_ticket(self, fields: Mapping[str, Any], why: str) -> Ticket:
        """Store a new ticket (its key is given in the same transaction) and record ``why``."""
        with one_transaction():
            ticket = queries.new_ticket(self.config.ticket_prefix, **fields)
            self.record(
                ticket, events.CREATED, why, data={"source": fields["source"]} if fields.get("source") else None
            )
        return ticket

    def requeue_by_hand(self, ticket: Ticket, why: str = "set by hand", **fields: Any) -> None:
        """A person sends the ticket back to todo. From ``needs_input`` it starts with a fresh
        budget: review cycles and deaths count from zero again."""
        if ticket.status == "needs_input":
            fields.update(review_cycles=0, death_count=0)
        self.set_status(ticket, "todo", why, **fields)

    def record_review(
        self, ticket: Ticket, sha: str, verdict: str, reasons: list[str], gaps: list[str], reviewer: str
    ) -> None:
        """A verdict on ``sha`` recorded by a person (`mc review record`), as the shadow reviewer's
        would be: the next harvest of that sha applies it."""
        with one_transaction():
            shadow_reviewer.store_verdict(ticket.id, sha, verdict, reasons, gaps, reviewer=reviewer)
            detail = f"{verdict} for {sha[:12]} recorded by hand"
            self.record(ticket, events.REVIEW, detail, kind="report", data={"verdict": verdict, "sha": sha})

    def apply_death(self, ticket: Ticket, death: Death) -> None:
        """The one death path (the loop's and :meth:`treat_as_death`'s): count the death in the store,
        let ``on_worker_death`` decide (retry, or escalate at the limit), and by default hand the
        ticket to the owner. A plugin that fails while deciding parks the ticket with the owner."""
        self.count_death(ticket)
        try:
            handled = self.hooks.on_worker_death(ticket=ticket, death=death, controller=self) if self.hooks else None
        except PluginFailed as failure:
            self.escalate(ticket, f"{failure}. Needs {self.owner_title} decision.")
            return
        if not handled:
            self.set_status(ticket, "needs_input", f"worker died ({death.reason})")
            self.comment(ticket, "Worker died unexpectedly.")

    def treat_as_death(self, ticket: Ticket, reason: str) -> None:
        """Count a worker's claimed DONE as a dead worker (``reason`` says why): recorded as
        ``rejected_done``, then the death path as for any death."""
        self.record(ticket, events.REJECTED_DONE, reason, data={"attempt": None, "reason": reason})
        self.apply_death(ticket, Death.of(reason))

"""Hook specifications: the public contract between Mission Control and its plugins.

Signatures and docstrings only. Arguments are always passed by keyword, so an implementation
may accept any subset of them; new arguments may be added, existing ones never change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mc_hooks import hookspec

if TYPE_CHECKING:
    from mission_control.controller import Controller, Death
    from mission_control.store.models import Event, ShadowReview, Ticket


@hookspec(firstresult=True)
def before_auto_action(action: str, ticket: Ticket | None, controller: Controller) -> str | None:
    """Ask whether an automatic action may go ahead.

    Stops at first non-None result. A non-empty string vetoes the action and is its reason.
    A plugin that raises counts as a veto (fail closed).

    :param action: one of ``dispatch``, ``review``, ``harvest``, ``reopen``.
    :param ticket: the ticket the action concerns, or None for a loop-wide check.
    :param controller: the host facade.
    :return: a veto reason, or None to allow.
    """


@hookspec(firstresult=True)
def before_operator_reopen(ticket: Ticket, reason: str, controller: Controller) -> str | None:
    """Ask whether the operator may reopen a done ticket it judged a weak completion.

    Stops at first non-None result. A non-empty string keeps the ticket done and is the reason.
    A plugin that raises counts as a veto (fail closed).

    :param ticket: the done ticket.
    :param reason: why the operator judged the completion weak.
    :param controller: the host facade.
    :return: a veto reason, or None to allow the reopen.
    """


@hookspec(firstresult=True)
def verify_done_claim(ticket: Ticket, done_sha: str, base_sha: str | None, controller: Controller) -> str | None:
    """Check a worker's claim to be done before anything acts on it, and before a review is paid for.

    Called when the worker's run has ended, outside any transaction. Stops at the first non-empty
    string, which refuses the claim: the run counts as a dead worker with that reason (and
    ``on_worker_death`` decides). A plugin that raises refuses the claim (fail closed).

    :param ticket: the ticket the worker ran for (``repo``, ``branch`` and ``worktree`` say where).
    :param done_sha: the commit the worker reported (or, for an agent preset, its branch's new head).
    :param base_sha: the commit the ticket's branch pointed at when the run started, or None.
    :param controller: the host facade.
    :return: why the claim does not hold, or None to accept it.
    """


@hookspec(firstresult=True)
def on_done_sentinel(ticket: Ticket, done_sha: str, review: ShadowReview | None, controller: Controller) -> bool | None:
    """A worker reported ``DONE: <sha>``; decide what happens to the ticket.

    Stops at first non-None result. Everything one implementation does through ``controller``
    commits or rolls back as one transaction. If it raises, its changes roll back and the
    ticket goes to ``needs_input`` with the error.

    :param ticket: the ticket the worker ran for.
    :param done_sha: the commit the worker reported.
    :param review: the shadow review of ``done_sha``, or None when the reviewer is disabled.
    :param controller: the host facade.
    :return: True when handled; None leaves the host default (mark the ticket done).
    """


@hookspec(firstresult=True)
def on_worker_death(ticket: Ticket, death: Death, controller: Controller) -> bool | None:
    """A worker ended without a ``DONE`` sentinel; decide what happens to the ticket.

    Stops at first non-None result. ``ticket.death_count`` already includes this death.
    If an implementation raises, its changes roll back and the ticket goes to ``needs_input``.

    :param ticket: the ticket the worker ran for.
    :param death: exit code, signal, timed-out flag and the tail of the worker's log.
    :param controller: the host facade.
    :return: True when handled; None leaves the host default
        (status ``needs_input``, comment "Worker died unexpectedly.").
    """


@hookspec
def on_escalate(ticket: Ticket, reason: str, owner: str, controller: Controller) -> None:
    """A ticket was escalated to a person; notify them. An *effect hook*: called after the escalation
    committed, outside any transaction, from a thread of the implementation's own (see
    ``mission_control.effects``), at least once (again after a controller crash between the commit and
    the call) and in order per ticket. One that raises is recorded and retried with backoff (1, 2, 4 … s;
    given up after 10 attempts with an ``effect_failed`` event); one that hangs holds up only itself.
    What it does through ``controller`` commits on its own.

    :param ticket: the escalated ticket (status ``needs_input``).
    :param reason: why it was escalated.
    :param owner: who it was escalated to (``escalation.owner``).
    :param controller: the host facade.
    """


@hookspec
def on_ticket_event(ticket: Ticket | None, event: Event, controller: Controller) -> None:
    """An event was written to the audit trail (a report, a decision, a veto, an error). An *effect
    hook*, delivered after commit as :func:`on_escalate` is: at least once, in order per ticket, retried
    with backoff, never holding up the loop or another plugin. A plugin is not handed the events it
    recorded itself; what it records reaches every other plugin. To decide something before an action
    (hold a run, say), implement ``before_auto_action`` instead: it runs inside the action's transaction.

    :param ticket: the ticket the event concerns, or None for loop-wide events.
    :param event: ``action`` (one of the constants in :mod:`mc_hooks.events` for the host's own events),
        ``actor``, ``kind`` (report, action, veto, manual, error, host), ``data`` (the action's structured
        facts, as documented beside its constant), ``detail`` (prose for people: never parse it) and
        ``created_at``.
    :param controller: the host facade.
    """

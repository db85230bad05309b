"""Hook specifications: the public contract between Mission Control and its plugins.

Signatures and docstrings only. Arguments are always passed by keyword, so an implementation
may accept any subset of them; new arguments may be added, existing ones never change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mc_hooks import hookspec

if TYPE_CHECKING:
    from mc_hooks.work import Delivered, WorkItem, WorkNews
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


# -- sources and deliveries: work in from a tracker, done work back to it ----------------------------


@hookspec
def list_work_items(controller: Controller) -> list[WorkItem] | None:
    """A source's work items (a tracker's issues): each becomes a ticket, one per ``WorkItem.source``.

    Called by ``mc sync`` and, under ``mc run``, every second from a sync thread of its own, outside any
    transaction. A source paces itself: it returns None when it is not due (its poll interval, a back-off
    after errors) and may list only what changed since it last looked. An item not seen before becomes a
    todo ticket; a known one that has not started takes the new title and body; a closed one stops its
    ticket (a run under way is stopped, not a death) unless it is done. One that raises is recorded, shown
    in ``mc health``, and called again on the next pass; the other sources go on.

    :param controller: the host facade.
    :return: the items, or None when there is nothing to look at now.
    """


@hookspec(firstresult=True)
def deliver_work(ticket: Ticket, controller: Controller) -> Delivered | None:
    """Hand a done ticket's work back to its tracker (push its branch, open a pull request).

    Called after the ticket's review passed and that committed, from the sync thread, for a ticket with
    a ``source``, and again for each new ``done_sha`` (work sent back and done again). The commit is
    ``ticket.done_sha`` in ``controller.verified_repository(ticket)`` (on branch ``ticket.branch`` or
    ``mc/<KEY>``). At least once: a controller killed after the push and before the delivery is
    recorded calls it again, so it must find what it did before (an open pull request for the branch is
    reused, not made twice). One that raises is retried with back-off and the owner is told.

    :param ticket: the done ticket.
    :param controller: the host facade.
    :return: where the work now is, or None when the ticket is not this plugin's.
    """


@hookspec(firstresult=True)
def read_work_news(ticket: Ticket, delivered: Delivered | None, controller: Controller) -> WorkNews | None:
    """What happened in the tracker to a ticket's delivered work, or to a ticket waiting for a person.

    Called from the sync thread for tickets with an open delivery and tickets waiting for a person
    (``needs_input``). The host acts on each feedback and answer id once: feedback on the delivered
    commit sends the ticket back to its agent session with the feedback as gaps (as a failed review
    does, within ``max_review_cycles``); an answer answers the ticket as ``mc ticket answer`` does; a
    merged delivery ends the ticket's work there, a closed one too. A plugin returns only what people
    allowed to act said (never its own comments).

    :param ticket: the ticket.
    :param delivered: its delivery (``url``, ``sha``, ``ref``), or None when nothing was delivered.
    :param controller: the host facade.
    :return: the news, or None when the ticket is not this plugin's or it is not due.
    """


@hookspec(firstresult=True)
def repository_env(url: str, controller: Controller) -> dict[str, str] | None:
    """The environment git needs to reach ``url`` (credentials, as ``GIT_CONFIG_*`` variables): used only
    for Mission Control's own git commands on the controller (the mirror's fetch, a delivery's push),
    never for a run, a file or a log.

    :param url: a repository URL a ticket names.
    :param controller: the host facade.
    :return: variables to add, or None when the URL is not this plugin's.
    """


@hookspec
def doctor_checks(controller: Controller) -> list[tuple[bool, str]] | None:
    """What ``mc doctor`` should say about this plugin's own needs (a token, a service it reaches): one
    line each, with whether it is fine. Called by ``mc doctor`` only, which fails on any ``False``.

    :param controller: the host facade (the store may not exist yet).
    :return: ``(ok, line)`` pairs, or None.
    """


@hookspec
def secret_env(controller: Controller) -> list[str] | None:
    """Names of environment variables that hold this plugin's secrets (a token): no run inherits them
    from the controller, whatever its profile says.

    :param controller: the host facade.
    :return: variable names, or None.
    """

"""What sources and deliveries hand Mission Control (see the ``list_work_items``, ``deliver_work`` and
``read_work_news`` hooks): plain values, so a tracker plugin needs nothing of the host to build them.

Every text here comes from outside (an issue's author, a reviewer, a CI log): the host treats it as
untrusted, as it treats ticket text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATES = ("open", "merged", "closed")


@dataclass(frozen=True)
class WorkItem:
    """One piece of work in a tracker, as a ticket should hold it.

    :param source: the item's stable external id, at most 255 characters, named so no other tracker's
        could be the same (``github:acme/app#12``, ``linear:ENG-42``); one ticket per id, however often it is
        listed.
    :param title: the ticket's title.
    :param body: the ticket's body (Markdown).
    :param url: where a person reads the item (shown by ``mc ticket show`` and the board).
    :param repo: the repository the work is done in: a clone URL (Mission Control keeps a mirror of it
        under its root, so any host can take the ticket) or a local path; None for no repository.
    :param open: False once the item is closed: its ticket is stopped if it has not finished.
    :param closed_by: who closed it, for the record.
    """

    source: str
    title: str
    body: str = ""
    url: str = ""
    repo: str | None = None
    open: bool = True
    closed_by: str = ""


@dataclass(frozen=True)
class Delivered:
    """Done work handed back: where it now is.

    :param url: where a person reviews it (a pull request).
    :param sha: the commit delivered.
    :param ref: the delivery's own id in the tracker (``pull/7``), passed back to ``read_work_news``.
    """

    url: str
    sha: str
    ref: str = ""


@dataclass(frozen=True)
class Feedback:
    """Something to fix in delivered work (a failed check, a change a reviewer asked for).

    :param id: stable: each id is acted on once.
    :param text: what to fix, in full (the check's name, summary and the tail of its output; the file,
        line and comment): it reaches the agent as a gap.
    """

    id: str
    text: str


@dataclass(frozen=True)
class Answer:
    """A person's answer to a ticket waiting for them, given in the tracker.

    :param id: stable: each id is acted on once.
    :param by: who answered (a tracker login; the plugin has checked they may).
    :param text: the answer.
    """

    id: str
    by: str
    text: str


@dataclass(frozen=True)
class WorkNews:
    """What happened to a ticket's work in its tracker since Mission Control last looked.

    :param state: the delivery's state (``open``, ``merged`` or ``closed``), None when nothing is delivered.
    :param sha: the delivered commit the feedback is about (feedback on an older one is not acted on).
    :param feedback: things to fix; all of them go back to the agent together, once.
    :param answers: people's answers, for a ticket waiting for one.
    """

    state: str | None = None
    sha: str | None = None
    feedback: tuple[Feedback, ...] = field(default_factory=tuple)
    answers: tuple[Answer, ...] = field(default_factory=tuple)


class TryLater(Exception):
    """Raised by a source or delivery that must not be called again before ``seconds`` have passed (a
    rate limit's reset, a ``Retry-After``): the host waits at least that long, without counting it as a
    failure of the plugin.

    :param seconds: how long to wait.
    :param why: one line for ``mc health``.
    """

    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds = max(0.0, float(seconds))
        self.why = why

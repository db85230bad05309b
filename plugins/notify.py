"""Notifications: escalations, the circuit breaker's trips and (opt-in) done tickets, sent to people
through apprise URLs (Slack, e-mail, ntfy, Discord, Matrix, a webhook, … : https://github.com/caronc/apprise),
with the reason and a link to the ticket's board page.

It sends from the effect hooks, after commit, so a notification that fails is retried with backoff and
shown in `mc health` (see ``mission_control.effects``), never lost and never holding up a run. Without
``urls`` it sends nothing (`mc doctor` says nobody is told).

    plugins:
      notify:
        urls: ["slack://T000/B000/XXXX", "mailto://user:pass@example.com?to=owner@example.com"]
        board_url: http://mc.example.com:8700    # links to /tickets/<KEY>
        done: true                               # also a ticket that is done (default: false)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mc_hooks import events, hookimpl
from mc_hooks.settings import ConfigError

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.store.models import Event, Ticket

TITLE_CHARS = 120


class NotifyFailed(Exception):
    """No URL took the notification (apprise logs why); the effect hook retries it."""


class Notify:
    """``on_escalate`` (escalations and breaker trips) and ``on_ticket_event`` (done tickets, opt-in)."""

    def __init__(self, settings: Section) -> None:
        self.urls = settings.text_list("urls", []) or []
        self.board_url = settings.text("board_url", "").rstrip("/")
        self.done = settings.flag("done", False)
        self.apprise: Any = None
        if not self.urls:
            return
        try:
            import apprise
        except ImportError:
            raise ConfigError(
                f"{settings.file}: {settings.path}.urls: sending needs apprise: pip install 'mc-hooks[notify]'"
            ) from None
        self.apprise = apprise.Apprise()
        for url in self.urls:
            if not self.apprise.add(url):
                raise ConfigError(f"{settings.file}: {settings.path}.urls: not a URL apprise can send to: {url!r}")

    def link(self, ticket: Ticket) -> str:
        """The ticket's board page, or its key where no ``board_url`` is set."""
        return f"{self.board_url}/tickets/{ticket.key}" if self.board_url else f"`mc ticket show {ticket.key}`"

    def send(self, title: str, body: str) -> None:
        """Send to every URL; NotifyFailed when none took it (the effect hook retries)."""
        if self.apprise is None:
            return
        if not self.apprise.notify(title=title[:TITLE_CHARS], body=body):
            raise NotifyFailed(f"no notification URL took {title[:60]!r}")

    @hookimpl
    def on_escalate(self, ticket: Ticket, reason: str, owner: str) -> None:
        self.send(
            f"{ticket.key} needs {owner}: {ticket.title}",
            f"{reason}\n\nTicket {ticket.key} ({ticket.status}): {self.link(ticket)}\n"
            f'Answer it with `mc ticket answer {ticket.key} "..."`.',
        )

    @hookimpl
    def on_ticket_event(self, ticket: Ticket | None, event: Event) -> None:
        if not self.done or ticket is None or event.action != events.STATUS or event.data.get("to") != "done":
            return
        sha = f" at {ticket.done_sha[:12]}" if ticket.done_sha else ""
        self.send(f"{ticket.key} is done: {ticket.title}", f"Ticket {ticket.key} is done{sha}: {self.link(ticket)}")

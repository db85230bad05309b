"""The sync pass: tickets in from trackers, done work back to them, and what happened to it there.

One pass (``mc sync``, and ``mc run`` every second from a thread of its own) does three things, each
from what the store says now, so a pass interrupted anywhere is made good by the next:

1. **In**: each source's ``list_work_items``; every item becomes or updates its ticket
   (:meth:`Service.take_work_items`).
2. **Out**: every done ticket from a tracker whose done commit was not handed back yet goes to
   ``deliver_work``, after the commit that made it done; the delivery is recorded once it returned.
3. **News**: for open deliveries and tickets waiting for a person, ``read_work_news``: feedback on the
   delivered commit goes to the review policy as a failed review (``on_done_sentinel``: back to the same
   agent session, or to the owner at the limit), answers answer the ticket, merged or closed ends the
   delivery. Each tracker id is acted on once, in the same transaction as its effect.

Plugins are called one by one, outside any transaction, each with a pace of its own: one that raises
waits 1, 2, 4 … s (at most :data:`MAX_BACKOFF`) before it is called again for the same thing, and one
that raises :class:`~mc_hooks.work.TryLater` (a rate limit) waits as long as it asked. Failures show in
``mc health``; a delivery that keeps failing is reported to the owner after :data:`TELL_OWNER_AFTER`
attempts and given up after :data:`MAX_ATTEMPTS` (until the next start).

Under ``mc run``, one controller syncs for the whole store: the oldest with a live lease. Others skip
their passes (N hosts on one store do not ask the trackers N times), and take over when its lease ends.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from mc_hooks import events
from mc_hooks.manager import PluginFailed, PluginHost
from mc_hooks.work import Delivered, WorkItem, WorkNews
from mission_control import faults, shadow_reviewer, worktrees
from mission_control.config import Config
from mission_control.controller import Controller, short
from mission_control.service import Refused, Service
from mission_control.store import queries, sources
from mission_control.store.connection import db_time, notify_controllers
from mission_control.store.models import Delivery, Ticket, db
from mission_control.store.transactions import write

HOOKS = ("list_work_items", "deliver_work", "read_work_news")
MAX_BACKOFF = 300.0
MAX_ATTEMPTS = 10
TELL_OWNER_AFTER = 3
HEALTH_KEY = "sync:failing"
INTERVAL = 1.0  # seconds between passes under `mc run` (the sources pace themselves)
MIN_GAP = 0.5  # seconds, at least, between two passes
SCAN_INTERVAL = 5.0  # seconds between looks at the store for work to hand back and news to read, unless woken


@dataclass
class Pace:
    """When one plugin may next be called for one thing, and why not before. ``waiting`` is a wait the
    plugin asked for (a rate limit), which even a pass run by hand honours."""

    attempts: int = 0
    retry_at: float = 0.0
    error: str = ""
    since: float = 0.0
    waiting: bool = False


@dataclass
class Summary:
    """What one pass did, in a few words per thing (for ``mc sync``)."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Sync:
    """The sync pass of one controller (see the module's docstring)."""

    def __init__(
        self, config: Config, host: PluginHost, clock: Callable[[], float] = time.time, by_hand: bool = False
    ) -> None:
        """``by_hand`` (``mc sync``): call every plugin now, unless it asked to wait (a rate limit), and
        try again what was given up; failures still count, from where the last pass left them."""
        self.config = config
        self.by_hand = by_hand
        self.clock = clock
        self.controller = Controller(config, hooks=host.hook, actor="sync")
        self.impls = {
            hook: [(impl.plugin_name, impl.function, tuple(impl.argnames)) for impl in reversed(_impls(host, hook))]
            for hook in HOOKS
        }
        self.paces: dict[tuple[str, str, int | None], Pace] = {}
        self.loaded = False
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.me: Callable[[], int | None] = lambda: None
        self.health_written = ""

    def __bool__(self) -> bool:
        return any(self.impls.values())

    # -- one pass --------------------------------------------------------------------------------

    def run_once(self, scan: bool = True) -> Summary:
        """One pass: in, and with ``scan`` out and news (see the module's docstring)."""
        summary = Summary()
        if not self.loaded:
            self.paces = stored_paces()
            self.health_written = json.dumps(_health_rows(self.paces), sort_keys=True)
            self.loaded = True
        self.take_items(summary)
        if scan:
            self.deliver(summary)
            self.read_news(summary)
        self.save_health()
        return summary

    def take_items(self, summary: Summary) -> None:
        """Every source's items, as tickets."""
        for plugin, function, argnames in self.impls["list_work_items"]:
            items = self._call(plugin, "list_work_items", None, function, argnames, summary) or ()
            good = [item for item in items if isinstance(item, WorkItem) and 0 < len(item.source) <= 255]
            for item in items:
                if item not in good:
                    summary.failed.append(f"{plugin}: not a WorkItem with a source id: {short(repr(item), 80)}")
            if good:
                summary.done.extend(Service(self.config, actor=plugin).take_work_items(good))

    def deliver(self, summary: Summary) -> None:
        """Hand back every done ticket's work that was not yet, once its commit is done."""
        for ticket in sources.to_deliver():
            for plugin, function, argnames in self.impls["deliver_work"]:
                delivered = self._call(plugin, "deliver_work", ticket, function, argnames, summary)
                if delivered is None:
                    continue
                if isinstance(delivered, Delivered):
                    faults.crash_point("sync:delivered")
                    self._delivered(plugin, ticket, delivered)
                    summary.done.append(f"{ticket.key}: delivered {delivered.url}")
                break

    def read_news(self, summary: Summary) -> None:
        """What happened to delivered work, and answers to tickets waiting for a person."""
        for ticket, delivery in sources.deliveries_to_read():
            delivered = Delivered(delivery.url, delivery.sha, delivery.ref) if delivery and delivery.sha else None
            for plugin, function, argnames in self.impls["read_work_news"]:
                news = self._call(plugin, "read_work_news", ticket, function, argnames, summary, delivered=delivered)
                if isinstance(news, WorkNews):
                    summary.done.extend(self.apply_news(plugin, ticket, delivery, news))
                    break

    # -- applying what plugins said ------------------------------------------------------------------

    def _delivered(self, plugin: str, ticket: Ticket, delivered: Delivered) -> None:
        def record() -> None:
            sources.save_delivery(ticket.id, plugin, delivered.url, delivered.ref, delivered.sha)
            facts = {"plugin": plugin, "url": delivered.url, "sha": delivered.sha}
            detail = f"{delivered.sha[:12]} at {delivered.url}"
            self.controller.record(ticket, events.DELIVERED, detail, actor=plugin, data=facts)

        write(record)

    def apply_news(self, plugin: str, ticket: Ticket, delivery: Delivery | None, news: WorkNews) -> list[str]:
        """Act on what a plugin read, each tracker id once; what was done, in a few words each."""
        done: list[str] = []
        seen = set(delivery.seen) if delivery is not None else set()
        for answer in news.answers:
            if answer.id in seen or ticket.status != "needs_input":
                continue
            service = Service(self.config, actor=f"{plugin}:{answer.by}")
            mark = partial(sources.mark_seen, ticket.id, plugin, [answer.id])
            with contextlib.suppress(Refused):
                service.answer(ticket.key, answer.text, also=mark)
                done.append(f"{ticket.key}: answered by {answer.by}")
            ticket = queries.ticket_by_id(ticket.id)
        if delivery is None or delivery.state != "open":
            return done
        fresh = [item for item in news.feedback if item.id not in seen]
        if fresh and news.sha == delivery.sha == ticket.done_sha and ticket.status == "done":
            self.send_back(plugin, ticket, delivery.sha, fresh)
            done.append(f"{ticket.key}: sent back with {len(fresh)} item(s) of feedback")
        if news.state in ("merged", "closed"):
            self.end_delivery(plugin, ticket, delivery, news.state)
            done.append(f"{ticket.key}: {news.state}")
        return done

    def send_back(self, plugin: str, ticket: Ticket, sha: str, feedback: list[Any]) -> None:
        """Feedback on the delivered commit, as a failed review of it by ``plugin``: the review policy
        (``on_done_sentinel``) sends it back to its agent session or, at its limit, to the owner."""

        def apply() -> None:
            current = queries.ticket_by_id(ticket.id)
            if current.status != "done" or current.done_sha != sha:
                return
            sources.mark_seen(ticket.id, plugin, [item.id for item in feedback])
            gaps = [item.text for item in feedback]
            reasons = [f"{plugin}: {len(gaps)} thing(s) to fix on the delivered commit"]
            review = shadow_reviewer.store_verdict(ticket.id, sha, "fail", reasons, gaps, reviewer=plugin)
            facts = {"plugin": plugin, "sha": sha, "ids": [item.id for item in feedback]}
            self.controller.record(
                current, events.FEEDBACK, f"{len(gaps)} item(s) from {plugin}", actor=plugin, data=facts
            )
            try:
                handled = self.controller.hooks.on_done_sentinel(
                    ticket=current, done_sha=sha, review=review, controller=self.controller
                )
            except PluginFailed as failure:
                self.controller.escalate(current, f"{failure}. Needs {self.controller.owner_title} decision.")
                return
            if not handled:
                self.controller.escalate(current, f"{plugin} reported: {short(gaps[0])}")

        write(apply)
        notify_controllers()

    def end_delivery(self, plugin: str, ticket: Ticket, delivery: Delivery, state: str) -> None:
        """The delivery was merged or closed: nothing more to read, and the ticket's clone and agent
        session, kept for feedback until now, are removed (after commit)."""

        def record() -> None:
            sources.update_delivery(delivery, state=state)
            facts = {"plugin": plugin, "url": delivery.url, "state": state}
            self.controller.record(ticket, events.DELIVERY, f"{state}: {delivery.url}", actor=plugin, data=facts)

        write(record)
        if (
            not self.config.keep_worktrees
            and ticket.repo
            and worktrees.remove(self.config.root, ticket.key, ticket.repo)
        ):
            write(lambda: queries.forget_worktree(ticket.id))
        if state == "merged":  # the next ticket of this repository starts from the merge (best effort)
            with contextlib.suppress(worktrees.WorkspaceError):
                self.controller.refresh_mirror(ticket)

    # -- calling plugins at their own pace ---------------------------------------------------------

    def _call(
        self,
        plugin: str,
        hook: str,
        ticket: Ticket | None,
        function: Callable[..., Any],
        argnames: tuple[str, ...],
        summary: Summary,
        **extra: Any,
    ) -> Any:
        key = (plugin, hook, ticket.id if ticket is not None else None)
        pace = self.paces.get(key)
        now = self.clock()
        if pace is not None and pace.retry_at > now and (pace.waiting or not self.by_hand):
            if self.by_hand:
                summary.failed.append(f"{plugin}.{hook}: waiting {pace.retry_at - now:.0f}s more: {pace.error}")
            return None
        if pace is not None and pace.attempts >= MAX_ATTEMPTS and not self.by_hand:
            return None  # given up: until a person runs `mc sync`
        offered = {"controller": self.controller, "ticket": ticket, **extra}
        self.controller.actor = plugin
        try:
            result = function(*[offered[name] for name in argnames])
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is recorded and paced, never the loop's
            self._failed(key, ticket, exc, now, summary)
            return None
        finally:
            self.controller.actor = "sync"
        if pace is not None:
            del self.paces[key]
        return result

    def _failed(
        self, key: tuple[str, str, int | None], ticket: Ticket | None, exc: Exception, now: float, summary: Summary
    ) -> None:
        plugin, hook, _ = key
        pace = self.paces.setdefault(key, Pace(since=now))
        error = f"{type(exc).__name__}: {exc}"
        seconds = getattr(exc, "seconds", None)
        pace.waiting = seconds is not None
        if seconds is not None:  # TryLater: a rate limit, say; not the plugin's failure
            pace.retry_at = now + float(seconds)
            pace.error = str(exc)
            summary.failed.append(f"{plugin}.{hook}: waiting {float(seconds):.0f}s: {exc}")
            return
        pace.attempts += 1
        pace.retry_at = now + min(2.0 ** (pace.attempts - 1), MAX_BACKOFF)
        summary.failed.append(f"{plugin}.{hook}{f' ({ticket.key})' if ticket else ''}: {short(error, 300)}")
        if pace.error != error:  # recorded when it starts or changes, not at every retry
            pace.error = error
            self.controller.record_plugin_error(plugin, hook, exc, ticket)
        if hook != "deliver_work" or ticket is None:
            return
        if pace.attempts == TELL_OWNER_AFTER:
            reason = f"Handing {ticket.key}'s work back failed {pace.attempts} times: {short(error, 300)}"
            write(lambda: self.controller.notify_owner(ticket, reason))
        if pace.attempts == MAX_ATTEMPTS:
            facts = {"plugin": plugin, "attempts": pace.attempts, "error": short(error, 300)}
            write(
                lambda: self.controller.record(ticket, events.DELIVERY_FAILED, f"given up: {short(error)}", data=facts)
            )

    def failing(self) -> list[dict[str, Any]]:
        """What fails or waits now: ``{"plugin", "hook", "ticket", "attempts", "error", "since", "waiting"}``."""
        return failing_rows(_health_rows(self.paces))

    def save_health(self) -> None:
        """Keep the paces in the store's ``meta`` (written only when they change): ``mc health`` shows
        them, and the next pass, in this process or another, goes on from them."""
        text = json.dumps(_health_rows(self.paces), sort_keys=True)
        if text != self.health_written:
            write(lambda: queries.set_meta(HEALTH_KEY, text if text != "[]" else None))
            self.health_written = text

    # -- under `mc run` ----------------------------------------------------------------------------

    def start(self, me: Callable[[], int | None]) -> None:
        """Run a pass every :data:`INTERVAL` seconds in a thread of its own, looking at the store for work
        to hand back and news to read when woken (this controller committed something: a ticket may be
        done) or every :data:`SCAN_INTERVAL` seconds (another controller's), while controller ``me()`` is
        the one that syncs for the store (:meth:`syncing`)."""
        self.me = me
        self.thread = threading.Thread(target=self._run, name="mc-sync", daemon=True)
        self.thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Stop the thread (a plugin call under way is left to finish: the thread is a daemon)."""
        self.stopping.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(wait)

    def syncing(self) -> bool:
        """Whether this controller is the one that syncs for the store: the oldest whose lease is fresh."""
        mine = self.me()
        fresh_since = db_time() - self.config.lease_seconds
        return mine is not None and queries.syncing_controller(fresh_since) == mine

    def _run(self) -> None:
        woken, next_scan = True, 0.0
        while not self.stopping.is_set():
            now = self.clock()
            scan = woken or now >= next_scan
            try:
                db.connect(reuse_if_open=True)
                if self.syncing():
                    self.run_once(scan=scan)
                    next_scan = now + SCAN_INTERVAL if scan else next_scan
            except Exception:  # noqa: BLE001 - the store is away, say: the next pass tries again
                with contextlib.suppress(Exception):
                    db.close()
            self.stopping.wait(MIN_GAP)  # a busy controller commits all the time: scan at most this often
            woken = self.wake.wait(INTERVAL - MIN_GAP)
            self.wake.clear()
        with contextlib.suppress(Exception):
            db.close()


def _impls(host: PluginHost, hook: str) -> list[Any]:
    return list(getattr(host.pm.hook, hook).get_hookimpls())


def _health_rows(paces: dict[tuple[str, str, int | None], Pace]) -> list[dict[str, Any]]:
    rows = [
        {"plugin": plugin, "hook": hook, "ticket_id": ticket_id, **asdict(pace)}
        for (plugin, hook, ticket_id), pace in paces.items()
    ]
    return sorted(rows, key=lambda row: (row["since"], row["plugin"], row["hook"], row["ticket_id"] or 0))


def stored_paces() -> dict[tuple[str, str, int | None], Pace]:
    """The paces the last pass left in the store (see :meth:`Sync.save_health`)."""
    paces = {}
    for row in _stored_rows():
        try:
            key = (str(row["plugin"]), str(row["hook"]), row.get("ticket_id"))
            paces[key] = Pace(**{name: row[name] for name in ("attempts", "retry_at", "error", "since", "waiting")})
        except (KeyError, TypeError):
            continue
    return paces


def failing_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of paces as people read them: the ticket's key instead of its id."""
    found = []
    for row in rows:
        ticket_id = row.get("ticket_id")
        key = queries.ticket_key(ticket_id) if ticket_id is not None else None
        found.append({**{k: v for k, v in row.items() if k != "ticket_id"}, "ticket": key})
    return found


def _stored_rows() -> list[dict[str, Any]]:
    raw = queries.meta_value(HEALTH_KEY)
    try:
        rows = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def failing_now() -> list[dict[str, Any]]:
    """For ``mc health``: what the sync passes last found failing or waiting."""
    return failing_rows(_stored_rows())

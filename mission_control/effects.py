"""Effect hooks, delivered after commit: ``on_ticket_event`` from the audit trail and ``on_escalate``
from the escalations, each plugin's implementation in a thread of its own, from a cursor of its own.

* **After commit, outside any transaction.** What a plugin is handed has been committed; what it does
  through the controller commits on its own; a slow webhook holds no lock.
* **At least once, in order.** A plugin's cursor (a row of the store's ``meta``) moves past an item only
  once its call returned, so a controller killed between a commit and a delivery (or during one)
  delivers it again after its restart. Items go in the order they were recorded.
* **Never blocking, retried with backoff.** Each implementation has its own thread: one that raises is
  retried after 1, 2, 4 … s (at most :data:`MAX_BACKOFF`), with an error event naming plugin and hook;
  after :data:`MAX_ATTEMPTS` the item is given up with an ``effect_failed`` event, so nothing retries
  forever and a broken plugin never stops its own later items. One that hangs holds only its own thread:
  the loop and every other plugin go on.
* A plugin is not handed the events it recorded itself (a plugin reacting to its own comment would loop);
  what one plugin records reaches every other.

``mc run`` runs the threads and wakes them after each commit; :meth:`EffectHooks.deliver_now` delivers
in the caller's thread (the pytest fixtures, one-shot commands).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mc_hooks import events
from mission_control import faults
from mission_control.store import queries
from mission_control.store.models import Escalation, Event, db
from mission_control.store.transactions import write

# hook name -> the stream of the store it is delivered from
EFFECT_HOOKS = {"on_ticket_event": "events", "on_escalate": "escalations"}
BATCH = 100
MAX_ATTEMPTS = 10
MAX_BACKOFF = 300.0
IDLE_WAIT = 1.0  # seconds a thread waits for a wake-up before it looks anyway


@dataclass
class Cursor:
    """Where one plugin's delivery of one stream stands: everything up to ``position`` was handed over,
    but for the items in ``retries`` (each ``{"id", "ticket", "attempts", "retry_at", "error", "since"}``),
    which failed, or wait behind an earlier failed item of the same ticket."""

    position: int = 0
    retries: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def key(plugin: str, hook: str) -> str:
        return f"effects:{plugin}:{hook}"


def read_cursor(plugin: str, hook: str) -> Cursor | None:
    """The stored cursor of ``plugin``'s ``hook``, or None before its first delivery."""
    raw = queries.meta_value(Cursor.key(plugin, hook))
    if raw is None:
        return None
    try:
        return Cursor(**json.loads(raw))
    except (TypeError, ValueError):
        return Cursor()


def _save(plugin: str, hook: str, cursor: Cursor) -> None:
    queries.set_meta(Cursor.key(plugin, hook), json.dumps(cursor.__dict__))


def _last_id(hook: str) -> int:
    model = Event if EFFECT_HOOKS[hook] == "events" else Escalation
    return int(model.select(model.id).order_by(model.id.desc()).limit(1).scalar() or 0)


def _items(hook: str, after: int) -> list[Any]:
    if EFFECT_HOOKS[hook] == "events":
        return list(Event.select().where(Event.id > after).order_by(Event.id).limit(BATCH))
    return list(Escalation.select().where(Escalation.id > after).order_by(Escalation.id).limit(BATCH))


@dataclass
class Delivery:
    """One plugin's implementation of one effect hook, and its cursor."""

    plugin: str
    hook: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    clock: Callable[[], float] = time.time
    wake: threading.Event = field(default_factory=threading.Event)
    caught_up: threading.Event = field(default_factory=threading.Event)  # its thread found nothing due

    def cursor(self) -> Cursor:
        """The stored cursor; a plugin seen for the first time starts after what is already there."""
        found = read_cursor(self.plugin, self.hook)
        if found is None:
            found = Cursor(position=_last_id(self.hook))
            write(lambda: _save(self.plugin, self.hook, found))
        return found

    def step(self, controller: Any) -> bool:
        """Deliver what is due: first the retries whose time has come, then what is new, in order per
        ticket (an item waits behind a failed one of its ticket; other tickets' items go on). True if any
        item was handed over."""
        cursor = self.cursor()
        now = self.clock()
        handled = False
        blocked: set[Any] = set()
        waiting: list[dict[str, Any]] = []
        for entry in cursor.retries:
            if entry["ticket"] in blocked or entry["retry_at"] > now:
                waiting.append(entry)
                blocked.add(entry["ticket"])
                continue
            item = _item(self.hook, entry["id"])
            if item is None:
                continue  # gone with its ticket
            error = self._call(controller, item)
            if error is None:
                self._delivered(item)
                handled = True
            elif (kept := self._failed(controller, entry, item, error)) is not None:
                waiting.append(kept)
                blocked.add(entry["ticket"])
        if waiting != cursor.retries:
            cursor = Cursor(cursor.position, waiting)
            write(lambda: _save(self.plugin, self.hook, cursor))
        for item in _items(self.hook, cursor.position):
            group, delivered = item.ticket_id, None
            if self.hook == "on_ticket_event" and item.actor == self.plugin:
                pass  # its own event: not handed back to it
            elif group in blocked:  # behind a failed item of its ticket: in order, after it
                waiting.append(_entry(item, attempts=0, retry_at=0.0))
            else:
                faults.crash_point("effects:before-delivery")
                error = self._call(controller, item)
                if error is None:
                    handled, delivered = True, item
                elif (kept := self._failed(controller, _entry(item, 0, 0.0), item, error)) is not None:
                    waiting.append(kept)
                    blocked.add(group)
            cursor = Cursor(item.id, list(waiting))
            self._save_position(cursor, delivered)
        return handled

    def _call(self, controller: Any, item: Any) -> BaseException | None:
        if self.hook == "on_ticket_event":
            ticket = queries.ticket_by_id(item.ticket_id) if item.ticket_id is not None else None
            values = {"ticket": ticket, "event": item, "controller": controller}
        else:
            ticket = queries.ticket_by_id(item.ticket_id)
            values = {"ticket": ticket, "reason": item.reason, "owner": item.owner, "controller": controller}
        previous, controller.actor = controller.actor, self.plugin
        try:
            self.function(*[values[name] for name in self.argnames])
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is recorded and retried, never ours
            return exc
        finally:
            controller.actor = previous
        return None

    def _save_position(self, cursor: Cursor, delivered: Any) -> None:
        def save() -> None:
            _save(self.plugin, self.hook, cursor)
            if delivered is not None:
                self._note_delivered(delivered)

        write(save)

    def _delivered(self, item: Any) -> None:
        write(lambda: self._note_delivered(item))

    def _note_delivered(self, item: Any) -> None:
        if self.hook == "on_escalate":  # the escalation reached someone: when it first did
            Escalation.update(notified_at=self.clock()).where(
                (Escalation.id == item.id) & Escalation.notified_at.is_null()
            ).execute()

    def _failed(self, controller: Any, entry: dict[str, Any], item: Any, error: BaseException) -> dict[str, Any] | None:
        """Record the failure; the entry to retry later, or None once it is given up."""
        attempts = entry["attempts"] + 1
        what = f"{type(error).__name__}: {error}"
        ticket = queries.ticket_by_id(item.ticket_id) if item.ticket_id is not None else None
        if attempts >= MAX_ATTEMPTS:
            detail = f"{self.plugin} gave up on {self.hook} #{item.id} after {attempts} attempts: {what}"
            facts = {"plugin": self.plugin, "hook": self.hook, "item": item.id, "attempts": attempts}
            record = controller.record
            write(lambda: record(ticket, events.EFFECT_FAILED, detail, kind="error", actor=self.plugin, data=facts))
            return None
        controller.record_plugin_error(self.plugin, self.hook, error, ticket)
        delay = min(MAX_BACKOFF, 2.0 ** (attempts - 1))
        since = entry.get("since") or self.clock()
        return {**entry, "attempts": attempts, "retry_at": self.clock() + delay, "error": what[:300], "since": since}


def _entry(item: Any, attempts: int, retry_at: float) -> dict[str, Any]:
    return {
        "id": item.id,
        "ticket": item.ticket_id,
        "attempts": attempts,
        "retry_at": retry_at,
        "error": "",
        "since": None,
    }


def _item(hook: str, item_id: int) -> Any:
    model = Event if EFFECT_HOOKS[hook] == "events" else Escalation
    return model.get_or_none(model.id == item_id)


class EffectHooks:
    """Every effect-hook implementation of a plugin host, delivered after commit."""

    def __init__(self, config: Any, host: Any, make_controller: Callable[[], Any]) -> None:
        """``make_controller()`` builds the facade a delivery thread hands its plugin (one per thread:
        the facade keeps who is acting)."""
        self.config = config
        self.make_controller = make_controller
        self.deliveries = [
            Delivery(impl.plugin_name, hook, impl.function, tuple(impl.argnames))
            for hook in EFFECT_HOOKS
            for impl in reversed(getattr(host.pm.hook, hook).get_hookimpls())
        ]
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.delivering = False

    def __bool__(self) -> bool:
        return bool(self.deliveries)

    def open(self) -> None:
        """Give every plugin met for the first time a cursor at the end of what is there: it is handed
        what happens from now on, not the store's history."""
        for delivery in self.deliveries:
            delivery.cursor()

    def deliver_now(self) -> int:
        """Deliver what is due for every plugin in this thread, until nothing more is (what a plugin
        records is then handed to the others); how many passes handled something. A call made while
        delivering (a plugin's own change committing) leaves it to the pass under way."""
        if self.delivering:
            return 0
        self.delivering = True
        try:
            controller = self.make_controller()
            passes = 0
            while passes < 100 and any([delivery.step(controller) for delivery in self.deliveries]):
                passes += 1
            return passes
        finally:
            self.delivering = False

    def start(self) -> None:
        """A thread per implementation, each delivering whenever woken (and once a second anyway)."""
        for delivery in self.deliveries:
            thread = threading.Thread(
                target=self._run, args=(delivery,), name=f"mc-effects-{delivery.plugin}-{delivery.hook}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def wake(self) -> None:
        """Something was committed: look now."""
        for delivery in self.deliveries:
            delivery.wake.set()

    def drain(self, wait: float) -> bool:
        """Wake every thread and wait up to ``wait`` seconds until each has delivered what is due (a
        failing one counts once its retry is scheduled). True if all caught up."""
        for delivery in self.deliveries:
            delivery.caught_up.clear()
        self.wake()
        deadline = time.monotonic() + wait
        return all(delivery.caught_up.wait(max(0.0, deadline - time.monotonic())) for delivery in self.deliveries)

    def stop(self, wait: float = 2.0) -> None:
        """Stop the threads (one in a plugin's call is left to finish: daemon threads end with the process)."""
        self.stopping.set()
        self.wake()
        deadline = time.monotonic() + wait
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, delivery: Delivery) -> None:
        controller = None
        while not self.stopping.is_set():
            delivery.wake.wait(IDLE_WAIT)
            delivery.wake.clear()
            if self.stopping.is_set():
                break
            try:
                if controller is None:
                    db.connect(reuse_if_open=True)
                    controller = self.make_controller()
                while delivery.step(controller) and not self.stopping.is_set():
                    pass
                delivery.caught_up.set()
            except Exception:  # noqa: BLE001 - the store is away, say: look again at the next wake-up
                with contextlib.suppress(Exception):
                    db.close()
                controller = None
                time.sleep(IDLE_WAIT)
        with contextlib.suppress(Exception):
            db.close()


def failing(plugin: str, hook: str) -> list[dict[str, Any]]:
    """For `mc health`: the items ``plugin``'s ``hook`` failed on and will try again (attempts, error,
    since when)."""
    cursor = read_cursor(plugin, hook)
    return [entry for entry in (cursor.retries if cursor else []) if entry["attempts"]]


def all_failing() -> list[dict[str, Any]]:
    """For `mc health`: every plugin's deliveries that failed and will be tried again, oldest first:
    ``{"plugin", "hook", "item", "ticket", "attempts", "error", "since", "retry_at"}``."""
    from mission_control.store.models import Meta

    found = []
    for row in Meta.select().where(Meta.key.startswith("effects:")):
        _, plugin, hook = str(row.key).split(":", 2)
        try:
            retries = json.loads(row.value).get("retries") or []
        except (ValueError, AttributeError):
            continue
        for entry in retries:
            if entry.get("attempts"):
                ticket = queries.ticket_by_id(entry["ticket"]) if entry.get("ticket") is not None else None
                key = ticket.key if ticket is not None else None
                found.append({"plugin": plugin, "hook": hook, "item": entry.get("id"), "ticket_key": key, **entry})
    return sorted(found, key=lambda entry: entry.get("since") or 0.0)

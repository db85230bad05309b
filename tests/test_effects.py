"""Effects after commit (issue 27): ``on_ticket_event`` and ``on_escalate`` are handed what was committed,
outside any transaction, at least once and in order per ticket, retried with backoff, never blocking the
loop or each other, and again after a controller is killed between a commit and a delivery."""

from __future__ import annotations

import textwrap
import time
from typing import Any

import pytest
from test_plugin_faults_e2e import with_plugins

from conftest import McRoot
from mc_hooks import hookimpl
from mc_hooks.manager import load_plugins
from mission_control.controller import Controller
from mission_control.effects import MAX_ATTEMPTS, Delivery, EffectHooks, read_cursor
from mission_control.store.models import Event
from mission_control.store.transactions import write


class Flaky:
    """Fails its first ``failures`` calls, then notes every escalation it is handed."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def on_escalate(self, ticket: Any, reason: str) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the pager is down")
        self.seen.append((ticket.key, reason))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def delivery_of(host: Any, hook: str, clock: Clock) -> Delivery:
    impl = next(i for i in getattr(host.pm.hook, hook).get_hookimpls() if i.plugin_name != "review_loop")
    return Delivery(impl.plugin_name, hook, impl.function, tuple(impl.argnames), clock=clock)


def test_a_failed_delivery_is_retried_with_backoff_and_handed_over_once(mc_controller, make_ticket) -> None:
    flaky, clock = Flaky(failures=2), Clock()
    host = load_plugins(mc_controller.config, extra=[("pager", flaky)])
    delivery = delivery_of(host, "on_escalate", clock)
    delivery.cursor()
    facade = Controller(mc_controller.config, hooks=host.hook)
    ticket = make_ticket(title="stuck")
    facade.escalate(ticket, "needs a decision")

    assert delivery.step(facade) is False and flaky.seen == []  # failed once: retried in 1 s
    clock.now += 0.5
    assert delivery.step(facade) is False  # not yet
    clock.now += 0.6
    assert delivery.step(facade) is False  # failed again: retried in 2 s
    clock.now += 2.1
    assert delivery.step(facade) is True
    assert delivery.step(facade) is False
    assert flaky.seen == [(ticket.key, "needs a decision")]
    errors = [e.detail for e in Event.select().where(Event.action == "plugin_error")]
    assert len(errors) == 2 and all("pager raised in on_escalate" in e for e in errors)
    assert read_cursor("pager", "on_escalate").retries == []


def test_a_delivery_that_always_fails_is_given_up_with_an_event_not_retried_forever(mc_controller, make_ticket) -> None:
    flaky, clock = Flaky(failures=10**6), Clock()
    host = load_plugins(mc_controller.config, extra=[("pager", flaky)])
    delivery = delivery_of(host, "on_escalate", clock)
    delivery.cursor()
    facade = Controller(mc_controller.config, hooks=host.hook)
    facade.escalate(make_ticket(), "needs a decision")
    for _ in range(MAX_ATTEMPTS):
        delivery.step(facade)
        clock.now += 1000
    assert read_cursor("pager", "on_escalate").retries == []
    gave_up = Event.get(Event.action == "effect_failed")
    assert gave_up.actor == "pager" and f"after {MAX_ATTEMPTS} attempts" in gave_up.detail


def test_a_failing_ticket_holds_back_only_its_own_later_items(mc_controller, make_ticket) -> None:
    class PickyPager:
        seen: list[str] = []

        @hookimpl
        def on_escalate(self, ticket: Any, reason: str) -> None:
            if ticket.title == "broken" and reason == "first":
                raise RuntimeError("cannot page about this one yet")
            self.seen.append(f"{ticket.title}: {reason}")

    pager, clock = PickyPager(), Clock()
    host = load_plugins(mc_controller.config, extra=[("pager", pager)])
    delivery = delivery_of(host, "on_escalate", clock)
    delivery.cursor()
    facade = Controller(mc_controller.config, hooks=host.hook)
    broken, fine = make_ticket(title="broken"), make_ticket(title="fine")
    facade.escalate(broken, "first")
    facade.escalate(broken, "second")
    facade.escalate(fine, "other")
    delivery.step(facade)
    assert pager.seen == ["fine: other"]  # the other ticket went on; "second" waits behind "first"


def test_what_one_plugin_records_in_an_effect_hook_reaches_the_others_after_commit(mc_controller, make_ticket) -> None:
    class Pager:
        @hookimpl
        def on_escalate(self, ticket: Any, controller: Any) -> None:
            controller.record(ticket, "note", "paged the owner")

    class Recorder:
        details: list[str] = []

        @hookimpl
        def on_ticket_event(self, event: Any) -> None:
            self.details.append(f"{event.actor}: {event.action}")

    recorder = Recorder()
    host = load_plugins(mc_controller.config, extra=[("pager", Pager()), ("recorder", recorder)])
    facade = Controller(mc_controller.config, hooks=host.hook)
    effects = EffectHooks(facade.config, host, lambda: Controller(facade.config, hooks=host.hook))
    effects.open()
    facade.effects = effects.deliver_now

    def escalate_in_a_transaction() -> None:
        facade.escalate(make_ticket(), "needs a decision")
        assert recorder.details == []  # nothing is handed over before the commit

    write(escalate_in_a_transaction)
    assert "pager: note" in recorder.details and "host: escalate" in recorder.details


NOTIFIER = textwrap.dedent("""
    from pathlib import Path
    from mc_hooks import hookimpl

    @hookimpl
    def on_escalate(ticket, reason):
        with open(Path(__file__).with_name("outbox.txt"), "a") as out:
            out.write(f"{ticket.key}: {reason}\\n")
""")

HANGS = textwrap.dedent("""
    import time
    from mc_hooks import hookimpl

    @hookimpl
    def on_ticket_event(event):
        time.sleep(3600)
""")


@pytest.mark.slow
def test_an_escalation_committed_before_a_controller_is_killed_is_delivered_once_after_restart(
    mc_root: McRoot,
) -> None:
    env = with_plugins(mc_root, notifier=NOTIFIER)
    mc_root.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    mc_root.write_config()
    mc_root.mc("run", "--until-idle", env=mc_root.env(**env))  # the notifier's cursor starts here
    key = mc_root.add("dies", "die")
    crashed = mc_root.mc(
        "run", "--until-idle", check=False, env=mc_root.env(**env, MC_CRASH_AT="effects:before-delivery")
    )
    assert crashed.returncode == -9  # killed between the escalation's commit and its delivery
    outbox = mc_root.path / "outbox.txt"
    assert not outbox.exists()
    assert mc_root.show(key)["status"] == "needs_input"

    mc_root.mc("run", "--until-idle", env=mc_root.env(**env))

    assert outbox.read_text().splitlines() == [f"{key}: Worker died once. Needs Elmar to review."]
    assert mc_root.show(key)["escalations"][0]["notified_at"]


@pytest.mark.slow
def test_an_effect_hook_that_hangs_delays_nothing_else(mc_root: McRoot) -> None:
    env = with_plugins(mc_root, hangs=HANGS, notifier=NOTIFIER)
    keys = [mc_root.add(f"work {n}", "uncertain") for n in range(3)]
    started = time.monotonic()
    mc_root.mc("run", "--until-idle", env=mc_root.env(**env))
    took = time.monotonic() - started
    assert all(t["status"] == "needs_input" for t in mc_root.show_all(keys))
    lines = (mc_root.path / "outbox.txt").read_text().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(keys)  # the other plugin was not held up
    assert took < 30, took

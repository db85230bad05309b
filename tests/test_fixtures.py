"""The pytest fixtures plugin authors get (mc_hooks.testing) drive each built-in hookimpl directly."""

from __future__ import annotations

import json

import pytest

from mc_hooks.manager import PluginFailed
from mission_control import mc_orchestrator_flags as flags
from mission_control.controller import Death
from mission_control.store.models import Comment, ShadowReview


def review(ticket, sha: str, verdict: str, reasons=("r1",), gaps=("g1",)) -> ShadowReview:
    return ShadowReview.create(
        ticket=ticket.id,
        done_sha=sha,
        verdict=verdict,
        reasons_json=json.dumps(list(reasons)),
        gaps_json=json.dumps(list(gaps)),
    )


def test_make_ticket_stores_the_given_fields(make_ticket, mc_controller) -> None:
    ticket = make_ticket(status="done", review_cycles=1)
    stored = mc_controller.ticket(ticket.key)
    assert (stored.status, stored.review_cycles, stored.key) == ("done", 1, "MC-1")


def test_operator_guard_vetoes_a_ticket_the_review_loop_judged(mc_hook, mc_controller, make_ticket) -> None:
    ticket = make_ticket(status="done", review_cycles=1, done_sha="abcdef1")
    veto = mc_hook.before_operator_reopen(ticket=ticket, reason="weak", controller=mc_controller)
    assert "review loop already judged it" in veto and veto.plugin == "operator_guard"


def test_operator_guard_vetoes_a_passed_done_sha(mc_hook, mc_controller, make_ticket) -> None:
    ticket = make_ticket(status="done", done_sha="abcdef1")
    review(ticket, "abcdef1", "pass")
    assert "shadow review passed abcdef1" in mc_hook.before_operator_reopen(
        ticket=ticket, reason="weak", controller=mc_controller
    )


def test_operator_guard_allows_an_unjudged_ticket(mc_hook, mc_controller, make_ticket) -> None:
    ticket = make_ticket(status="done", done_sha="abcdef1")
    review(ticket, "1234567", "pass")  # a pass for another sha does not count
    assert mc_hook.before_operator_reopen(ticket=ticket, reason="weak", controller=mc_controller) is None


def test_killswitch_vetoes_while_the_file_exists(mc_hook, mc_controller, make_ticket) -> None:
    ticket = make_ticket()
    assert mc_hook.before_auto_action(action="dispatch", ticket=ticket, controller=mc_controller) is None
    flags.engage_killswitch(mc_controller.root, who="test")
    assert (
        mc_hook.before_auto_action(action="dispatch", ticket=ticket, controller=mc_controller) == "kill-switch engaged"
    )
    assert mc_hook.before_auto_action(action="harvest", ticket=None, controller=mc_controller)


def test_review_loop_fail_sends_back_with_feedback(mc_hook, mc_controller, make_ticket) -> None:
    ticket = make_ticket(status="in_review", done_sha="abcdef1")
    verdict = review(ticket, "abcdef1", "fail", reasons=("untested",), gaps=("add a test",))
    assert mc_hook.on_done_sentinel(ticket=ticket, done_sha="abcdef1", review=verdict, controller=mc_controller)
    stored = mc_controller.refresh(ticket)
    assert (stored.status, stored.review_cycles) == ("todo", 1)
    assert json.loads(stored.pending_feedback) == {"sha": "abcdef1", "reasons": ["untested"], "gaps": ["add a test"]}
    assert "untested" in Comment.get(Comment.ticket == ticket.id).body


def test_review_loop_leaves_pass_to_the_host(mc_hook, mc_controller, make_ticket) -> None:
    ticket = make_ticket(status="in_review", done_sha="abcdef1")
    verdict = review(ticket, "abcdef1", "pass")
    assert mc_hook.on_done_sentinel(ticket=ticket, done_sha="abcdef1", review=verdict, controller=mc_controller) is None
    assert mc_hook.on_done_sentinel(ticket=ticket, done_sha="abcdef1", review=None, controller=mc_controller) is None


def test_dead_worker_retry_escalates_at_max_deaths(mc_hook, mc_controller, make_ticket) -> None:
    ticket = make_ticket(status="in_progress", death_count=2)
    death = Death(1, None, False, "tail", "exit 1")
    assert mc_hook.on_worker_death(ticket=ticket, death=death, controller=mc_controller)
    stored = mc_controller.refresh(ticket)
    assert stored.status == "needs_input"
    assert [c.body for c in stored.comments] == ["Worker died twice. Needs Elmar to review."]
    assert [e.owner for e in mc_controller.escalations(stored)] == ["elmar"]


def test_a_plugin_that_raises_in_on_done_sentinel_rolls_back_its_changes(
    mc_plugin_manager, mc_controller, make_ticket
) -> None:
    class Broken:
        from mc_hooks import hookimpl

        @hookimpl(tryfirst=True)
        def on_done_sentinel(self, ticket, controller):
            controller.comment(ticket, "half-written")
            raise RuntimeError("boom")

    from mc_hooks.manager import load_plugins

    host = load_plugins(mc_controller.config, extra=[("broken", Broken())])
    ticket = make_ticket(status="in_review", done_sha="abcdef1")
    try:
        host.hook.on_done_sentinel(ticket=ticket, done_sha="abcdef1", review=None, controller=mc_controller)
    except PluginFailed as exc:
        assert (exc.plugin, exc.hook) == ("broken", "on_done_sentinel")
    else:
        raise AssertionError("PluginFailed was not raised")
    assert list(mc_controller.refresh(ticket).comments) == []
    assert mc_plugin_manager.call_order("on_done_sentinel") == ["review_loop"]


def test_a_hook_called_without_a_declared_argument_is_a_host_error_naming_the_call_site(
    mc_hook, mc_controller, make_ticket
) -> None:
    from mc_hooks.manager import HookCallError
    from mission_control.store.models import Event

    site = r"test_fixtures\.py:\d+: before_auto_action\(\) called with missing ticket"
    with pytest.raises(HookCallError, match=site):
        mc_hook.before_auto_action(action="dispatch", controller=mc_controller)
    assert not Event.select().where(Event.action == "plugin_error").exists()  # no plugin is blamed


def test_a_rejected_done_goes_down_the_same_death_path_as_a_dead_worker(mc_controller, make_ticket) -> None:
    ticket = make_ticket(status="in_progress", death_count=0)
    mc_controller.treat_as_death(ticket, "claimed a commit that does not exist")
    stored = mc_controller.refresh(ticket)
    assert stored.death_count == 1 and stored.status == "todo"  # dead_worker_retry's first retry
    mc_controller.treat_as_death(stored, "claimed a commit that does not exist")
    assert mc_controller.refresh(ticket).status == "needs_input"  # the second death escalates

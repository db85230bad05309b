"""A plugin that raises never stops the loop: it is recorded by plugin and hook, vetoes fail closed,
decisions roll back to needs_input, and other notification plugins are still called."""

from __future__ import annotations

import textwrap

import pytest

from conftest import McRoot, each_store

pytestmark = pytest.mark.slow  # end-to-end: real `mc` processes (CI runs them; `-m 'not slow'` skips)

RAISES_EVERYWHERE = textwrap.dedent("""
    from mc_hooks import hookimpl

    @hookimpl
    def before_auto_action(action):
        raise RuntimeError("veto check broke")

    @hookimpl
    def before_operator_reopen(ticket):
        raise RuntimeError("guard broke")

    @hookimpl(tryfirst=True)
    def on_done_sentinel(ticket, controller):
        controller.comment(ticket, "half-done work that must roll back")
        raise RuntimeError("decision broke")

    @hookimpl(tryfirst=True)
    def on_worker_death(ticket, controller):
        controller.comment(ticket, "half-done work that must roll back")
        raise RuntimeError("death handler broke")

    @hookimpl(tryfirst=True)
    def on_escalate(ticket):
        raise RuntimeError("pager broke")
""")

AFTER_ESCALATE = textwrap.dedent("""
    from mc_hooks import hookimpl

    @hookimpl(trylast=True)
    def on_escalate(ticket, controller):
        controller.comment(ticket, "second notifier still called")
""")


def with_plugins(mc: McRoot, **modules: str) -> dict[str, str]:
    for name, source in modules.items():
        (mc.path / f"{name}.py").write_text(source, encoding="utf-8")
        mc.config["plugins"][name] = {"enabled": True}
    mc.write_config()
    return {"PYTHONPATH": str(mc.path)}


def test_before_auto_action_that_raises_fails_closed_and_names_plugin_and_hook(mc_root: McRoot) -> None:
    broken = "from mc_hooks import hookimpl\n@hookimpl\ndef before_auto_action(action):\n    raise RuntimeError('x')\n"
    env = with_plugins(mc_root, broken_veto=broken)
    key = mc_root.add("must not run")
    mc_root.run(**env)
    ticket = mc_root.show(key)
    assert (ticket["status"], mc_root.agent_runs(key)) == ("todo", 0)
    errors = [e for e in ticket["events"] if e["kind"] == "error"]
    assert errors and errors[0]["actor"] == "broken_veto" and "raised in before_auto_action" in errors[0]["detail"]


@each_store
def test_on_done_sentinel_that_raises_rolls_back_and_parks_the_ticket(mc_root: McRoot) -> None:
    source = RAISES_EVERYWHERE.replace(
        '@hookimpl\ndef before_auto_action(action):\n    raise RuntimeError("veto check broke")\n', ""
    )
    env = with_plugins(mc_root, broken=source, second=AFTER_ESCALATE)
    done_key, dead_key = mc_root.add("reports done", "pass"), mc_root.add("dies", "die")
    mc_root.run(**env)
    for key, hook in ((done_key, "on_done_sentinel"), (dead_key, "on_worker_death")):
        ticket = mc_root.show(key)
        bodies = [c["body"] for c in ticket["comments"]]
        assert ticket["status"] == "needs_input", ticket
        assert "half-done work that must roll back" not in bodies
        assert any(f"plugin broken failed in {hook}" in b for b in bodies)
        assert "second notifier still called" in bodies  # on_escalate: the next plugin still ran
        actors_hooks = {(e["actor"], e["detail"].split(":")[0]) for e in ticket["events"] if e["kind"] == "error"}
        assert ("broken", f"broken raised in {hook}") in actors_hooks
        assert ("broken", "broken raised in on_escalate") in actors_hooks

"""Kill-switch (MC-4304 part C): while engaged (this host's `.mc_killswitch` or `MC_KILLSWITCH=1`, or
the store's cluster flag), every automatic action is vetoed. Manual `mc` commands never ask, so
they keep working."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mc_hooks import hookimpl

if TYPE_CHECKING:
    from mc_hooks.settings import Section
    from mission_control.controller import Controller
    from mission_control.store.models import Ticket


class KillSwitch:
    """``before_auto_action``: veto dispatch, review, harvest and reopen while engaged."""

    def __init__(self, settings: Section) -> None:
        pass

    @hookimpl
    def before_auto_action(self, action: str, ticket: Ticket | None, controller: Controller) -> str | None:
        if controller.killswitch_active():
            return "kill-switch engaged"
        return None

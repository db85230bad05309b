"""pytest fixtures for plugin authors (registered through the ``pytest11`` entry point).

They build a real MC root in ``tmp_path``: the default config.yaml, a fresh SQLite store, the
built-in plugins, and the controller facade, so a test can call a hook directly::

    def test_guard_keeps_passed_ticket(mc_hook, mc_controller, make_ticket):
        t = make_ticket(status="done", review_cycles=1)
        assert mc_hook.before_operator_reopen(ticket=t, reason="weak", controller=mc_controller)

This is the one module of ``mc_hooks`` that reaches into the host: fixtures need a real store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from mission_control.config import DEFAULT_CONFIG_TEXT, Config, load_config

if TYPE_CHECKING:
    from mc_hooks.manager import PluginHost
    from mission_control.controller import Controller
    from mission_control.store.models import Ticket


@pytest.fixture
def mc_plugins() -> dict[str, dict[str, Any]]:
    """Plugins to add to the default config's ``plugins:`` (name -> settings), loaded the way a user's
    config.yaml loads them. Override it in your ``conftest.py`` or test module to test your plugin::

        @pytest.fixture
        def mc_plugins(tmp_path):
            return {"acme_notify:AcmeNotify": {"outbox": str(tmp_path / "outbox.jsonl")}}
    """
    return {}


@pytest.fixture
def mc_config(tmp_path: Path, mc_plugins: dict[str, dict[str, Any]]) -> Config:
    """The default config.yaml plus ``mc_plugins``, written into a fresh MC root under ``tmp_path``."""
    root = tmp_path / "mc"
    root.mkdir()
    path = root / "config.yaml"
    text = DEFAULT_CONFIG_TEXT
    if mc_plugins:
        data = yaml.safe_load(text)
        data["plugins"] = {**data.get("plugins", {}), **mc_plugins}
        text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


@pytest.fixture
def mc_db(mc_config: Config) -> Iterator[Any]:
    """A fresh, initialised SQLite store for ``mc_config``; closed after the test."""
    from mission_control.store.connection import close_database, open_database
    from mission_control.store.migration import init_schema

    database = open_database(mc_config.database, create=True)
    init_schema()
    yield database
    close_database()


@pytest.fixture
def mc_plugin_manager(mc_config: Config) -> PluginHost:
    """The plugins of ``mc_config`` (the built-ins, per the default config)."""
    from mc_hooks.manager import load_plugins

    return load_plugins(mc_config)


@pytest.fixture
def mc_hook(mc_plugin_manager: PluginHost) -> Any:
    """``mc_plugin_manager.hook``: call hooks as the host does, e.g. ``mc_hook.on_escalate(...)``."""
    return mc_plugin_manager.hook


@pytest.fixture
def mc_controller(mc_config: Config, mc_db: Any, mc_plugin_manager: PluginHost) -> Controller:
    """The controller facade over ``mc_db``, delivering escalations to ``mc_plugin_manager``."""
    from mission_control.controller import Controller
    from mission_control.effects import EffectHooks

    controller = Controller(mc_config, hooks=mc_plugin_manager.hook)
    # Effect hooks (on_escalate, on_ticket_event) are delivered as soon as a change commits, in the
    # test's own thread, as `mc run` delivers them right after commit in threads of their own.
    effects = EffectHooks(mc_config, mc_plugin_manager, lambda: Controller(mc_config, hooks=mc_plugin_manager.hook))
    effects.open()
    controller.effects = effects.deliver_now
    return controller


@pytest.fixture
def make_ticket(mc_config: Config, mc_db: Any) -> Callable[..., Ticket]:
    """A factory: ``make_ticket(status="done", review_cycles=1)`` stores and returns a ticket."""
    from mission_control.store.queries import new_ticket

    def make(**fields: Any) -> Ticket:
        fields.setdefault("title", "a test ticket")
        return new_ticket(mc_config.ticket_prefix, **fields)

    return make

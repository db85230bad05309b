"""Plugin discovery by all three routes, enabled: false, and loud failures for mistakes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import McRoot
from mc_hooks.manager import BUILTIN_NAMES, OPT_IN, load_plugins
from mc_hooks.settings import ConfigError
from mission_control.config import load_config

NOTIFY_MODULE = textwrap.dedent("""
    import json, os
    from mc_hooks import hookimpl

    @hookimpl
    def on_escalate(ticket, reason, owner):
        path = os.path.join(os.environ["MC_DEMO_STATE"], "notified.jsonl")
        with open(path, "a") as handle:
            handle.write(json.dumps({"ticket": ticket.key, "owner": owner, "reason": reason}) + "\\n")
""")


def config_with(tmp_path: Path, plugins: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"plugins:\n{textwrap.indent(plugins, '  ')}\n", encoding="utf-8")
    return path


def test_builtins_load_by_name_in_the_declared_order(tmp_path: Path) -> None:
    host = load_plugins(load_config(config_with(tmp_path, "{}"), env={}))
    assert [info.name for info in host.infos] == [name for name in BUILTIN_NAMES if name not in OPT_IN]
    assert host.call_order("on_done_sentinel") == ["review_loop"]
    assert host.call_order("verify_done_claim") == ["done_verifier"]
    assert host.call_order("before_auto_action") == ["circuit_breaker", "killswitch"]


def test_enabled_false_blocks_a_builtin(tmp_path: Path) -> None:
    host = load_plugins(load_config(config_with(tmp_path, "killswitch: {enabled: false}"), env={}))
    assert "killswitch" not in [info.name for info in host.infos]
    assert host.pm.is_blocked("killswitch")
    assert host.call_order("before_auto_action") == ["circuit_breaker"]


def test_dotted_path_module_from_config_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_notify.py").write_text(NOTIFY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    host = load_plugins(load_config(config_with(tmp_path, "acme_notify: {enabled: true}"), env={}))
    assert host.call_order("on_escalate") == ["acme_notify"]
    assert [i.source for i in host.infos if i.name == "acme_notify"] == ["config.yaml (acme_notify)"]


def test_a_module_plugin_given_settings_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_notify.py").write_text(NOTIFY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"plugins\.acme_notify\.channel: expected no settings: a module plugin"):
        load_plugins(load_config(config_with(tmp_path, "acme_notify: {channel: '#mc'}"), env={}))


def test_module_attr_naming_a_class_is_instantiated_with_its_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_cls.py").write_text(
        textwrap.dedent("""
        from mc_hooks import hookimpl
        class Notifier:
            def __init__(self, settings):
                self.channel = settings["channel"]
            @hookimpl
            def on_escalate(self, ticket):
                pass
    """),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    host = load_plugins(load_config(config_with(tmp_path, "'acme_cls:Notifier': {channel: '#ops'}"), env={}))
    assert host.pm.get_plugin("acme_cls:Notifier").channel == "#ops"


def test_unknown_plugin_name_lists_what_exists(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"plugins.no_such_plugin: no built-in plugin, entry point or importable "
        r"module of that name \(known: done_verifier, review_loop, dead_worker_retry",
    ):
        load_plugins(load_config(config_with(tmp_path, "no_such_plugin: {}"), env={}))


def test_misspelled_hook_name_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "typo_plugin.py").write_text(
        "from mc_hooks import hookimpl\n@hookimpl\ndef on_done_sentinal(ticket):\n    pass\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="plugin typo_plugin: .*on_done_sentinal.*known hooks"):
        load_plugins(load_config(config_with(tmp_path, "typo_plugin: {}"), env={}))


def test_unknown_setting_of_a_builtin_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plugins.review_loop.max_cycles: expected one of the known keys"):
        load_plugins(load_config(config_with(tmp_path, "review_loop: {max_cycles: 2}"), env={}))


def make_distribution(site: Path, enabled: bool = True) -> None:
    """An installed distribution (dist-info on sys.path) with an `mc_hooks` entry point."""
    dist = site / "acme_ep-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ep\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[mc_hooks]\nacme_ep = acme_ep_plugin\n", encoding="utf-8")
    (site / "acme_ep_plugin.py").write_text(NOTIFY_MODULE, encoding="utf-8")


def test_entry_point_plugin_is_discovered_and_called(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(site)
    mc = McRoot(tmp_path / "root")
    env = mc.env(PYTHONPATH=str(site))
    listing = json.loads(mc.mc("plugins", "--json", env=env).stdout)
    assert {
        "name": "acme_ep",
        "source": "entry point (acme-ep 1.0: acme_ep_plugin)",
        "hooks": ["on_escalate"],
    } in listing["plugins"]
    key = mc.add("escalates", "uncertain")
    mc.mc("run", "--until-idle", env=env)
    notified = [json.loads(line) for line in (mc.state / "notified.jsonl").read_text().splitlines()]
    assert [(n["ticket"], n["owner"]) for n in notified] == [(key, "elmar")]


def test_entry_point_plugin_can_be_disabled(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(site)
    mc = McRoot(tmp_path / "root")
    mc.config["plugins"]["acme_ep"] = {"enabled": False}
    mc.write_config()
    listing = json.loads(mc.mc("plugins", "--json", env=mc.env(PYTHONPATH=str(site))).stdout)
    assert "acme_ep" not in [p["name"] for p in listing["plugins"]]

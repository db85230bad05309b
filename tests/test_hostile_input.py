"""Hostile config and input (issue 5, item 6): property-based tests with hypothesis."""

from __future__ import annotations

import io
import json
import string
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mc_hooks.settings import ConfigError
from mission_control.cli import main
from mission_control.config import DEFAULT_CONFIG_TEXT, load_config
from mission_control.store.connection import close_database

KEYS = [
    "database",
    "ticket_prefix",
    "escalation",
    "owner",
    "workers",
    "default",
    "command",
    "timeout",
    "reviewer",
    "enabled",
    "operator",
    "weak_patterns",
    "interval",
    "plugins",
    "review_loop",
    "max_review_cycles",
    "dead_worker_retry",
    "max_deaths",
    "killswitch",
    "max_workers",
    "poll_interval",
    "grace_period",
    "lease_seconds",
    "x",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["{prompt}", "{nope}", "(", "sh", "-c", "mc.db"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)
configs = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    close_database()
    return code, out.getvalue(), err.getvalue()


@FAST
@given(raw=configs)
def test_any_config_structure_loads_or_fails_with_one_line_naming_file_and_key(tmp_path_factory, raw) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    try:
        load_config(path, env={})
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert "expected" in message or "invalid YAML" in message


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=configs.filter(bool))
def test_cli_with_a_bad_config_exits_2_and_leaves_the_database_untouched(tmp_path_factory, raw) -> None:
    root = tmp_path_factory.mktemp("root")
    config = root / "config.yaml"
    config.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    assert run_cli("--config", str(config), "init")[0] == 0
    before = (root / "mc.db").read_bytes()
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    try:
        load_config(config, env={})
        return  # this one happens to be valid
    except ConfigError:
        pass
    code, out, err = run_cli("--config", str(config), "ticket", "add", "x")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (root / "mc.db").read_bytes() == before


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=text.filter(lambda t: t.strip()), body=text)
def test_any_ticket_text_is_stored_and_shown_byte_exact(tmp_path_factory, title: str, body: str) -> None:
    root = tmp_path_factory.mktemp("root")
    config = root / "config.yaml"
    config.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    run_cli("--config", str(config), "init")
    # `--body=` and `--` are how text that starts with "-" is passed to any argparse command
    code, out, _ = run_cli("--config", str(config), "ticket", "add", f"--body={body}", "--", title)
    key = out.strip().splitlines()[-1]
    shown = json.loads(run_cli("--config", str(config), "ticket", "show", key, "--json")[1])
    assert (code, shown["title"], shown["body"]) == (0, title, body)


def test_a_one_megabyte_body_of_shell_metacharacters_round_trips(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    run_cli("--config", str(config), "init")
    body = (string.punctuation + " $(id) `id` ; | & > < \n\t") * (1_000_000 // 50)
    key = run_cli("--config", str(config), "ticket", "add", "big", "--body", body)[1].strip()
    assert json.loads(run_cli("--config", str(config), "ticket", "show", key, "--json")[1])["body"] == body

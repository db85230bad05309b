"""The built-in notify plugin (issue 27): escalations reach a person through apprise, to real receivers on
127.0.0.1 (a JSON webhook, an SMTP server), exactly once across a controller killed between the commit and
the delivery; a failing receiver is retried and shown in `mc health`."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import McRoot

pytestmark = pytest.mark.slow


class Webhook:
    """A JSON webhook on 127.0.0.1 that records what it is sent; answers 500 to the first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures = failures
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the base class's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hook.failures:
                    hook.failures -= 1
                    self.send_response(500)
                else:
                    hook.received.append(json.loads(body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook() -> Any:
    hook = Webhook()
    yield hook
    hook.close()


def notified_root(tmp_path: Path, urls: list[str]) -> McRoot:
    mc = McRoot(tmp_path / "root")
    mc.config["plugins"]["notify"] = {"urls": urls, "board_url": "http://mc.example:8700"}
    mc.config["plugins"]["dead_worker_retry"] = {"max_deaths": 1}
    mc.write_config()
    mc.run()  # the notify plugin's cursor starts here: it is told what happens from now on
    return mc


def test_an_escalation_reaches_a_webhook_once_across_a_controller_killed_before_delivery(
    tmp_path: Path, webhook: Webhook
) -> None:
    mc = notified_root(tmp_path, [webhook.url])
    key = mc.add("broken", "die")
    crashed = mc.mc("run", "--until-idle", check=False, env=mc.env(MC_CRASH_AT="effects:before-delivery"))
    assert crashed.returncode == -9 and webhook.received == []  # killed after the commit, before sending
    mc.run()
    assert len(webhook.received) == 1
    sent = webhook.received[0]
    assert sent["title"] == f"{key} needs elmar: broken"
    assert "Worker died once. Needs Elmar to review." in sent["message"]
    assert f"http://mc.example:8700/tickets/{key}" in sent["message"]
    mc.run()
    assert len(webhook.received) == 1  # never again


def test_an_escalation_reaches_an_smtp_server_once_across_a_controller_killed_before_delivery(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Inbox(Message):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[Any] = []

        def handle_message(self, message: Any) -> None:
            self.messages.append(message)

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        url = f"mailto://127.0.0.1:{port}?from=mc@example.com&to=owner@example.com"
        mc = notified_root(tmp_path, [url])
        key = mc.add("unsure", "uncertain")
        crashed = mc.mc("run", "--until-idle", check=False, env=mc.env(MC_CRASH_AT="effects:before-delivery"))
        assert crashed.returncode == -9
        mc.run()
        mc.run()
        deadline = time.time() + 10
        while not inbox.messages and time.time() < deadline:
            time.sleep(0.1)
    finally:
        smtp.stop()
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert message["To"] == "owner@example.com" and message["Subject"].startswith(f"{key} needs elmar: unsure")


def test_a_failing_receiver_is_retried_and_shown_in_mc_health(tmp_path: Path) -> None:
    hook = Webhook(failures=2)  # the first attempt and its first retry (due a second later) fail
    try:
        mc = notified_root(tmp_path, [hook.url])
        key = mc.add("broken", "die")
        mc.run()
        assert hook.received == []
        health = mc.mc("health").stdout
        assert f"failing: notify on_escalate for {key}" in health and "attempt(s)" in health
        deadline = time.time() + 30
        while not hook.received:  # the retries come due after 1, then 2 seconds
            assert time.time() < deadline, "the notification was never retried"
            time.sleep(0.5)
            mc.run()
        assert len(hook.received) == 1
        mc.mc("operator", "--once")
        assert "failing:" not in mc.mc("health").stdout
    finally:
        hook.close()


def test_a_url_apprise_cannot_send_to_is_a_one_line_config_error(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root")
    mc.config["plugins"]["notify"] = {"urls": ["nonsense-scheme://x"]}
    mc.write_config()
    result = mc.mc("plugins", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mc: {mc.config_path}: plugins.notify.urls: not a URL apprise can send to: 'nonsense-scheme://x'"
    ]


def test_a_plugin_module_beside_config_yaml_loads_without_pythonpath(tmp_path: Path) -> None:
    mc = McRoot(tmp_path / "root")
    (mc.path / "acme_notify.py").write_text(
        "from mc_hooks import hookimpl\n\n@hookimpl\ndef on_escalate(ticket):\n    pass\n", encoding="utf-8"
    )
    mc.config["plugins"]["acme_notify"] = {"enabled": True}
    mc.write_config()
    listed = mc.mc("plugins").stdout
    assert "acme_notify" in listed

"""A run's egress proxy on its own (issue 26): what a run's programs send through ``HTTPS_PROXY`` and
``HTTP_PROXY`` reaches an allowed host, a tunnel or a forwarded request with its body, and nothing else."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mission_control import egress


class Echo(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps({"path": self.path, "body": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def allowed_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(allowed_port: int) -> Iterator[egress.RunEgress]:
    run = egress.shared().open((egress.Target("localhost", allowed_port),))
    yield run
    run.close()


def talk(run: egress.RunEgress, *messages: bytes) -> list[bytes]:
    """Send each message on one connection to the run's proxy socket; what came back after each."""
    answers = []
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(str(run.directory / "proxy.sock"))
        for message in messages:
            conn.sendall(message)
            data = b""
            while b"\r\n\r\n" not in data or (b"Content-Length" in data and not data.rstrip().endswith(b"}")):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith(b"HTTP/1.1 200 Connection established") and data.endswith(b"\r\n\r\n"):
                    break
            answers.append(data)
    return answers


def test_a_plain_request_to_an_allowed_host_is_forwarded_with_its_body(
    proxy: egress.RunEgress, allowed_port: int
) -> None:
    body = b'{"prompt": "hi"}'
    request = (
        f"POST http://localhost:{allowed_port}/v1/messages?beta=1 HTTP/1.1\r\nHost: localhost:{allowed_port}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    (answer,) = talk(proxy, request)
    assert answer.startswith(b"HTTP/1.") and json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
        "path": "/v1/messages?beta=1",
        "body": '{"prompt": "hi"}',
    }


def test_a_tunnel_to_an_allowed_host_carries_what_is_sent_through_it(
    proxy: egress.RunEgress, allowed_port: int
) -> None:
    opened, answer = talk(
        proxy,
        f"CONNECT localhost:{allowed_port} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(),
        b"POST /tunnel HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    assert opened.startswith(b"HTTP/1.1 200 Connection established")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"path": "/tunnel", "body": "hi"}


@pytest.mark.parametrize(
    "request_line",
    [
        "CONNECT 127.0.0.1:5432 HTTP/1.1",
        "GET http://127.0.0.1:8700/api/tickets HTTP/1.1",
        "CONNECT example.com:443 HTTP/1.1",
    ],
)
def test_anything_not_on_the_allowlist_is_refused(proxy: egress.RunEgress, request_line: str) -> None:
    (answer,) = talk(proxy, f"{request_line}\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 Mission Control:") and b"not on this run's network allowlist" in answer


def test_a_closed_run_leaves_no_socket_behind(allowed_port: int) -> None:
    run = egress.shared().open((egress.Target("localhost", allowed_port),))
    directory = run.directory
    run.close()
    assert not directory.exists()


def test_allowlists_come_from_the_preset_the_base_url_variables_and_allowed_hosts() -> None:
    env = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8080", "OPENAI_API_BASE": "https://gw.example/v1"}
    found = egress.allowlist(("api.anthropic.com:443",), ("registry.npmjs.org",), env)
    assert [str(t) for t in found] == [
        "127.0.0.1:8080",
        "api.anthropic.com:443",
        "gw.example:443",
        "registry.npmjs.org:443",
    ]
    assert [t.local for t in found] == [True, False, False, False]

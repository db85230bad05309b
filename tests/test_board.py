"""`mc board` (issue 14) without a browser: the real server in a subprocess, asked over HTTP as a user's
script would, plus one in-process check of how often it reads the store. The browser's side is in
tests/test_board_browser.py."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import McRoot, each_store

TOKEN = "s3cret-board-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Board:
    """A real `mc board` for an MC root, on a free port."""

    def __init__(self, mc: McRoot, *args: str, port: int | None = None) -> None:
        self.mc = mc
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        command = [sys.executable, "-m", "mission_control.cli", "--config", str(self.mc.config_path), "board"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), *self.args],
            env=self.mc.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
                assert time.time() < deadline, "mc board did not start listening"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        """(status, headers, body) of a GET, without following redirects."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
        finally:
            conn.close()

    def json(self, path: str, **headers: str) -> Any:
        status, _, body = self.get(path, headers)
        assert status == 200, (status, body)
        return json.loads(body)


@pytest.fixture
def board_root(tmp_path: Path) -> McRoot:
    return McRoot(tmp_path / "root", sandbox="off")


@pytest.fixture
def board(board_root: McRoot) -> Iterator[Board]:
    server = Board(board_root)
    yield server
    server.stop()


def test_board_refuses_to_listen_off_loopback_without_a_token(board_root: McRoot) -> None:
    result = board_root.mc("board", "--host", "0.0.0.0", "--port", str(free_port()), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mc: --host 0.0.0.0: the board would be reachable from other machines without a token; "
        "pass --token or set board.token in config.yaml"
    ]


def test_a_token_is_required_of_every_request_off_loopback(board_root: McRoot) -> None:
    board_root.add("guarded")
    server = Board(board_root, "--host", "0.0.0.0", "--token", TOKEN)
    try:
        assert server.get("/")[0] == 401
        assert server.get("/api/tickets")[0] == 401
        assert server.get("/api/tickets", {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
        assert server.get("/api/tickets", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        status, headers, _ = server.get(f"/?token={TOKEN}")  # a browser opens this link once
        assert status == 303 and headers["location"].endswith("/") and "token=" not in headers["location"]
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower()
        assert server.get("/tickets/MC-1", {"Cookie": cookie})[0] == 200
    finally:
        server.stop()


def test_the_board_token_can_come_from_config_yaml(board_root: McRoot) -> None:
    board_root.config["board"] = {"token": TOKEN}
    board_root.write_config()
    server = Board(board_root, "--host", "0.0.0.0")
    try:
        assert server.get("/api/tickets")[0] == 401
        assert server.get("/api/tickets", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        server.stop()


def test_a_short_board_token_in_config_is_one_line_without_the_value(board_root: McRoot) -> None:
    board_root.config["board"] = {"token": "pw-x9"}
    board_root.write_config()
    result = board_root.mc("board", check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "board.token" in result.stderr and "pw-x9" not in result.stderr


def test_the_json_api_has_the_shapes_of_the_cli_json(board: Board, board_root: McRoot) -> None:
    key = board_root.add("shaped", "pass")
    board_root.run()
    board_root.mc("operator", "--once")
    assert board.json("/api/tickets") == json.loads(board_root.mc("ticket", "list", "--json").stdout)
    assert board.json(f"/api/tickets/{key}") == board_root.show(key)
    health = json.loads(board_root.mc("health", "--json").stdout)
    assert set(board.json("/api/health")) == set(health)
    events = board.json("/api/events?after=0")
    assert [e["action"] for e in events["events"] if e["ticket"] == key] == [
        e["action"] for e in board_root.show(key)["events"]
    ]
    later = board.json(f"/api/events?after={events['cursor']}")
    assert later == {"events": [], "cursor": events["cursor"]}


def test_a_bad_cursor_or_an_unknown_ticket_is_a_clear_error(board: Board) -> None:
    status, _, body = board.get("/api/events?after=yesterday")
    assert status == 400 and "after" in json.loads(body)["error"]
    assert board.get("/api/tickets/MC-404")[0] == 404
    assert board.get("/tickets/MC-404")[0] == 404


def test_every_page_forbids_inline_scripts(board: Board, board_root: McRoot) -> None:
    key = board_root.add("csp")
    for path in ("/", f"/tickets/{key}", "/health"):
        status, headers, body = board.get(path)
        assert status == 200, path
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "<script>" not in body  # every script is a file the policy allows
        assert headers["x-content-type-options"] == "nosniff"


def test_markdown_in_a_description_is_rendered_without_raw_html(board: Board, board_root: McRoot) -> None:
    body = "# Plan\n\n**bold** <script>alert(1)</script> <img src=x onerror=alert(2)> [link](javascript:alert(3))"
    key = board_root.mc("ticket", "add", "markdown", "--body", body).stdout.strip().splitlines()[-1]
    _, _, page = board.get(f"/tickets/{key}")
    assert "<h1>Plan</h1>" in page and "<strong>bold</strong>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<img" not in page
    assert 'href="javascript:' not in page


def test_logs_are_served_only_by_ticket_and_attempt_from_mcs_records(board: Board, board_root: McRoot) -> None:
    key = board_root.add("logged", "pass")
    board_root.run()
    status, _, text = board.get(f"/tickets/{key}/runs/1/worker.log")
    assert status == 200 and f"agent: {key} run 1" in text
    assert board.get(f"/tickets/{key}/runs/7/worker.log")[0] == 404
    assert board.get(f"/tickets/{key}/runs/1/..%2F..%2Fmc.db")[0] == 404
    assert board.get("/static/..%2F..%2F..%2Fconfig.yaml")[0] == 404
    log = board_root.path / "logs" / key / "1.log"
    log.unlink()
    os.symlink("/etc/passwd", log)  # what a hostile worker could leave
    status, _, text = board.get(f"/tickets/{key}/runs/1/worker.log")
    assert status == 200 and "root:" not in text


def test_the_store_is_read_at_most_once_a_second_however_many_pages_listen(board_root: McRoot) -> None:
    import uvicorn

    from mission_control.board.app import create_app
    from mission_control.cli_support import open_store
    from mission_control.config import load_config

    board_root.add("watched")
    config = load_config(board_root.config_path)
    open_store(config)
    app = create_app(config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started:
            assert time.time() < deadline
            time.sleep(0.05)
        streams = [urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stream", timeout=10) for _ in range(30)]
        for stream in streams:
            assert stream.readline().startswith(b"event: change")
        before = app.reader.reads  # type: ignore[union-attr]
        time.sleep(3)
        for _ in range(30):  # and thirty viewers load the board page
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        reads = app.reader.reads - before  # type: ignore[union-attr]
        assert reads <= 5, f"{reads} store reads in 3 s with 30 live pages and 30 page loads"
        for stream in streams:
            stream.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_mc_board_without_the_web_extra_says_how_to_install_it(board_root: McRoot, tmp_path: Path) -> None:
    blocker = tmp_path / "no_web"
    blocker.mkdir()
    (blocker / "starlette.py").write_text("raise ImportError('No module named starlette', name='starlette')\n")
    env = board_root.env(PYTHONPATH=str(blocker))
    result = board_root.mc("board", check=False, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mc: mc board needs the web extra (starlette is missing): pip install 'mc-hooks[web]'"
    ]


@each_store
def test_the_board_serves_either_store(mc_root: McRoot) -> None:
    key = mc_root.add("on this store", "pass")
    mc_root.run()
    server = Board(mc_root)
    try:
        assert server.json("/api/tickets") == json.loads(mc_root.mc("ticket", "list", "--json").stdout)
        status, _, page = server.get("/?q=this+store")
        assert status == 200 and f'data-key="{key}"' in page
        assert server.get(f"/tickets/{key}")[0] == 200
        assert server.get("/health")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8700", "127.0.0.1.evil.example", "10.0.0.5"])
def test_a_request_naming_another_host_gets_400(board: Board, host: str) -> None:
    status, _, body = board.get("/api/tickets", {"Host": host})  # a page whose DNS name was rebound here
    assert (status, body) == (400, "400: this board does not answer to that host name\n")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "app.localhost"])
def test_a_request_naming_a_loopback_host_is_answered(board: Board, host: str) -> None:
    assert board.get("/api/tickets", {"Host": f"{host}:{board.port}"})[0] == 200


def test_the_page_cache_stays_bounded_under_a_flood_of_unknown_keys(board_root: McRoot) -> None:
    import asyncio

    from mission_control.board import pages
    from mission_control.board.app import CACHE_ENTRIES, Reader
    from mission_control.cli_support import open_store
    from mission_control.config import load_config

    config = load_config(board_root.config_path)
    open_store(config)
    reader = Reader(config)

    async def flood() -> None:
        for n in range(CACHE_ENTRIES * 4):
            await reader.read(("ticket", f"NOPE-{n}"), lambda n=n: pages.ticket(config, f"NOPE-{n}"))
            await reader.read(("log", f"MC-{n}"), lambda n=n: f"page {n}")

    asyncio.run(flood())
    assert len(reader.cache) == CACHE_ENTRIES  # the 404s not kept at all, the pages up to the bound


def test_a_name_given_with_allowed_host_is_answered(board_root: McRoot) -> None:
    server = Board(board_root, "--allowed-host", "mc.example")
    try:
        assert server.get("/api/tickets", {"Host": "mc.example:8700"})[0] == 200
        assert server.get("/api/tickets", {"Host": "other.example"})[0] == 400
    finally:
        server.stop()


def post(board: Board, path: str, fields: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    """(status, body) of a form POST to the board."""
    from urllib.parse import urlencode

    conn = http.client.HTTPConnection("127.0.0.1", board.port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


TOKEN = "s3cret-board-token"


def csrf_of(board: Board, key: str) -> str:
    import re

    _, _, page = board.get(f"/tickets/{key}", {"Authorization": f"Bearer {TOKEN}"})
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the ticket page of a board with a token carries its forms"
    return found.group(1)


def test_a_board_without_a_token_is_read_only(board_root: McRoot, board: Board) -> None:
    key = board_root.add("x")
    origin = {"Origin": f"http://127.0.0.1:{board.port}", "Host": f"127.0.0.1:{board.port}"}
    status, body = post(board, f"/tickets/{key}/comment", {"text": "hi", "csrf": "x"}, origin)
    assert status == 403 and "read-only" in body
    _, _, page = board.get(f"/tickets/{key}")
    assert 'name="csrf"' not in page  # and it offers no forms
    assert board_root.show(key)["comments"] == []


@pytest.mark.parametrize(
    "origin, csrf, why",
    [
        (None, True, "Origin"),
        ("http://evil.example", True, "Origin"),
        ("same", False, "CSRF"),
        ("same", "wrong", "CSRF"),
    ],
)
def test_a_board_action_from_another_page_or_without_the_csrf_token_is_refused(
    board_root: McRoot, origin: str | None, csrf: Any, why: str
) -> None:
    key = board_root.add("x")
    server = Board(board_root, "--token", TOKEN)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if origin is not None:
            headers["Origin"] = f"http://127.0.0.1:{server.port}" if origin == "same" else origin
        fields = {"text": "hi"}
        if csrf:
            fields["csrf"] = csrf_of(server, key) if csrf is True else csrf
        status, body = post(server, f"/tickets/{key}/comment", fields, headers)
    finally:
        server.stop()
    assert status == 403 and why in body
    assert board_root.show(key)["comments"] == []


def test_an_answer_on_the_board_sends_the_ticket_back_with_it_and_records_the_actor(board_root: McRoot) -> None:
    key = board_root.add("unsure", "uncertain, pass")
    board_root.run()
    assert board_root.show(key)["status"] == "needs_input"
    server = Board(board_root, "--token", TOKEN)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": f"http://127.0.0.1:{server.port}"}
        fields = {"text": "Use the second approach.", "csrf": csrf_of(server, key)}
        status, _ = post(server, f"/tickets/{key}/answer", fields, headers)
    finally:
        server.stop()
    assert status == 303
    ticket = board_root.show(key)
    assert ticket["status"] == "todo"
    answered = [e for e in ticket["events"] if e["action"] == "answer"]
    assert len(answered) == 1 and answered[0]["actor"] == "board"
    board_root.run()
    prompt = (board_root.path / "logs" / key / "2.prompt.md").read_text()
    assert "## board answered" in prompt and "Use the second approach." in prompt


def test_a_done_tickets_page_shows_what_its_commit_changed(tmp_path: Path) -> None:
    from conftest import make_repo

    repo = make_repo(tmp_path / "repo")
    work = (
        "printf '<script>alert(1)</script>\\n' > hello.html && git add hello.html"
        " && git -c user.name=a -c user.email=a@b commit -qm 'Add hello' && echo DONE: $(git rev-parse HEAD)"
    )
    mc = McRoot(tmp_path / "root", sandbox="off", workers={"default": {"command": ["sh", "-c", work]}})
    key = mc.mc("ticket", "add", "greet", "--repo", str(repo)).stdout.strip()
    mc.run()
    assert mc.show(key)["status"] == "done"
    server = Board(mc)
    try:
        _, _, page = server.get(f"/tickets/{key}")
    finally:
        server.stop()
    assert 'id="diff"' in page and "hello.html | 1 +" in page
    assert "+&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page


def test_a_tracker_tickets_page_links_its_issue_and_never_a_script_url(board: Board, board_root: McRoot) -> None:
    first = board_root.add("from github")
    second = board_root.add("hostile link")
    board_root.sql(
        "UPDATE ticket SET source = ?, source_url = ? WHERE key = ?",
        "github:acme/app#12",
        "https://github.com/acme/app/issues/12",
        first,
    )
    board_root.sql(
        "UPDATE ticket SET source = ?, source_url = ? WHERE key = ?", "evil:1", "javascript:alert(1)", second
    )

    _, _, page = board.get(f"/tickets/{first}")
    _, _, hostile = board.get(f"/tickets/{second}")

    assert '<a href="https://github.com/acme/app/issues/12" rel="noreferrer noopener">github:acme/app#12</a>' in page
    assert "evil:1" in hostile and 'href="javascript:' not in hostile

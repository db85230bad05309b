"""A sandboxed run's only way out: its network namespace has nothing but loopback, and on that loopback
it finds, per run, the ports Mission Control opened for it and nothing else.

Inside the sandbox, ``socat`` listens on ``127.0.0.1`` and passes each connection to a Unix socket of
the run's own directory (bind-mounted read-only; the controller listens there):

* **forwards**: each allowed target on this machine (the scripted model server of the tests, a local
  model gateway) is served on its own port number inside, so a base URL such as
  ``http://127.0.0.1:8080`` works unchanged, through a proxy or not;
* **the proxy** (``HTTPS_PROXY``/``HTTP_PROXY`` point at it): an HTTP proxy that opens ``CONNECT``
  tunnels and forwards plain requests to the allowed hosts only (the preset's API, the profile's
  ``allowed_hosts``) and answers 403 to anything else. Name lookups happen here, outside.

The store (PostgreSQL on loopback), the board and every other local or remote service are not
reachable: not listed, not there. The parsing of HTTP is the standard library's (``http.server``);
what is Mission Control's is the allowlist and the byte pump.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import os
import selectors
import shlex
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Environment variables that name a model API's base URL: a run may reach the host they name.
BASE_URL_VARIABLES = ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_API_BASE")
PROXY_PORT = 3128
CONNECT_TIMEOUT = 15.0
MAX_CONNECTIONS = 64  # at once, per run
BUFFER = 65536
LOOPBACK_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True, order=True)
class Target:
    """A host and port a run may reach."""

    host: str
    port: int

    @property
    def local(self) -> bool:
        """Whether it is on this machine (served by a forward on the same port inside the sandbox)."""
        if self.host.lower() in LOOPBACK_NAMES:
            return True
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(self.host).is_loopback
        return False

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_target(text: str) -> Target | None:
    """``host:port``, ``host`` (port 443) or a URL (its host and port), or None if it is none of them."""
    text = text.strip()
    if not text:
        return None
    parts = urlsplit(text if "//" in text else f"//{text}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    scheme_port = {"http": 80, "https": 443}.get(parts.scheme, 443)
    return Target(parts.hostname.lower(), port or scheme_port)


def allowlist(api_hosts: Iterable[str], allowed_hosts: Iterable[str], env: Mapping[str, str]) -> tuple[Target, ...]:
    """What a run may reach: its preset's API hosts, the hosts its base URL variables name, and its
    profile's ``allowed_hosts``."""
    names = [*api_hosts, *(env[name] for name in BASE_URL_VARIABLES if env.get(name)), *allowed_hosts]
    return tuple(sorted({target for target in map(parse_target, names) if target is not None}))


def socat() -> str | None:
    """The socat executable on PATH, or None."""
    return shutil.which("socat")


def socket_root() -> Path:
    """The directory holding every run's socket directory (short, since a socket path is at most 107
    bytes): ``/tmp/mc-egress-<uid>``, hidden inside sandboxes but for the run's own."""
    return Path(tempfile.gettempdir()) / f"mc-egress-{os.getuid()}"


@dataclass
class RunEgress:
    """One run's listeners, until :meth:`close`."""

    directory: Path
    targets: tuple[Target, ...]
    proxy_port: int
    listeners: list[socket.socket] = field(default_factory=list)
    active: int = 0
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self) -> bool:
        """Count a new connection in, unless the run has ended or has :data:`MAX_CONNECTIONS` open."""
        with self.lock:
            if self.closed or self.active >= MAX_CONNECTIONS:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.active -= 1

    @property
    def forwards(self) -> list[Target]:
        return [target for target in self.targets if target.local]

    def env(self) -> dict[str, str]:
        """The proxy settings the run's programs read (lower and upper case: both are read)."""
        proxy = f"http://127.0.0.1:{self.proxy_port}"
        values = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "localhost,127.0.0.1,::1"}
        return {**values, **{name.lower(): value for name, value in values.items()}}

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started after the bridges inside the sandbox listen (socat, one per port)."""
        program = socat() or "socat"
        bridges = [(self.proxy_port, self.directory / "proxy.sock")]
        bridges += [(target.port, self.directory / f"forward-{target.port}.sock") for target in self.forwards]
        lines = []
        for port, path in bridges:
            listen = f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"
            lines.append(f"{shlex.quote(program)} {listen} UNIX-CONNECT:{shlex.quote(str(path))} 2>/dev/null &")
        for port, _ in bridges:  # wait until each one listens (a few milliseconds), at most 5 s
            probe = f"{shlex.quote(program)} -u OPEN:/dev/null TCP:127.0.0.1:{port} 2>/dev/null"
            lines.append(f"n=0; until {probe} || [ $n -ge 500 ]; do n=$((n+1)); sleep 0.01; done")
        lines.append('exec "$@"')
        return ["sh", "-c", "\n".join(lines), "mc-egress", *argv]

    def close(self) -> None:
        """Stop listening and remove the run's socket directory (connections under way end by themselves)."""
        if self.closed:
            return
        self.closed = True
        shared().forget(self)
        for listener in self.listeners:
            with contextlib.suppress(OSError):
                listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Egress:
    """The controller's side of every run's network: a thread that accepts on all runs' sockets, and a
    thread per connection that pumps its bytes."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()  # epoll: registrations from other threads are seen at once
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def open(self, targets: tuple[Target, ...]) -> RunEgress:
        """Listeners for one run that may reach ``targets``: the proxy and a forward per local target."""
        root = socket_root()
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=0o700)
        found = os.lstat(root)
        if not (root.is_dir() and not root.is_symlink() and found.st_uid == os.getuid()):
            raise OSError(f"{root} is not a directory of this user's: cannot open the run's network")
        if self.thread is None:
            _remove_abandoned(root)
        directory = Path(tempfile.mkdtemp(prefix="", dir=root))
        used = {target.port for target in targets if target.local}
        port = next(p for p in range(PROXY_PORT, PROXY_PORT + 1000) if p not in used)
        run = RunEgress(directory, targets, port)
        try:
            self._listen(run, directory / "proxy.sock", None)
            for target in run.forwards:
                self._listen(run, directory / f"forward-{target.port}.sock", target)
        except OSError:
            run.close()
            raise
        self._start()
        return run

    def _listen(self, run: RunEgress, path: Path, target: Target | None) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(16)
        listener.setblocking(False)
        run.listeners.append(listener)
        with self.lock:
            self.selector.register(listener, selectors.EVENT_READ, (run, target))

    def forget(self, run: RunEgress) -> None:
        with self.lock:
            for listener in run.listeners:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.selector.unregister(listener)

    def _start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._accept_forever, name="mc-egress", daemon=True)
                self.thread.start()

    def _accept_forever(self) -> None:
        while True:
            try:
                ready = self.selector.select(1.0)
            except OSError:  # a listener closed while it was being looked at: look again
                continue
            for key, _ in ready:
                run, target = key.data
                try:
                    connection, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                connection.setblocking(True)
                if not run.admit():
                    connection.close()
                    continue
                threading.Thread(target=_serve, args=(run, target, connection), daemon=True).start()


def _remove_abandoned(root: Path) -> None:
    """Remove the socket directories of controllers that are gone (nobody answers on their proxy socket;
    one made in the last minute may not be listening yet, and is left alone)."""
    for directory in root.iterdir():
        with contextlib.suppress(OSError):
            if time.time() - directory.lstat().st_mtime < 60:
                continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(directory / "proxy.sock"))
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            probe.close()


def _serve(run: RunEgress, target: Target | None, connection: socket.socket) -> None:
    try:
        if target is not None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((target.host, target.port), CONNECT_TIMEOUT) as up,
            ):
                pump(connection, up)
        else:
            ProxyHandler(connection, ("run", 0), run)  # type: ignore[arg-type]  # it reads .targets only
    except Exception:  # noqa: BLE001 - one connection's trouble is that connection's
        pass
    finally:
        run.leave()
        with contextlib.suppress(OSError):
            connection.close()


def pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both sides are done (a side that ends its sending is passed on)."""
    selector = selectors.DefaultSelector()
    peers = {a: b, b: a}
    for sock in peers:
        selector.register(sock, selectors.EVENT_READ)
    open_sides = 2
    while open_sides:
        for key, _ in selector.select():
            source: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = source.recv(BUFFER)
            except OSError:
                data = b""
            if data:
                try:
                    peers[source].sendall(data)
                except OSError:
                    return
                continue
            selector.unregister(source)
            open_sides -= 1
            with contextlib.suppress(OSError):
                peers[source].shutdown(socket.SHUT_WR)
    selector.close()


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    """One proxied request from a run: a ``CONNECT host:port`` tunnel or a plain request with an
    absolute URL, to an allowed target only (403 otherwise)."""

    protocol_version = "HTTP/1.1"
    rbufsize = 0  # the request head read byte by byte: what follows it stays in the socket for the pump
    server: Any  # the RunEgress it serves

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _open(self, target: Target | None) -> socket.socket | None:
        """A connection to ``target`` if it is on the allowlist and answers; otherwise the error is sent."""
        if target is None or target not in self.server.targets:
            shown = str(target) if target else "that address"
            self.send_error(403, f"Mission Control: {shown} is not on this run's network allowlist")
            return None
        try:
            return socket.create_connection((target.host, target.port), CONNECT_TIMEOUT)
        except OSError as exc:
            self.send_error(502, f"cannot reach {target}: {exc.strerror or exc}")
            return None

    def do_CONNECT(self) -> None:  # noqa: N802 - the base class's name
        upstream = self._open(parse_target(self.path))
        if upstream is None:
            return
        with upstream:
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            pump(self.connection, upstream)
        self.close_connection = True

    def _forward(self) -> None:
        parts = urlsplit(self.path)
        upstream = self._open(parse_target(self.path) if parts.scheme == "http" else None)
        if upstream is None:
            return
        with upstream:
            path = parts.path or "/"
            head = [f"{self.command} {path}{'?' + parts.query if parts.query else ''} {self.request_version}"]
            skip = {"proxy-connection", "proxy-authorization", "connection"}
            head += [f"{name}: {value}" for name, value in self.headers.items() if name.lower() not in skip]
            head.append("Connection: close")
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            pump(self.connection, upstream)  # the body, if any, is still in the socket (rbufsize 0)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward  # noqa: N815


_SHARED: Egress | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> Egress:
    """This process's egress (started at its first run)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Egress()
        return _SHARED

"""`mc board`: check where it may listen, then serve the board with uvicorn until stopped."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys

import uvicorn

from mission_control.board.app import create_app
from mission_control.cli_support import UsageError
from mission_control.config import Config

GRACE_SECONDS = 2  # how long a stopping board lets open requests finish


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is only reachable from this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def own_names(host: str, extra: list[str]) -> list[str]:
    """The host names the board answers to besides loopback ones: the ``--host`` it listens on, the
    ``--allowed-host`` names, and, listening on every address, this machine's own names."""
    names = [host, *extra]
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:
            names += [socket.gethostname(), socket.getfqdn()]
    return names


def serve(config: Config, host: str, port: int, token: str | None, allowed_hosts: list[str] | None = None) -> int:
    """Serve the board on ``host``:``port``; off loopback only with a token; answering only to its
    own names (:func:`own_names`). Returns the exit status."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"--host {host}: the board would be reachable from other machines without a token; "
            "pass --token or set board.token in config.yaml"
        )
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: expected a port number from 1 to 65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        raise UsageError(f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}") from None
    shown = f"[{host}]" if ":" in host else host
    print(f"mc board: http://{shown}:{port}/ (read-only; Ctrl-C stops it)", file=sys.stderr, flush=True)
    # Open pages hold event streams forever: on Ctrl-C/SIGTERM give requests a moment, then close them.
    settings = uvicorn.Config(
        create_app(config, token, own_names(host, allowed_hosts or [])),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    server = uvicorn.Server(settings)
    server.run(sockets=[listener])
    return 0

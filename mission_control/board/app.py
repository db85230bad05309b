"""The board's web app: Starlette routes over :mod:`.pages`, Jinja2 templates (autoescaped), server-sent
events for live pages, and a gate that enforces the token and the security headers.

Reads are cheap and bounded: one thread reads the store; a watcher looks once a second whether anything
changed (one query, plus the size of each running output file) and, if so, bumps a generation that
every open page hears about over its event stream. Page data is cached per generation, so any number
of open pages costs one read per page shown per change, never one per viewer per second."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import peewee as pw
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mission_control.board import pages
from mission_control.config import Config
from mission_control.luci_operator import health_report
from mission_control.service import Refused, Service
from mission_control.store import views
from mission_control.store.connection import connection_lost, reconnect
from mission_control.store.models import STATUSES

HERE = Path(__file__).parent
WATCH_INTERVAL = 1.0  # the store is looked at no more often than this
MAX_FORM_BYTES = 8 << 20  # a board form: a ticket's body and title at most, URL-encoded
CACHE_ENTRIES = 256  # pages kept per generation, least recently used first out (keys come from URLs)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
COOKIE = "mc_board_token"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make a browser send `Origin: null` on its forms
]


class Reader:
    """The one thread that reads the store, the change watcher, and the per-generation page cache."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mc-board-reader")
        self.generation = 0
        self.marker: Any = None
        self.cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.changed = asyncio.Event()
        self.reads = 0  # store reads made (the bench and tests look at it)

    async def read(self, key: tuple[Any, ...], fn: Callable[[], Any]) -> Any:
        """``fn()`` in the reader thread, cached until the next change (at most :data:`CACHE_ENTRIES`
        pages; a page that does not exist is not kept, so made-up URLs cannot fill memory)."""
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        generation = self.generation
        value = await asyncio.get_running_loop().run_in_executor(self.executor, self._call, fn)
        if generation == self.generation and value is not None:
            self.cache[key] = value
            while len(self.cache) > CACHE_ENTRIES:
                self.cache.popitem(last=False)
        return value

    def _call(self, fn: Callable[[], Any]) -> Any:
        self.reads += 1
        try:
            return fn()
        except (pw.OperationalError, pw.InterfaceError) as exc:
            if connection_lost(exc):
                reconnect()
                return fn()
            raise

    def _marker(self) -> tuple[Any, ...]:
        sizes = []
        for path in views.live_outputs():
            try:
                sizes.append(os.stat(path, follow_symlinks=False).st_size)
            except OSError:
                sizes.append(-1)
        return (views.change_marker(), tuple(sizes), repr(pages.killswitch(self.config)))

    async def watch(self) -> None:
        """Forever: once a second, look whether anything changed; if so, tell every open page."""
        while True:
            try:
                marker = await asyncio.get_running_loop().run_in_executor(self.executor, self._call, self._marker)
            except Exception:  # noqa: BLE001 - a store outage: pages keep what they have; look again
                marker = self.marker
            if marker != self.marker:
                self.marker = marker
                self.generation += 1
                self.cache.clear()
                self.changed.set()
                self.changed = asyncio.Event()
            await asyncio.sleep(WATCH_INTERVAL)


def _given(form: Any, name: str) -> str | None:
    """A form field as text, or None when it was not sent."""
    value = form.get(name)
    return None if value is None else str(value)


def csrf_token(token: str | None) -> str | None:
    """The CSRF token the board's forms carry: derived from its bearer token (None without one: read-only)."""
    if not token:
        return None
    return hmac.new(token.encode(), b"mc-board-csrf", "sha256").hexdigest()


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header (``example.org:8700``, ``[::1]:8700``), lowercased; None if malformed."""
    with contextlib.suppress(ValueError):
        name = urlsplit(f"//{header}").hostname
        return name.rstrip(".") if name else None
    return None


def loopback_name(name: str) -> bool:
    """Whether ``name`` is a loopback name or address (what a browser on this machine sends)."""
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Gate:
    """ASGI middleware: a request whose ``Host`` is not one of the board's own names gets 400 (a page
    of another site whose name was rebound to this machine reads nothing); with a token, every request
    carries it (``Authorization: Bearer``, or the cookie that ``/?token=`` sets once); every response
    gets the security headers (a CSP without inline scripts)."""

    def __init__(
        self, app: ASGIApp, token: str | None, reader: Reader | None = None, hosts: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.token = token
        self.reader = reader  # the board's store reader (tests and the bench count its reads)
        self.hosts = frozenset(name.lower().strip("[]").rstrip(".") for name in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        request = Request(scope)
        response = self.wrong_host(request)
        if response is None and self.token is not None:
            response = self.refusal(request)
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def wrong_host(self, request: Request) -> Response | None:
        """None when the request names the board by one of its own names; otherwise a 400."""
        name = host_name(request.headers.get("host", ""))
        if name is not None and (loopback_name(name) or name in self.hosts):
            return None
        return PlainTextResponse("400: this board does not answer to that host name\n", status_code=400)

    def refusal(self, request: Request) -> Response | None:
        """None when the request carries the token; otherwise what to answer instead."""
        assert self.token is not None
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        offered = request.query_params.get("token", "")
        if offered and hmac.compare_digest(offered.encode(), self.token.encode()):
            response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return response
        return PlainTextResponse("401: this board needs its token\n", status_code=401)


def create_app(config: Config, token: str | None = None, hosts: Iterable[str] = ()) -> Gate:
    """The board for ``config``'s store (opened by the caller), guarded by ``token`` if given,
    answering to loopback names and ``hosts``."""
    reader = Reader(config)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["statuses"] = STATUSES
    templates.env.globals["csrf"] = csrf_token(token)  # None: a read-only board shows no actions
    templates.env.filters["clock"] = lambda iso: (iso or "")[:19].replace("T", " ")  # ISO 8601 as people read it

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    async def board(request: Request) -> Response:
        status = request.query_params.get("status") or None
        status = status if status in STATUSES else None
        text = (request.query_params.get("q") or "").strip()[:200] or None
        data = await reader.read(("board", status, text), lambda: pages.board(config, status, text))
        return page(request, "board.html", {**data, "generation": reader.generation})

    async def ticket(request: Request) -> Response:
        key = request.path_params["key"]
        data = await reader.read(("ticket", key.upper()), lambda: pages.ticket(config, key))
        if data is None:
            return page(request, "missing.html", {"key": key}, status_code=404)
        return page(request, "ticket.html", {"t": data, "generation": reader.generation})

    async def run_log(request: Request) -> Response:
        key, attempt, kind = request.path_params["key"], request.path_params["attempt"], request.path_params["kind"]
        if kind not in ("worker", "review"):
            return PlainTextResponse("404: no such log\n", status_code=404)
        text = await reader.read(("log", key.upper(), attempt, kind), lambda: pages.run_output(key, attempt, kind))
        if text is None:
            return PlainTextResponse("404: no such run\n", status_code=404)
        return PlainTextResponse(text)

    async def health_page(request: Request) -> Response:
        data = await reader.read(("health",), pages.health_page)
        return page(request, "health.html", {**data, "generation": reader.generation})

    async def api_tickets(request: Request) -> Response:
        status = request.query_params.get("status") or None
        rows = await reader.read(
            ("api-tickets", status), lambda: [views.ticket_summary(t) for t in views.tickets(status)]
        )
        return JSONResponse(rows)

    async def api_ticket(request: Request) -> Response:
        key = request.path_params["key"]

        def details() -> dict[str, Any] | None:
            found = views.ticket_by_key(key)
            if found is None:
                return None
            return views.ticket_details(found, config.budget_of(found.max_cost_usd, found.worker))

        data = await reader.read(("api-ticket", key.upper()), details)
        if data is None:
            return JSONResponse({"error": f"no ticket {key}"}, status_code=404)
        return JSONResponse(data)

    async def api_events(request: Request) -> Response:
        try:
            after = int(request.query_params.get("after") or 0)
        except ValueError:
            return JSONResponse({"error": "after: expected an event id (an integer)"}, status_code=400)
        rows = await reader.read(("api-events", after), lambda: views.events_after(after))
        return JSONResponse({"events": rows, "cursor": rows[-1]["id"] if rows else after})

    async def api_health(request: Request) -> Response:
        def snapshot() -> dict[str, Any] | None:
            return health_report(config)

        data = await reader.read(("api-health",), snapshot)
        if data is None:
            return JSONResponse({"error": "no health snapshot yet"}, status_code=404)
        return JSONResponse(data)

    csrf = csrf_token(token)

    def refusal(request: Request, form: Any) -> Response | None:
        """Why a POST may not act: a board without a token is read-only; the request must come from one of
        the board's own pages (its Origin is the board itself) and carry the page's CSRF token."""
        if csrf is None:
            return PlainTextResponse("403: this board is read-only (start it with --token to act from it)\n", 403)
        origin = request.headers.get("origin") or ""
        own = origin not in ("", "null") and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
        if not own and not (origin in ("", "null") and request.headers.get("sec-fetch-site") == "same-origin"):
            return PlainTextResponse("403: this action must come from the board's own page (Origin)\n", 403)
        given = str(form.get("csrf") or "")
        if not given or not hmac.compare_digest(given.encode(), csrf.encode()):
            return PlainTextResponse("403: the page's CSRF token is missing or wrong; reload the page\n", 403)
        return None

    async def act(request: Request, change: Callable[[Service, Any], Any], back: str) -> Response:
        """Run a person's action through the service (in the store's thread), then show ``back``."""
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            return PlainTextResponse("413: that form is too large\n", status_code=413)
        body = (await request.body())[:MAX_FORM_BYTES].decode("utf-8", "replace")  # forms are urlencoded
        form = {name: values[-1] for name, values in parse_qs(body, keep_blank_values=True).items()}
        refused = refusal(request, form)
        if refused is not None:
            return refused
        service = Service(config, actor="board")
        try:
            await asyncio.get_running_loop().run_in_executor(
                reader.executor, reader._call, lambda: change(service, form)
            )
        except Refused as exc:
            return PlainTextResponse(f"400: {exc}\n", status_code=400)
        reader.cache.clear()
        return RedirectResponse(back, status_code=303)

    async def ticket_action(request: Request) -> Response:
        key, action = request.path_params["key"], request.path_params["action"]
        changes: dict[str, Callable[[Service, Any], Any]] = {
            "answer": lambda service, form: service.answer(key, str(form.get("text") or "")),
            "comment": lambda service, form: service.comment(key, str(form.get("text") or "")),
            "requeue": lambda service, form: service.set_status(key, "todo", why="requeued on the board"),
            "stop": lambda service, form: service.stop(key),
            "edit": lambda service, form: service.edit(key, title=_given(form, "title"), body=_given(form, "body")),
        }
        if action not in changes:
            return PlainTextResponse("404: no such action\n", status_code=404)
        return await act(request, changes[action], f"/tickets/{key.upper()}")

    async def killswitch_action(request: Request) -> Response:
        def flip(service: Service, form: Any) -> Any:
            if form.get("state") == "on":
                return service.killswitch_on(str(form.get("reason") or ""), stop_runs=form.get("stop_runs") == "on")
            return service.killswitch_off()

        return await act(request, flip, "/")

    async def stream(request: Request) -> Response:
        async def changes() -> AsyncIterator[dict[str, str]]:
            seen = None
            while True:
                if seen != reader.generation:
                    seen = reader.generation
                    yield {"event": "change", "data": str(seen)}
                waiting = reader.changed
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiting.wait(), timeout=30)

        return EventSourceResponse(changes(), ping=15, send_timeout=10)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(reader.watch())
        try:
            yield
        finally:
            watcher.cancel()
            reader.executor.shutdown(wait=False, cancel_futures=True)

    routes = [
        Route("/", board),
        Route("/tickets/{key}", ticket),
        Route("/tickets/{key}/runs/{attempt:int}/{kind}.log", run_log),
        Route("/health", health_page),
        Route("/api/tickets", api_tickets),
        Route("/api/tickets/{key}", api_ticket),
        Route("/api/events", api_events),
        Route("/api/health", api_health),
        Route("/api/stream", stream),
        Route("/tickets/{key}/{action}", ticket_action, methods=["POST"]),
        Route("/killswitch", killswitch_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Gate(Starlette(routes=routes, lifespan=lifespan), token, reader, hosts)

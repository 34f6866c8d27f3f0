"""`sockscope web [--listen 127.0.0.1:PORT]`: a live web page of the host's sockets.

One refresh loop takes the inventory every --interval seconds and updates a `live.board.Board`;
every page connected over the WebSocket gets only what changed for its own view. The routes
are added to an aiohttp Application by `add_web_routes`, so that one process (and one app)
can serve the page beside other routes such as the exporter's /metrics.

Who may look: loopback only unless a --token (or TLS with client certificates) guards the
page; the Host and Origin of every request are checked too, so that a web site the browser
happens to visit cannot read the sockets through it (cross-site WebSocket, DNS rebinding).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import PermissionDenied, SockscopeError, UsageError
from . import seconds
from .environment import Environment

if TYPE_CHECKING:
    import asyncio

    from aiohttp import web

    from ..live.board import Board, Page
    from ..live.closing import Reading
    from ..model import Socket
    from .httpd import Serving

DEFAULT_LISTEN = "127.0.0.1:8730"
QUEUED_MESSAGES = 8  # per page: a page further behind than this is closed (it reconnects afresh)
SEND_TIMEOUT = 10.0  # seconds one message may take to leave; a page that reads nothing is closed then
LARGEST_MESSAGE = 64 * 1024  # from a page: views and actions are small
MOST_PAGES = 32  # pages at once: each costs a pass over every socket at each refresh
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
WEBPAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "webpage")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def add_parser(commands: Any) -> None:
    """Add `web` to the command parsers."""
    p = commands.add_parser(
        "web",
        help="a live web page of this host's sockets: listeners, connections, traffic, a connection log, a map",
        description="Serve a live page: listeners with their accept queue, the connection table (filtered with the "
        "language of `ls`, sorted, grouped, paged), traffic per process over time, connections as they come and go, "
        "and who talks to whom. Updates travel over a WebSocket as changes only.",
        epilog="Listens on loopback by default; any other address needs --token, or --tls with --tls-client-ca. Exit 4 when the address is in use.",
    )
    from .httpd import add_options

    add_options(p, DEFAULT_LISTEN, "the page")
    p.add_argument("--interval", type=seconds, default=1.0, metavar="S", help="seconds between refreshes (default 1; longer when a refresh takes long)")
    p.add_argument("--allow-actions", action="store_true", help="show close and kill buttons (each one confirmed); needs --token")
    p.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics at /metrics (as `sockscope exporter` does)")
    p.add_argument("--metrics-interval", type=seconds, default=15.0, metavar="S", help="seconds between refreshes of /metrics (default 15, as the exporter's)")


class Settings:
    """How the page is served: who may look, and whether it may act."""

    def __init__(self, host: str, port: int, token: str | None, allow_actions: bool, interval: float) -> None:
        self.host, self.port, self.token, self.allow_actions, self.interval = host, port, token, allow_actions, interval

    def host_allowed(self, header: str | None) -> bool:
        """Tell whether a request's Host names this server (not some other name that resolves here)."""
        if header is None:
            return False
        from .httpd import is_loopback

        if self.token is not None or not is_loopback(self.host):
            return True  # the token guards it; off loopback the names people use are not ours to know
        name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
        return name.strip("[]").lower() in LOOPBACK_NAMES | {self.host.lower()}

    def token_given(self, request: web.Request) -> bool:
        """Tell whether a request carries the token (or none is needed)."""
        if self.token is None:
            return True
        given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode("utf-8", "surrogateescape"))


def settings_from(args: argparse.Namespace, serving: Serving) -> Settings:
    """Give the Settings of the command line; UsageError when a page option is bad."""
    if args.allow_actions and serving.token is None:
        raise UsageError("--allow-actions needs --token: closing connections and stopping processes must not be open to anyone")
    if not 0.05 <= args.interval <= 3600:
        raise UsageError("--interval: give 0.05 to 3600 seconds")
    if not args.no_metrics and not 0 < args.metrics_interval <= 3600:
        raise UsageError("--metrics-interval: give a number of seconds above 0 and at most 3600")
    return Settings(serving.address.host or "127.0.0.1", serving.address.port or 0, serving.token, args.allow_actions, args.interval)


class Viewer:
    """One connected page: its view of the board and the bounded queue of messages on their way to it."""

    def __init__(self, page: Page, ws: web.WebSocketResponse, request: web.Request, queue: asyncio.Queue[str]) -> None:
        self.page, self.ws, self.request, self.queue = page, ws, request, queue
        self.dropped = False

    def offer(self, text: str) -> None:
        """Queue a message; a page that has fallen QUEUED_MESSAGES behind is closed (deltas cannot be skipped)."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(text)
        except Exception:  # asyncio.QueueFull
            self.drop()

    def drop(self) -> None:
        """Cut the connection now: a page that does not read must not make the server hold its messages."""
        self.dropped = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class Feed:
    """The board, the one refresh loop that feeds it, and the pages that watch it."""

    def __init__(self, settings: Settings, take: Callable[[], tuple[list[Socket], list[str]]]) -> None:
        from ..live.board import Board
        from .render import service_of, socket_json

        tcp, udp = _service_names()
        service = service_of(tcp, udp)
        self.board: Board = Board(lambda sock: socket_json(sock, service(sock)))
        self.service_port = {name: port for port, name in sorted(tcp.items(), reverse=True)}.get
        self.settings, self.take = settings, take
        self.viewers: set[Viewer] = set()
        self.notes: list[str] = []
        self.opening = 0  # pages between their handshake and their first message
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="sockscope-board")  # the board is touched by this thread only

    def refresh(self, viewers: list[Viewer]) -> list[tuple[Viewer, str]]:
        """Take a snapshot, update the board, and give each page its delta as JSON text."""
        sockets, notes = self.take()
        self.board.update(sockets, time.time())
        return self._deltas(viewers, notes)

    def closed(self, reading: Reading, viewers: list[Viewer]) -> list[tuple[Viewer, str]]:
        """Log the closes of one destroy-group reading on the board, and give each page its delta as JSON text."""
        self.board.closed(reading.closed, reading.lost, time.time())
        return self._deltas(viewers, self.notes)

    def _deltas(self, viewers: list[Viewer], notes: list[str]) -> list[tuple[Viewer, str]]:
        fresh_notes = notes != self.notes
        self.notes = notes
        out = []
        for viewer in viewers:
            message = viewer.page.delta()
            if fresh_notes:
                message["notes"] = notes
            out.append((viewer, json.dumps(message, ensure_ascii=False, separators=(",", ":"))))
        return out

    def hello(self, page: Page) -> str:
        """Give the first message of a page: what the server allows, then everything it should show."""
        first = {"hello": {"actions": self.settings.allow_actions, "interval": self.settings.interval, "notes": self.notes}}
        return json.dumps({**first, **page.delta()}, ensure_ascii=False, separators=(",", ":"))

    def ask(self, viewer: Viewer, asked: object) -> str:
        """Give the answer to a page's message: its new view's delta, or the one-line error."""
        from ..errors import FilterError

        if not isinstance(asked, dict) or "view" not in asked:
            return json.dumps({"error": 'send {"view": {...}} or {"action": ...}'})
        try:
            viewer.page.ask(asked["view"])
        except FilterError as error:
            return json.dumps({"error": error.message, "field": "filter"}, ensure_ascii=False)
        except (UsageError, TypeError) as error:
            return json.dumps({"error": getattr(error, "message", "a view holds filter, sort, descending, group, page and size")}, ensure_ascii=False)
        return json.dumps({"accepted": True, **viewer.page.delta()}, ensure_ascii=False, separators=(",", ":"))

    def act(self, asked: dict[str, Any]) -> str:
        """Close a connection or stop a listener's process, as a page asked; give the outcome as a message."""
        try:
            return json.dumps({"done": self._act(asked)}, ensure_ascii=False)
        except SockscopeError as error:
            return json.dumps({"error": error.message}, ensure_ascii=False)

    def _act(self, asked: dict[str, Any]) -> str:
        from ..live.board import key_text

        if not self.settings.allow_actions:
            raise PermissionDenied("actions are off (start with --allow-actions and --token)")
        wanted = asked.get("id")
        found = [sock for key, sock in self.board.sockets.items() if key_text(key) == wanted]
        if not found:
            raise UsageError("that socket is gone already")
        sock = found[0]
        if asked.get("action") == "close":
            return _close(sock)
        if asked.get("action") == "kill":
            return _kill(sock)
        raise UsageError("the actions are close and kill")


def _close(sock: Socket) -> str:
    from ..model import ALL_STATES_MASK, NetId
    from ..ports import close

    if sock.cookie is None or sock.netid not in (NetId.TCP, NetId.UDP):
        raise UsageError("only TCP and UDP sockets can be closed")
    cookie = sock.cookie
    done = close.close(close.matching(frozenset({sock.netid}), ALL_STATES_MASK, lambda s: s.cookie == cookie, False))
    return f"closed {len(done.closed)} socket(s)" if done.closed else "it had closed already"


def _kill(sock: Socket) -> str:
    from ..model import Endpoint, NetId, State
    from ..ports import kill

    if sock.state is not State.LISTEN or not isinstance(sock.local, Endpoint):
        raise UsageError("only the process of a listener can be stopped here")
    outcome = kill.stop(sock.local.port, udp=sock.netid is NetId.UDP, timeout=3.0)
    who = ", ".join(f"{victim.process.name} (pid {victim.process.pid}): {name}" for victim, name in outcome.signalled)
    return f"{who}; port {sock.local.port} is {'free' if outcome.free else 'still held'}"


def _service_names() -> tuple[dict[int, str], dict[int, str]]:
    from .. import services

    return services.by_port("tcp"), services.by_port("udp")


def take_inet() -> tuple[list[Socket], list[str]]:
    """Give the host's internet sockets with owners and TCP counters, and the notes of the inventory."""
    from ..inventory import INET_NETIDS, Query, take

    found = take(Query(netids=INET_NETIDS, owners=True, internals=frozenset({"info"})))
    return found.sockets, found.notes


def add_web_routes(app: web.Application, feed: Feed) -> None:
    """Add the page (/, its assets) and its WebSocket (/ws) to an app; the refresh loop runs while the app does."""
    from aiohttp import web

    settings = feed.settings

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if not settings.host_allowed(request.headers.get("Host")):
            return web.Response(status=421, text="this server answers to its own address only\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("Host"):
            return web.Response(status=403, text="pages of other sites may not use this server\n")
        response: web.StreamResponse = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    async def page(request: web.Request) -> web.StreamResponse:
        if not settings.token_given(request):
            return web.Response(status=401, text="this page needs its token: open it as /?token=TEXT\n")
        return _asset("index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return _asset(name)

    async def websocket(request: web.Request) -> web.StreamResponse:
        if not settings.token_given(request):
            return web.Response(status=401, text="the token is missing or wrong\n")
        if len(feed.viewers) + feed.opening >= MOST_PAGES:
            return web.Response(status=503, text=f"{MOST_PAGES} pages are open already; close one\n", headers={"Retry-After": "10"})
        return await _serve_page(request, feed)

    app.middlewares.append(guard)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/ws", websocket)
    app.cleanup_ctx.append(lambda _app: _refreshing(feed))


def _asset(name: str) -> web.StreamResponse:
    from aiohttp import web

    with open(os.path.join(WEBPAGE, name), "rb") as handle:
        body = handle.read()
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=headers)


async def _refreshing(feed: Feed) -> Any:
    """Run the refresh loop for as long as the app runs (an aiohttp cleanup context)."""
    import asyncio
    import contextlib

    async def loop() -> None:
        running = asyncio.get_running_loop()
        while True:
            started = running.time()
            try:
                sent = await running.run_in_executor(feed.worker, feed.refresh, list(feed.viewers))
            except SockscopeError as error:
                sent = [(viewer, json.dumps({"error": error.message})) for viewer in feed.viewers]
            except Exception as error:  # a bug of ours, or the host out of descriptors: say it and keep refreshing
                said = f"the refresh failed: {type(error).__name__}: {error}"
                sent = [(viewer, json.dumps({"error": said})) for viewer in feed.viewers]
            for viewer, text in sent:
                viewer.offer(text)
            # a refresh that takes long (50,000 sockets) gets at least as long to rest: the host is not ours
            await asyncio.sleep(max(feed.settings.interval, running.time() - started))

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    feed.worker.shutdown(wait=False, cancel_futures=True)


async def _serve_page(request: web.Request, feed: Feed) -> web.StreamResponse:
    import asyncio

    from aiohttp import WSMsgType, web

    from ..live.board import Page

    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=LARGEST_MESSAGE, writer_limit=64 * 1024)
    running = asyncio.get_running_loop()
    viewer = Viewer(Page(feed.board, feed.service_port), ws, request, asyncio.Queue(QUEUED_MESSAGES))
    feed.opening += 1
    try:
        await ws.prepare(request)
        # the page joins the refreshes only after its first message, which the deltas build on
        viewer.offer(await running.run_in_executor(feed.worker, feed.hello, viewer.page))
        feed.viewers.add(viewer)
    finally:
        feed.opening -= 1
    sender = asyncio.create_task(_send_all(viewer))
    try:
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            try:
                asked = json.loads(message.data)
            except ValueError:
                viewer.offer(json.dumps({"error": "a message is one JSON object"}))
                continue
            if isinstance(asked, dict) and "action" in asked:
                # actions may wait seconds (a process given time to stop): not on the board's thread
                viewer.offer(await running.run_in_executor(None, feed.act, asked))
            else:
                viewer.offer(await running.run_in_executor(feed.worker, feed.ask, viewer, asked))
    finally:
        feed.viewers.discard(viewer)
        sender.cancel()
    return ws


async def _send_all(viewer: Viewer) -> None:
    import asyncio

    try:
        while True:
            text = await viewer.queue.get()
            await asyncio.wait_for(viewer.ws.send_str(text), SEND_TIMEOUT)
    except (TimeoutError, ConnectionError):
        viewer.drop()
    except asyncio.CancelledError:
        raise
    except Exception:  # the connection went away while sending: the reader ends the page
        viewer.drop()


def run(args: argparse.Namespace, env: Environment) -> int:
    """Serve the page (and /metrics) until interrupted (SIGINT, SIGTERM)."""
    import asyncio

    from . import httpd

    serving = httpd.guarded(args)
    settings = settings_from(args, serving)
    if not args.no_metrics:
        from .exporter import _heavy_imports

        _heavy_imports()
    httpd.quiet_log(env)
    # bound before the first inventory: a port in use is told at once
    sockets = httpd.bind(serving)
    return asyncio.run(_serve(settings, serving, sockets, None if args.no_metrics else args.metrics_interval, env))


async def _serve(settings: Settings, serving: Serving, sockets: list[socket.socket], metrics_interval: float | None, env: Environment) -> int:
    import asyncio

    from aiohttp import web

    from . import httpd
    from .exporter import watch_closes

    app = web.Application(client_max_size=LARGEST_MESSAGE)
    feed = Feed(settings, take_inet)
    add_web_routes(app, feed)
    watch = watch_closes(env)  # one subscription for the page and the metrics
    if watch is not None:
        watch.subscribe(feed_closes(feed, asyncio.get_running_loop()))
    refresher = None
    if metrics_interval is not None:
        from .exporter import Refresher, add_metric_routes

        refresher = Refresher(None, metrics_interval, 10)
        refresher.refresh_once()
        if watch is not None:
            watch.subscribe(refresher.closes)
        refresher.start()
        add_metric_routes(app, refresher.body, settings.token)
    if watch is not None:
        watch.start()
    query = "/?token=…" if settings.token else "/"
    metrics = f"; metrics at /metrics every {metrics_interval:g} s" if metrics_interval is not None else ""
    actions = ", actions on" if settings.allow_actions else ""
    said = f"serving the live page on {httpd.urls(serving, sockets)}{query} ({serving.guard()}{actions}{metrics})\n"

    def started() -> None:
        env.stdout.write(said)
        env.stdout.flush()

    try:
        await httpd.serve(app, sockets, serving.tls, started)
    finally:
        if watch is not None:
            watch.stop()
        if refresher is not None:
            refresher.stop()
    return 0


def feed_closes(feed: Feed, loop: asyncio.AbstractEventLoop) -> Callable[[Reading], None]:
    """Give a subscriber (for the watch's thread) that logs closes on the board at once and sends the pages their deltas.

    Readings that come while one is being handled are joined into one: a burst of closes costs
    one pass over the board per page, not one per close.
    """

    from ..live.closing import Reading

    waiting: list[Reading] = []
    running: set[asyncio.Task[None]] = set()

    async def send() -> None:
        try:
            await _send_waiting()
        finally:
            running.clear()  # at once, not in a done-callback: a reading arriving meanwhile starts a new task

    async def _send_waiting() -> None:
        while waiting:
            joined = Reading([sock for reading in waiting for sock in reading.closed], sum(reading.lost for reading in waiting))
            waiting.clear()
            try:
                sent = await loop.run_in_executor(feed.worker, feed.closed, joined, list(feed.viewers))
            except RuntimeError:  # the server is stopping: the worker is gone
                return
            for viewer, text in sent:
                viewer.offer(text)

    def start(reading: Reading) -> None:
        waiting.append(reading)
        if not running:
            task = loop.create_task(send())
            running.add(task)  # held, so that it is not collected half-way

    def subscriber(reading: Reading) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the watch was stopping
            loop.call_soon_threadsafe(start, reading)

    return subscriber

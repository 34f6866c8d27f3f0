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
import errno
import hmac
import ipaddress
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import AddressInUse, PermissionDenied, SockscopeError, UsageError
from . import seconds
from .environment import Environment

if TYPE_CHECKING:
    import asyncio
    import ssl

    from aiohttp import web

    from ..live.board import Board, Page
    from ..model import Socket

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
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"where to serve the page (default {DEFAULT_LISTEN})")
    p.add_argument("--token", metavar="TEXT", help="require this token (?token=TEXT in the page's address); needed off loopback")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve over TLS with this certificate chain and key (PEM)")
    p.add_argument("--tls-client-ca", metavar="CA", help="with --tls: accept only clients with a certificate signed by CA (PEM)")
    p.add_argument("--interval", type=seconds, default=1.0, metavar="S", help="seconds between refreshes (default 1; longer when a refresh takes long)")
    p.add_argument("--allow-actions", action="store_true", help="show close and kill buttons (each one confirmed); needs --token")


class Settings:
    """How the page is served: who may look, and whether it may act."""

    def __init__(self, host: str, port: int, token: str | None, allow_actions: bool, interval: float) -> None:
        self.host, self.port, self.token, self.allow_actions, self.interval = host, port, token, allow_actions, interval

    def host_allowed(self, header: str | None) -> bool:
        """Tell whether a request's Host names this server (not some other name that resolves here)."""
        if header is None:
            return False
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


def is_loopback(host: str) -> bool:
    """Tell whether a host names loopback only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from(args: argparse.Namespace) -> Settings:
    """Give the Settings of the command line; UsageError when the rules for who may look are broken."""
    from ..address import parse_address

    address = parse_address(args.listen, default_host="127.0.0.1")
    if address.kind != "tcp" or address.host is None or address.port is None:
        raise UsageError(f"--listen {args.listen!r}: give HOST:PORT (the page is served over TCP)")
    if args.token is not None and (not args.token or len(args.token) > 1024 or not args.token.isprintable()):
        raise UsageError("--token: give printable text of 1 to 1024 characters")
    if args.tls_client_ca and not args.tls:
        raise UsageError("--tls-client-ca needs --tls CERT KEY")
    if not is_loopback(address.host) and args.token is None and not args.tls_client_ca:
        raise UsageError(
            f"--listen {args.listen}: off loopback anyone who reaches the port would see every socket of this host; "
            "add --token TEXT (or --tls with --tls-client-ca)"
        )
    if args.allow_actions and args.token is None:
        raise UsageError("--allow-actions needs --token: closing connections and stopping processes must not be open to anyone")
    if not 0.05 <= args.interval <= 3600:
        raise UsageError("--interval: give 0.05 to 3600 seconds")
    return Settings(address.host, address.port, args.token, args.allow_actions, args.interval)


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


def tls_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """Give the server's TLS context (with client verification when `client_ca` is given); UsageError on unreadable files."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"--tls: cannot use {cert}, {key}{' or ' + client_ca if client_ca else ''}: {error}") from None
    return context


def run(args: argparse.Namespace, env: Environment) -> int:
    """Serve the page until interrupted (SIGINT, SIGTERM)."""
    settings = settings_from(args)
    context = tls_context(args.tls[0], args.tls[1], args.tls_client_ca) if args.tls else None
    import asyncio

    return asyncio.run(_serve(settings, context, env))


def quiet_server_log(env: Environment) -> None:
    """Make aiohttp's server log one line per error, at most one a second, and nothing for a client's bad request.

    Its default is a traceback for every malformed request: anyone could fill the terminal (or
    block a stderr nobody reads) by sending garbage.
    """
    import contextlib
    import logging

    from aiohttp.http_exceptions import HttpProcessingError

    class OneLine(logging.Handler):
        last = 0.0

        def emit(self, record: logging.LogRecord) -> None:
            error = record.exc_info[1] if record.exc_info else None
            if isinstance(error, HttpProcessingError) or time.monotonic() - self.last < 1.0:
                return  # a client's bad request is the client's
            self.last = time.monotonic()
            first = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else ""
            detail = f": {type(error).__name__}: {first}" if error is not None else ""
            with contextlib.suppress(OSError, ValueError):
                env.error(f"{record.getMessage()}{detail}")

    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.websocket"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [OneLine()]
        logger.propagate = False


def bind(settings: Settings, where: str) -> socket.socket:
    """Give a listening socket on the settings' address; AddressInUse, PermissionDenied or UsageError otherwise."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise UsageError(f"--listen {where}: {error.strerror}") from None
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(128)
    except OSError as error:
        listening.close()
        if error.errno == errno.EADDRINUSE:
            raise AddressInUse(f"{where} is in use (`sockscope who {settings.port}` tells by whom); choose another --listen") from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"{where}: ports below 1024 need root (or CAP_NET_BIND_SERVICE)") from None
        raise UsageError(f"cannot listen on {where}: {error.strerror}") from None
    return listening


async def _serve(settings: Settings, context: ssl.SSLContext | None, env: Environment) -> int:
    import asyncio
    import signal

    from aiohttp import web

    quiet_server_log(env)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    # bound before the app starts: a port in use is told at once, not after a first inventory
    listening = bind(settings, f"{shown}:{settings.port}")
    app = web.Application(client_max_size=LARGEST_MESSAGE)
    add_web_routes(app, Feed(settings, take_inet))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.SockSite(runner, listening, ssl_context=context).start()
    scheme = "https" if context is not None else "http"
    guard = "loopback only" if is_loopback(settings.host) and settings.token is None else "token required" if settings.token else "client certificates required"
    query = "/?token=…" if settings.token else "/"
    env.stdout.write(f"serving the live page on {scheme}://{shown}:{settings.port}{query} ({guard}{', actions on' if settings.allow_actions else ''})\n")
    env.stdout.flush()
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    running.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0

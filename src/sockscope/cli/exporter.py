"""`sockscope exporter`: Prometheus metrics of this host's sockets, per listener and per process.

The figures are refreshed in the background on an interval (the inventory taken in a forked
child) and rendered once per refresh; a scrape sends the rendered text. A scrape therefore takes the same few milliseconds with 50
sockets or 50,000, and many Prometheus servers scraping at once cost one inventory, not one
each. The serving is an aiohttp application (`build_app`) the web page can add its own routes to.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ExitCode, SockscopeError, UsageError
from .environment import Environment

if TYPE_CHECKING:
    from aiohttp import web

    from ..live.census import Census, Figures
    from ..live.closing import Reading, Watch
    from ..model import Socket

#: Not in the Prometheus exporters' block: 9100-9999 is fully allocated (see the README).
DEFAULT_PORT = 19100
DEFAULT_INTERVAL = 15.0  # a common scrape interval; a refresh of 50,000 sockets costs about a second of CPU
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_parser(commands: Any) -> None:
    """Add `exporter` to the command parsers."""
    from . import seconds

    p = commands.add_parser(
        "exporter",
        help="serve Prometheus metrics of sockets: per kind and state, per listener, per process",
        description="Serve Prometheus metrics (under sockscope_) at /metrics: sockets by kind and state, each listener's "
        "accept queue and connections, the top processes' sockets, TCP bytes and connections, ephemeral ports in use, "
        "the kernel's listen overflow and drop counters. Figures are refreshed every --interval seconds in the background.",
        epilog=f"Loopback only by default (127.0.0.1:{DEFAULT_PORT}); any other address needs --token or --tls-client-ca. "
        "Exit 4 when the address is in use, 2 for a bad option.",
    )
    from .httpd import add_options

    add_options(p, f"127.0.0.1:{DEFAULT_PORT}", "the metrics")
    p.add_argument("--netns", metavar="NS", help="the sockets of a network namespace (a name from `ip netns`, a pid, or `all`)")
    p.add_argument("--interval", type=seconds, default=DEFAULT_INTERVAL, metavar="S", help=f"seconds between refreshes (default {DEFAULT_INTERVAL:g})")
    p.add_argument("--top", type=int, default=10, metavar="N", help="processes with labels of their own; the rest are `other` (default 10)")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Serve metrics until SIGINT or SIGTERM."""
    import asyncio

    from . import httpd

    if not 0 < args.interval <= 3600:
        raise UsageError(f"--interval {args.interval:g}: give a number of seconds above 0 and at most 3600")
    if not 1 <= args.top <= 1000:
        raise UsageError(f"--top {args.top}: give a number of processes from 1 to 1000")
    serving = httpd.guarded(args)
    _heavy_imports()
    httpd.quiet_log(env)
    sockets = httpd.bind(serving)
    refresher = Refresher(args.netns, args.interval, args.top)
    refresher.refresh_once()  # the first scrape already has figures; a bad --netns fails here, before serving
    watch = watch_closes(env) if args.netns is None else None  # the kernel sends only our namespace's closes
    if watch is not None:
        watch.subscribe(refresher.closes)
        watch.start()
    refresher.start()
    app = build_app(refresher.body, serving.token)
    said = f"serving metrics at {httpd.urls(serving, sockets)}/metrics ({serving.guard()}; refreshed every {args.interval:g} s)"
    try:
        asyncio.run(httpd.serve(app, sockets, serving.tls, lambda: env.note(said)))
    finally:
        if watch is not None:
            watch.stop()
        refresher.stop()
    return ExitCode.OK


def watch_closes(env: Environment) -> Watch | None:
    """Give a started-later watch of the kernel's close events, or None (said once) when it cannot subscribe."""
    from ..live.closing import Watch

    try:
        return Watch()
    except SockscopeError as error:
        env.note(f"close events unavailable ({error.message}): a connection counts as closed when a refresh misses it")
        return None


def _heavy_imports() -> tuple[Any, Any]:
    """Give the aiohttp.web and prometheus_client modules, or say how to install them."""
    try:
        import prometheus_client
        from aiohttp import web
    except ImportError as exc:
        raise SockscopeError(f"the exporter needs {exc.name}: install it with pip install 'sockscope[exporter]'") from None
    return web, prometheus_client


class Refresher:
    """Takes the inventory every `interval` seconds from a thread and keeps the rendered metrics.

    In the background rather than on scrape: the inventory of 50,000 sockets takes seconds (far
    longer than node_exporter takes to answer), so a scrape must never wait for one. The thread
    mostly waits for a forked child (`taken_aside`), so scrapes are answered during a refresh;
    only counting and rendering (a tenth of a second at 50,000 sockets) hold the GIL here.
    """

    def __init__(self, netns: str | None, interval: float, top: int) -> None:
        from ..live.census import Census

        self.netns = netns
        self.interval = interval
        self.census: Census = Census(top=top)
        self.rendered = b""
        self.errors = 0
        self.last_error = ""
        self.duration = 0.0
        self.finished_at = 0.0
        self.children: set[int] = set()  # the inventory child of a refresh under way
        self.close_events_lost = 0
        self.closings: queue.SimpleQueue[tuple[object, int, int, float | None, int | None, float]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sockscope-refresh", daemon=True)

    def closing(self, cookie: object, bytes_sent: int, bytes_received: int, duration_s: float | None, pid: int | None) -> None:
        """Take a connection's close from any thread (a destroy-event listener); counted at the next refresh.

        The census is not shared between threads: closes wait in a queue and the refresh thread
        hands them to `Census.closed` before it counts the new inventory.
        """
        self.closings.put((cookie, bytes_sent, bytes_received, duration_s, pid, time.monotonic()))

    def closes(self, reading: Reading) -> None:
        """Take one reading of the destroy groups (from the watch's thread): its TCP closes and its losses."""
        from ..live.closing import final_bytes
        from ..model import NetId

        self.close_events_lost += reading.lost
        for sock in reading.closed:
            counted = final_bytes(sock) if sock.netid is NetId.TCP and sock.cookie is not None else None
            if counted is not None:
                self.closing(sock.cookie, counted[0], counted[1], None, None)

    def body(self) -> bytes:
        """Give the latest rendered metrics."""
        return self.rendered

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the refreshes (and a refresh's child under way) and wait for the thread."""
        import signal

        self._stop.set()
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        # a refresh slower than the interval (a huge or busy host) waits as long as it took: at most half the time refreshing
        while not self._stop.wait(max(self.interval - self.duration, self.duration)):
            try:
                self.refresh_once()
            except SockscopeError as error:  # a namespace gone, a source refused: keep the last figures, count it
                if self._stop.is_set():
                    return  # the child was ended by stop()
                self.errors += 1
                if error.message != self.last_error:
                    self.last_error = error.message
                    sys.stderr.write(f"sockscope exporter: refresh failed: {error.message} (serving the previous figures)\n")
                self.rendered = _render_failure(self.rendered, self.errors)

    def refresh_once(self) -> None:
        """Take the inventory and the kernel's counters, count, and render."""
        started = time.perf_counter()
        sockets, byte_counts, counters, ranges = taken_aside(self.netns, self.children)
        while not self.closings.empty():
            self.census.closed(*self.closings.get_nowait())
        figures = self.census.refresh(sockets, time.monotonic(), counters, ranges, byte_counts)
        del sockets, byte_counts
        self.duration = time.perf_counter() - started
        self.finished_at = time.time()
        self.rendered = render(figures, self.duration, self.finished_at, self.errors, self.close_events_lost)


Taken = tuple[list["Socket"], dict[object, tuple[int, int]], dict[str, dict[str, int]], dict[str, tuple[int, int]]]
_CHUNK = 4096  # sockets per pickle: the GIL is free between two, so scrapes are answered meanwhile


def take_here(netns: str | None) -> Taken:
    """Give the sockets (without internals), TCP byte counts by cookie, kernel counters and port ranges."""
    from ..inventory import Query, take
    from ..live.census import tcp_byte_counts

    sockets = take(Query(owners=True, netns=netns, internals=frozenset({"info"}))).sockets
    byte_counts = tcp_byte_counts(sockets)
    # tcp_info is most of a socket's memory, and the byte counts are all the census needs of it
    sockets = [sock._replace(internals=None) if sock.internals is not None else sock for sock in sockets]
    return (sockets, byte_counts, *kernel_views(netns))


def taken_aside(netns: str | None, children: set[int] | None = None) -> Taken:
    """Give what `take_here` gives, taken in a forked child.

    The child's memory (tens of megabytes of records and tcp_info at 50,000 sockets) goes back
    to the system when it exits, its work does not hold our GIL (scrapes keep being answered),
    and, single-threaded, it may fork the inventory's own owner-scan helper to use both cores.
    What comes back is pickled in chunks, so the GIL is free between two. The child's pid is
    in `children` while it runs (so that a stopping exporter can end it).
    """
    import pickle

    for name in ("diag", "netlink", "owners", "netns", "procnet"):  # no import lock is taken in the child
        __import__(f"sockscope.inventory.{name}")
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return take_here(netns)
    if pid == 0:  # the child: send frames, leave without running anyone's clean-up
        status = 0
        try:
            os.close(read_end)
            sockets, byte_counts, counters, ranges = take_here(netns)
            chunks = [sockets[at : at + _CHUNK] for at in range(0, len(sockets), _CHUNK)]
            _send(write_end, pickle.dumps(("ok", len(chunks), byte_counts, counters, ranges), protocol=pickle.HIGHEST_PROTOCOL))
            for chunk in chunks:
                _send(write_end, pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
        except SockscopeError as error:
            _send(write_end, pickle.dumps(("error", error), protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException as error:
            with contextlib.suppress(BaseException):
                _send(write_end, pickle.dumps(("error", SockscopeError(f"refresh failed: {type(error).__name__}: {error}"))))
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    if children is not None:
        children.add(pid)
    try:
        with os.fdopen(read_end, "rb", buffering=1 << 20) as stream:
            head = _receive(stream)
            if head is None:
                raise SockscopeError("refresh failed: the inventory process ended without an answer")
            first = pickle.loads(head)
            if first[0] == "error":
                raise first[1]
            _ok, count, byte_counts, counters, ranges = first
            found: list[Socket] = []
            for _ in range(count):
                frame = _receive(stream)
                if frame is None:
                    raise SockscopeError("refresh failed: the inventory process stopped half-way")
                found += pickle.loads(frame)
    finally:
        os.waitpid(pid, 0)
        if children is not None:
            children.discard(pid)
    return found, byte_counts, counters, ranges


def _send(fd: int, data: bytes) -> None:
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(stream: Any) -> bytes | None:
    size = stream.read(8)
    if len(size) < 8:
        return None
    data: bytes = stream.read(int.from_bytes(size, "little"))
    return data


def kernel_views(netns: str | None) -> tuple[dict[str, dict[str, int]], dict[str, tuple[int, int]]]:
    """Give each namespace's TCP counters and ephemeral port range, by namespace label ("" for ours)."""
    from ..inventory import netns as namespaces
    from ..live.census import read_counters, read_port_range

    if netns is None:
        return {"": read_counters("/proc/net")}, {"": read_port_range()}
    counters: dict[str, dict[str, int]] = {}
    ranges: dict[str, tuple[int, int]] = {}
    own = namespaces.current()
    for space in namespaces.resolve(netns):
        try:
            with _inside(space, space.inode == own, namespaces.entered):
                counters[space.label] = read_counters("/proc/thread-self/net")
                ranges[space.label] = read_port_range()
        except SockscopeError:
            if netns != "all":
                raise
    return counters, ranges


def _inside(space: Any, home: bool, entered: Callable[[Any], Any]) -> Any:
    return contextlib.nullcontext() if home else entered(space)


# --- rendering ------------------------------------------------------------------------------


def render(figures: Figures, duration: float, finished_at: float, errors: int, lost: int = 0) -> bytes:
    """Give the Prometheus text exposition of one refresh's figures."""
    from prometheus_client import ProcessCollector
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.exposition import generate_latest

    class Collected:
        def collect(self) -> Iterator[Any]:
            yield from families(figures, duration, finished_at, errors)
            yield CounterMetricFamily(
                "sockscope_close_events_lost", "Close events the kernel dropped (the reader fell behind); those closes are counted late.", value=lost
            )
            yield from ProcessCollector(registry=None).collect()

    return generate_latest(Collected())


def families(figures: Figures, duration: float, finished_at: float, errors: int) -> Iterator[Any]:
    """Give the metric families of one refresh (prometheus_client's, built fresh each time)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    from .. import __version__
    from ..live.census import DURATION_BUCKETS, KERNEL_COUNTERS

    info = GaugeMetricFamily("sockscope_build_info", "The sockscope version serving these metrics (always 1).", labels=["version"])
    info.add_metric([__version__], 1)
    yield info

    sockets = GaugeMetricFamily("sockscope_sockets", "Sockets by kind (as ss names it) and state.", labels=["netns", "netid", "state"])
    for (netns, netid, state), count in sorted(figures.sockets.items()):
        sockets.add_metric([netns, netid, state], count)
    yield sockets

    listener_labels = ["netns", "protocol", "address", "port", "process"]
    waiting = GaugeMetricFamily("sockscope_listener_accept_queue", "Connections completed and waiting for accept() on a listener.", labels=listener_labels)
    limit = GaugeMetricFamily("sockscope_listener_accept_queue_limit", "The most connections a listener's accept queue holds.", labels=listener_labels)
    for listener, (now, most) in sorted(figures.accept_queues.items()):
        values = [listener.netns, listener.protocol, listener.address, str(listener.port), listener.process]
        waiting.add_metric(values, now)
        limit.add_metric(values, most)
    yield waiting
    yield limit
    connections = GaugeMetricFamily(
        "sockscope_listener_connections", "TCP connections a listener accepted (or is accepting), by state.", labels=[*listener_labels, "state"]
    )
    for (listener, state), count in sorted(figures.listener_connections.items()):
        connections.add_metric([listener.netns, listener.protocol, listener.address, str(listener.port), listener.process, state], count)
    yield connections

    process_labels = ["process", "pid"]
    held = GaugeMetricFamily(
        "sockscope_process_sockets",
        'Sockets a process holds, by kind and state (beyond the top N: process="other").',
        labels=[*process_labels, "netid", "state"],
    )
    for (process, netid, state), count in sorted(figures.process_sockets.items()):
        held.add_metric([*process, netid, state], count)
    yield held
    for name, doc, table in (
        ("sockscope_process_tcp_sent_bytes", "TCP bytes sent and acknowledged on a process's connections, closed ones included.", figures.sent_bytes),
        ("sockscope_process_tcp_received_bytes", "TCP bytes received on a process's connections, closed ones included.", figures.received_bytes),
        ("sockscope_process_tcp_connections_opened", "TCP connections a process opened or accepted, seen since the exporter started.", figures.opened),
        ("sockscope_process_tcp_connections_closed", "TCP connections of a process that closed, seen since the exporter started.", figures.closed),
    ):
        counter = CounterMetricFamily(name, doc, labels=process_labels)
        for process, value in sorted(table.items()):
            counter.add_metric(list(process), value)
        yield counter
    bounds = [f"{bound:g}" for bound in DURATION_BUCKETS] + ["+Inf"]
    lifetimes = HistogramMetricFamily(
        "sockscope_process_tcp_connection_duration_seconds",
        "How long a process's TCP connections lasted, open (first seen) to close.",
        labels=process_labels,
    )
    for process, histogram in sorted(figures.durations.items()):
        lifetimes.add_metric(list(process), list(zip(bounds, histogram.buckets, strict=True)), histogram.total)
    yield lifetimes

    used = GaugeMetricFamily(
        "sockscope_tcp_ephemeral_ports_used",
        "Ephemeral local ports TCP sockets hold towards one remote address and port (the busiest flows only).",
        labels=["netns", "local_address", "remote_address", "remote_port"],
    )
    for flow, count in sorted(figures.ephemeral_used.items()):
        used.add_metric([flow.netns, flow.local_address, flow.remote_address, str(flow.remote_port)], count)
    yield used
    span = GaugeMetricFamily("sockscope_ephemeral_ports", "Ports in the ephemeral range (net.ipv4.ip_local_port_range).", labels=["netns"])
    for netns, size in sorted(figures.ephemeral_ports.items()):
        span.add_metric([netns], size)
    yield span

    by_name: dict[str, list[tuple[str, int]]] = {}
    for (netns, name), value in sorted(figures.kernel.items()):
        by_name.setdefault(name, []).append((netns, value))
    for name, (stem, doc) in KERNEL_COUNTERS.items():
        if name in by_name:
            group, counter_name = name.split(":")
            counter = CounterMetricFamily(f"sockscope_{stem}", f"{doc[:-1]} ({group} {counter_name} in /proc/net).", labels=["netns"])
            for netns, value in by_name[name]:
                counter.add_metric([netns], value)
            yield counter

    yield GaugeMetricFamily("sockscope_refresh_duration_seconds", "Seconds the last refresh took (inventory, owners, kernel counters).", value=duration)
    yield GaugeMetricFamily("sockscope_refresh_timestamp_seconds", "When the last refresh finished (Unix time).", value=finished_at)
    yield CounterMetricFamily("sockscope_refresh_errors", "Refreshes that failed (the previous figures were served).", value=errors)


def _render_failure(rendered: bytes, errors: int) -> bytes:
    """Give the previous rendering with the refresh error counter brought up to date."""
    marker = b"\nsockscope_refresh_errors_total "
    at = rendered.find(marker)
    if at < 0:
        return rendered
    end = rendered.find(b"\n", at + len(marker))
    return rendered[: at + len(marker)] + f"{float(errors)}".encode() + rendered[end:]


# --- serving --------------------------------------------------------------------------------

LANDING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sockscope exporter</title></head>
<body><h1>sockscope exporter</h1>
<p>Prometheus metrics of this host's sockets: <a href="metrics">/metrics</a>.</p>
</body></html>
"""


class ScrapeTimes:
    """The exporter's own scrape durations, as a summary (sum and count) appended to each answer."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def text(self) -> bytes:
        return (
            "# HELP sockscope_scrape_duration_seconds Seconds spent answering earlier scrapes of /metrics.\n"
            "# TYPE sockscope_scrape_duration_seconds summary\n"
            f"sockscope_scrape_duration_seconds_count {float(self.count)}\n"
            f"sockscope_scrape_duration_seconds_sum {self.total!r}\n"
        ).encode()


def build_app(body: Callable[[], bytes], token: str | None = None) -> web.Application:
    """Give the aiohttp application serving `/` and `/metrics` (`body()` gives the metrics text).

    With a `token`, every route needs `Authorization: Bearer TOKEN`.
    """
    from aiohttp import web

    expected = f"Bearer {token}".encode() if token is not None else b""

    @web.middleware
    async def bearer(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode("utf-8", "surrogateescape"), expected):
            raise web.HTTPUnauthorized(text="a bearer token is required\n", headers={"WWW-Authenticate": 'Bearer realm="sockscope"'})
        response: web.StreamResponse = await handler(request)
        return response

    async def landing(_request: web.Request) -> web.Response:
        return web.Response(text=LANDING, content_type="text/html")

    app = web.Application(middlewares=[bearer] if token is not None else [], client_max_size=4096)
    app.router.add_get("/", landing)
    add_metric_routes(app, body)
    return app


def add_metric_routes(app: web.Application, body: Callable[[], bytes], token: str | None = None) -> None:
    """Add `/metrics` to an app (the web page's too); with a `token`, it needs `Authorization: Bearer TOKEN`."""
    from aiohttp import web

    times = ScrapeTimes()
    expected = f"Bearer {token}".encode() if token is not None else b""

    async def metrics(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if token is not None and not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(text="a bearer token is required\n", headers={"WWW-Authenticate": 'Bearer realm="sockscope"'})
        started = time.perf_counter()
        response = web.Response(body=body() + times.text(), headers={"Content-Type": CONTENT_TYPE})
        times.count += 1
        times.total += time.perf_counter() - started
        return response

    app.router.add_get("/metrics", metrics)

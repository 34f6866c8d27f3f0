"""The multi-client server: one listening address, many clients at once, each independent.

`serve(settings, on_event)` binds (errors come before anything runs), then runs an asyncio loop
(uvloop when installed) per worker. What happens is told through `Event`s; the library prints
nothing. Stream sockets (TCP, unix stream, with TLS if asked) use asyncio transports; unix
seqpacket sockets get a transport of their own (`seqpacket.py`); datagram sockets are served by
`datagram.py`; several workers by `workers.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from ..address import sockaddr_text
from ..resources import raise_file_limit
from .chat import ChatSession
from .datagram import DatagramServer
from .hub import MODES, Event, EventSink, Hub, Settings, check
from .listeners import Narrate, open_inet, open_unix
from .modes import DiscardSession, EchoSession, PrintSession, StreamSession
from .seqpacket import serve_packets
from .tls import serve_tls, tls_context
from .workers import run_workers

__all__ = ["MODES", "Event", "EventSink", "Hub", "Settings", "check", "serve"]


def session_class(mode: str) -> type[StreamSession]:
    """Give the session class of a mode."""
    if mode == "http":
        from .http import HttpSession

        return HttpSession
    return {"echo": EchoSession, "print": PrintSession, "discard": DiscardSession, "chat": ChatSession}[mode]


def open_listeners(settings: Settings, narrate: Narrate | None) -> list[socket.socket]:
    """Bind every socket the server needs, for every worker; errors are raised here, before anything runs."""
    address = settings.address
    if address.is_unix:
        return [open_unix(address, backlog=settings.backlog, narrate=narrate)]
    reuse_port = settings.workers > 1
    first = open_inet(address, backlog=settings.backlog, reuse_port=reuse_port, narrate=narrate)
    made = list(first)
    try:
        port = first[0].getsockname()[1]
        for _ in range(settings.workers - 1):
            made += open_inet(address, backlog=settings.backlog, reuse_port=True, narrate=narrate, port=port)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def loop_factory(use_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """Give the maker of event loops and its name: uvloop when installed and wanted, else asyncio's own."""
    if use_uvloop and not os.environ.get("SOCKSCOPE_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"


async def _run(hub: Hub, listeners: list[socket.socket], ssl_context: Any) -> None:
    settings = hub.settings
    loop = asyncio.get_running_loop()
    hub.loop = loop
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    closers: list[Callable[[], None]] = []
    datagrams: list[DatagramServer] = []
    cls = session_class(settings.mode)

    def factory() -> StreamSession:
        return cls(hub)

    handshakes: set[asyncio.Task[None]] = set()

    for sock in listeners:
        if sock.type == socket.SOCK_DGRAM:
            server = DatagramServer(hub, sock)
            server.start(loop)
            datagrams.append(server)
        elif sock.type == socket.SOCK_SEQPACKET:
            closers.append(serve_packets(loop, sock, factory))
        elif ssl_context is not None:
            closers.append(serve_tls(loop, hub, sock, factory, ssl_context, handshakes))
        else:
            if sock.family == socket.AF_UNIX:
                made = await loop.create_unix_server(factory, sock=sock, backlog=settings.backlog)
            else:
                made = await loop.create_server(factory, sock=sock, backlog=settings.backlog)
            closers.append(made.close)
    hub.start_sweeping(loop)
    await stop.wait()
    # stop: no new clients; those connected get `grace` seconds to finish, then are closed
    hub.stopping = True
    for close in closers:
        close()
    for server in datagrams:
        server.stop()
    hub.emit("stopping", size=len(hub.sessions), detail=f"waiting up to {settings.grace:g}s for {_clients(len(hub.sessions))}")
    for session in list(hub.sessions):
        session.stop()
    stop.clear()
    deadline = loop.time() + settings.grace
    while hub.sessions and loop.time() < deadline and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    for session in list(hub.sessions):
        session.closing_reason = session.closing_reason or "server stopped"
        session.transport.abort()
    for task in list(handshakes):
        task.cancel()
    if handshakes:
        await asyncio.gather(*handshakes, return_exceptions=True)
    for _ in range(3):
        await asyncio.sleep(0)
    if hub.idle_sweep:
        hub.idle_sweep.cancel()
    hub.emit("stopped", detail=f"{_clients(hub.count)} served")


def run_worker(settings: Settings, sink: EventSink, listeners: list[socket.socket], worker: int | None, ssl_context: Any) -> None:
    """Serve on already bound sockets until SIGINT or SIGTERM, then stop gracefully."""
    hub = Hub(settings, sink, worker)
    loop = loop_factory(settings.uvloop)[0]()
    try:
        loop.run_until_complete(_run(hub, listeners, ssl_context))
    finally:
        loop.close()
        for sock in listeners:
            sock.close()


def serve(settings: Settings, sink: EventSink) -> int:
    """Bind, then serve until SIGINT/SIGTERM; give the exit status (0 after a graceful stop).

    Raises AddressInUse (naming the holder), PermissionDenied (privileged port), UsageError.
    """
    check(settings)
    ssl_context = tls_context(*settings.tls) if settings.tls else None
    raise_file_limit(settings.max_conns * settings.workers + 64)
    narrate = (lambda text: sink(Event("trace", detail=text))) if settings.trace else None
    # SIGINT/SIGTERM are held until the loop takes them: a signal between bind and the loop is not lost
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        listeners = open_listeners(settings, narrate)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        raise
    unix_path = settings.address.path if settings.address.is_unix and not (settings.address.path or "").startswith("@") else None
    unix_inode = os.stat(unix_path).st_ino if unix_path else None
    try:
        _announce(settings, listeners, sink)
        if settings.workers == 1:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            run_worker(settings, sink, listeners, None, ssl_context)
            return 0
        return run_workers(settings, sink, listeners, ssl_context, run_worker)
    finally:
        for sock in listeners:
            sock.close()
        if unix_path:  # remove the socket file we made, unless another server has replaced it since
            with contextlib.suppress(OSError):
                if os.stat(unix_path).st_ino == unix_inode:
                    os.unlink(unix_path)


def _announce(settings: Settings, listeners: list[socket.socket], sink: EventSink) -> None:
    name = loop_factory(settings.uvloop)[1]
    seen: list[str] = []
    for sock in listeners:
        text = settings.address.path if sock.family == socket.AF_UNIX else sockaddr_text(sock.getsockname())
        if text and text not in seen:
            seen.append(text)
    kind = settings.address.kind + ("+tls" if settings.tls else "")
    workers = f", {settings.workers} workers" if settings.workers > 1 else ""
    sink(Event("listening", peer=" ".join(seen), detail=f"{kind}, mode {settings.mode}, {name} loop{workers}"))
    for sock in listeners:
        if sock.family != socket.AF_UNIX and sock.getsockname()[0] in ("0.0.0.0", "::"):
            sink(Event("warning", detail=f"listening on all interfaces ({sockaddr_text(sock.getsockname())}): other hosts can connect"))
            break


def _clients(count: int) -> str:
    return f"{count} client" if count == 1 else f"{count} clients"

"""The multi-client server: one listening address, many clients at once, each independent.

`serve(settings, on_event)` binds (errors come before anything runs), then runs an asyncio loop
(uvloop when installed) per worker. What happens is told through `Event`s; the library prints
nothing. Stream sockets (TCP, unix stream, with TLS if asked) use asyncio transports; unix
seqpacket sockets, which asyncio does not take, get a small transport of their own here; datagram
sockets (UDP, unix datagram) are read with recvmsg so unix peers' credentials come along.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import UsageError
from ..resources import raise_file_limit
from .address import Address
from .listeners import Narrate, open_inet, open_unix, peer_credentials, sockaddr_text

MODES = ("print", "echo", "discard", "chat", "http")


class Event(NamedTuple):
    """One thing that happened: `kind` is listening, warning, connect, data, close, refused, trace,
    stopping or stopped; `conn` numbers the client (per worker), `peer` names it."""

    kind: str
    conn: int | None = None
    peer: str | None = None
    size: int | None = None
    data: bytes | None = None
    detail: str | None = None
    pid: int | None = None
    uid: int | None = None
    worker: int | None = None
    sent: int | None = None
    received: int | None = None
    seconds: float | None = None


EventSink = Callable[[Event], None]


class Settings(NamedTuple):
    """What to serve and within which limits (the options of `sockscope serve`)."""

    address: Address
    mode: str = "print"
    root: str | None = None
    max_conns: int = 1024
    idle_timeout: float | None = None
    request_timeout: float = 10.0
    max_line: int = 64 * 1024
    max_request: int = 64 * 1024
    workers: int = 1
    tls: tuple[str, str] | None = None
    grace: float = 2.0
    backlog: int = 1024
    data_events: bool = True
    trace: bool = False
    uvloop: bool = True


# A receiver in chat mode with more than this waiting to be sent is too slow to keep, and is dropped.
SLOW_RECEIVER = 1 << 20


def check(settings: Settings) -> None:
    """Refuse settings that cannot work together (UsageError)."""
    kind = settings.address.kind
    if settings.mode not in MODES:
        raise UsageError(f"unknown mode {settings.mode!r}: choose one of {', '.join(MODES)}")
    if settings.mode == "http":
        if kind not in ("tcp", "unix"):
            raise UsageError("--mode http needs a stream socket (tcp:// or unix:)")
        if not settings.root or not os.path.isdir(settings.root):
            raise UsageError(f"--root {settings.root!r} is not a directory")
    if settings.tls and kind not in ("tcp", "unix"):
        raise UsageError("--tls needs a stream socket (tcp:// or unix:)")
    if settings.mode == "chat" and settings.workers > 1:
        raise UsageError("--mode chat relays between the clients of one process: use --workers 1")
    if settings.workers < 1 or settings.max_conns < 1:
        raise UsageError("--workers and --max-conns must be at least 1")
    if settings.idle_timeout is not None and settings.idle_timeout <= 0:
        raise UsageError("--idle-timeout must be more than 0 seconds")


def tls_context(cert: str, key: str) -> Any:
    """Give a server SSLContext from a certificate chain and key file (UsageError when unreadable)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {cert!r} and key {key!r}: {exc}") from None
    return context


def _process_name(pid: int) -> str:
    # not owners.process_name: that one caches by pid for one short run; a server lives long and pids are reused
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


class Hub:
    """The state of one worker: its clients, its limits, and where its events go."""

    def __init__(self, settings: Settings, sink: EventSink, worker: int | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.worker = worker
        self.sessions: set[Any] = set()
        self.count = 0
        self.trace = settings.trace
        self.watching = settings.trace or settings.data_events
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.idle_sweep: asyncio.TimerHandle | None = None

    def emit(self, kind: str, **fields: Any) -> None:
        self.sink(Event(kind, worker=self.worker, **fields))

    def narrate(self, text: str) -> None:
        self.sink(Event("trace", detail=text, worker=self.worker))

    def narrator(self) -> Narrate | None:
        return self.narrate if self.trace else None

    def admit(self, session: Any) -> bool:
        """Count a new client in (True), or tell that the server is full or stopping (False)."""
        if self.stopping or len(self.sessions) >= self.settings.max_conns:
            why = "server stopping" if self.stopping else f"--max-conns {self.settings.max_conns} reached"
            self.emit("refused", peer=session.peer, detail=why)
            return False
        self.count += 1
        session.conn = self.count
        self.sessions.add(session)
        self.emit("connect", conn=session.conn, peer=session.peer, pid=session.pid, uid=session.uid)
        return True

    def left(self, session: Any, reason: str | None) -> None:
        if session.conn is None or session not in self.sessions:
            return
        self.sessions.discard(session)
        seconds = time.monotonic() - session.started
        self.emit("close", conn=session.conn, peer=session.peer, sent=session.tx, received=session.rx, seconds=round(seconds, 3), detail=reason)

    def others(self, sender: Any) -> list[Any]:
        return [s for s in self.sessions if s is not sender]

    # idle clients and slow requests are dropped by one sweep over all clients, not a timer each
    def start_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        limits = [t for t in (self.settings.idle_timeout, self.settings.request_timeout if self.settings.mode == "http" else None) if t]
        if limits:
            self.tick = max(0.05, min(1.0, min(limits) / 4))
            self.idle_sweep = loop.call_later(self.tick, self.sweep)

    def sweep(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        idle_limit = self.settings.idle_timeout
        for session in list(self.sessions):
            moved = session.rx + session.tx
            if moved != session.mark:
                session.mark, session.idle = moved, 0.0
            else:
                session.idle += self.tick
            if idle_limit and session.idle >= idle_limit:
                session.drop(f"idle for {idle_limit:g}s")
            else:
                session.check_deadline(now)
        self.idle_sweep = self.loop.call_later(self.tick, self.sweep)


class StreamSession(asyncio.Protocol):
    """One client of a stream (or seqpacket) server. Subclasses are the modes."""

    __slots__ = ("closing_reason", "conn", "fd", "hub", "idle", "mark", "peer", "pid", "rx", "started", "transport", "tx", "uid")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: Any = None
        self.conn: int | None = None
        self.rx = self.tx = self.mark = 0
        self.idle = 0.0
        self.peer = "?"
        self.pid: int | None = None
        self.uid: int | None = None
        self.fd = -1
        self.closing_reason: str | None = None
        self.started = time.monotonic()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        hub = self.hub
        peername = transport.get_extra_info("peername")
        if hub.settings.address.is_unix:
            creds = peer_credentials(transport.get_extra_info("socket"))
            if creds:
                self.pid, self.uid = creds
                self.peer = f"pid {self.pid} ({_process_name(self.pid)}) uid {self.uid}"
            if peername:
                self.peer = f"{sockaddr_text(peername)} {self.peer}"
        else:
            self.peer = sockaddr_text(peername)
        if hub.trace:
            sock = transport.get_extra_info("socket")
            self.fd = sock.fileno() if sock is not None else -1
            hub.narrate(f"accept() = fd {self.fd}, peer {self.peer}")
        if not hub.admit(self):
            transport.abort()
            return
        self.opened()

    def opened(self) -> None:
        """The client is in; a mode may greet it."""

    def received(self, data: bytes) -> None:
        """Count and report bytes that arrived (only called while events or a trace are wanted)."""
        hub = self.hub
        if hub.trace:
            hub.narrate(f"recv(fd {self.fd}) = {len(data)}")
        if hub.settings.data_events:
            hub.emit("data", conn=self.conn, peer=self.peer, size=len(data), data=data)

    def send(self, data: bytes) -> None:
        transport = self.transport
        if self.hub.trace and not transport.is_closing():
            before = transport.get_write_buffer_size()
            transport.write(data)
            queued = transport.get_write_buffer_size() - before
            rest = f" ({queued} queued until the socket can take them)" if queued else ""
            self.hub.narrate(f"send(fd {self.fd}, {len(data)} bytes) = {len(data) - queued}{rest}")
        else:
            transport.write(data)
        self.tx += len(data)

    def eof_received(self) -> bool | None:
        if self.hub.trace:
            self.hub.narrate(f"recv(fd {self.fd}) = 0: the client shut down its writing side")
        self.closing_reason = self.closing_reason or "client closed"
        return False  # close once what is queued is sent

    def connection_lost(self, exc: Exception | None) -> None:
        hub = self.hub
        if hub.trace and self.conn is not None:
            hub.narrate(f"close(fd {self.fd}) = 0")
        reason = self.closing_reason or (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) if exc else "client closed")
        hub.left(self, reason)

    def pause_writing(self) -> None:
        # the client reads slower than it writes: stop reading until it catches up
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def drop(self, reason: str) -> None:
        """Close this client now (what is queued is still sent)."""
        self.closing_reason = self.closing_reason or reason
        self.transport.close()

    def stop(self) -> None:
        """The server is stopping: a mode may end the session early (an idle HTTP keep-alive)."""

    def check_deadline(self, now: float) -> None:
        """Drop the client if a mode's deadline has passed (HTTP: a request that does not complete)."""


class EchoSession(StreamSession):
    """Send back every byte, in order."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if self.hub.watching:
            self.rx += len(data)
            self.received(data)
            self.send(data)
            return
        self.rx += len(data)
        self.tx += len(data)
        self.transport.write(data)


class PrintSession(StreamSession):
    """Report what the client sends; send nothing back."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        if self.hub.watching:
            self.received(data)


DiscardSession = PrintSession  # the same session; discard simply wants no data events


class ChatSession(StreamSession):
    """Every line a client sends goes to all the others, after the sender's address."""

    __slots__ = ("pending",)

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.pending = b""

    def opened(self) -> None:
        self.relay(f"* {self.peer} joined\n".encode())

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        if self.hub.watching:
            self.received(data)
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > self.hub.settings.max_line:
            self.send(b"* line too long: closing\n")
            self.drop(f"line longer than {self.hub.settings.max_line} bytes")
            return
        for line in lines:
            self.relay(b"[" + self.peer.encode() + b"] " + line.rstrip(b"\r") + b"\n")

    def relay(self, message: bytes) -> None:
        for other in self.hub.others(self):
            if other.transport.is_closing():
                continue
            if other.transport.get_write_buffer_size() > SLOW_RECEIVER:
                other.drop("too slow to keep up with the chat")
            else:
                other.send(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None and self in self.hub.sessions:
            self.relay(f"* {self.peer} left\n".encode())
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """Chat does not stop reading a client because another one is slow; see relay()."""

    def resume_writing(self) -> None:
        """See pause_writing."""


def session_class(mode: str) -> type[StreamSession]:
    """Give the session class of a mode."""
    if mode == "http":
        from .http import HttpSession

        return HttpSession
    return {"echo": EchoSession, "print": PrintSession, "discard": DiscardSession, "chat": ChatSession}[mode]


class PacketTransport(asyncio.Transport):
    """A transport for one connected SOCK_SEQPACKET socket: each write is one message, kept whole."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: StreamSession) -> None:
        super().__init__()
        self.loop, self.sock, self.protocol = loop, sock, protocol
        self.fd = sock.fileno()
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.closing = False
        self.reading = True
        self.writing_paused = False
        protocol.connection_made(self)
        if not self.closing:
            loop.add_reader(self.fd, self._readable)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "peername":
            with contextlib.suppress(OSError):
                return self.sock.getpeername()
        return default

    def _readable(self) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(exc)
            return
        if not data:
            self.loop.remove_reader(self.fd)
            if not self.protocol.eof_received():
                self.close()
            return
        self.protocol.data_received(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            return
        if not self.queue:
            try:
                self.sock.send(data)
                return
            except (BlockingIOError, InterruptedError):
                self.loop.add_writer(self.fd, self._writable)
            except OSError as exc:
                self._finish(exc)
                return
        self.queue.append(bytes(data))
        self.queued += len(data)
        if self.queued > SLOW_RECEIVER and not self.writing_paused:
            self.writing_paused = True
            self.protocol.pause_writing()

    def _writable(self) -> None:
        while self.queue:
            try:
                self.sock.send(self.queue[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._finish(exc)
                return
            self.queued -= len(self.queue.popleft())
        self.loop.remove_writer(self.fd)
        if self.writing_paused:
            self.writing_paused = False
            self.protocol.resume_writing()
        if self.closing:
            self._finish(None)

    def get_write_buffer_size(self) -> int:
        return self.queued

    def pause_reading(self) -> None:
        if self.reading and not self.closing:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume_reading(self) -> None:
        if not self.reading and not self.closing:
            self.reading = True
            self.loop.add_reader(self.fd, self._readable)

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.loop.remove_reader(self.fd)
        if not self.queue:
            self._finish(None)

    def abort(self) -> None:
        self.closing = True
        self.queue.clear()
        self._finish(None)

    def _finish(self, exc: Exception | None) -> None:
        if self.sock.fileno() < 0:
            return
        self.closing = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()
        self.loop.call_soon(self.protocol.connection_lost, exc)


def _serve_packets(loop: asyncio.AbstractEventLoop, listener: socket.socket, factory: Callable[[], StreamSession]) -> Callable[[], None]:
    """Accept seqpacket clients on `listener`; give the function that stops accepting."""

    def acceptable() -> None:
        for _ in range(64):
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: try again on the next wake-up
                return
            conn.setblocking(False)
            PacketTransport(loop, conn, factory())

    loop.add_reader(listener.fileno(), acceptable)

    def stop() -> None:
        loop.remove_reader(listener.fileno())

    return stop


class Peer:
    """A datagram peer, known from the datagrams it sent; forgotten after a silence."""

    __slots__ = ("address", "conn", "creds", "last", "name", "rx", "started", "tx")

    def __init__(self, address: Any, name: str, conn: int, creds: tuple[int, int] | None) -> None:
        self.address, self.name, self.conn, self.creds = address, name, conn, creds
        self.rx = self.tx = 0
        self.started = self.last = time.monotonic()


_CREDS_SPACE = socket.CMSG_SPACE(12)


class DatagramServer:
    """UDP and unix datagram sockets: every datagram handled on its own, many peers at once."""

    def __init__(self, hub: Hub, sock: socket.socket) -> None:
        self.hub, self.sock = hub, sock
        self.mode = hub.settings.mode
        self.peers: dict[Any, Peer] = {}
        self.unix = sock.family == socket.AF_UNIX
        self.forget_after = hub.settings.idle_timeout or 60.0
        self.unreplyable_told = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self.readable)
        self.timer = loop.call_later(min(1.0, self.forget_after / 4), self.forget)

    def stop(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.timer.cancel()
        for peer in list(self.peers.values()):
            self.gone(peer, "server stopped")

    def readable(self) -> None:
        sock = self.sock
        for _ in range(256):
            try:
                data, ancillary, flags, address = sock.recvmsg(65536, _CREDS_SPACE if self.unix else 0)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error reported on the socket: nothing to answer
                continue
            creds = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 12:
                    pid, uid, _gid = struct.unpack("3i", payload[:12])
                    creds = (pid, uid)
            self.datagram(data, address or None, creds, bool(flags & socket.MSG_TRUNC))

    def peer(self, address: Any, creds: tuple[int, int] | None) -> Peer:
        key = address if address is not None else ("unnamed", creds)
        found = self.peers.get(key)
        if found is None:
            hub = self.hub
            if len(self.peers) >= hub.settings.max_conns:  # the least recently heard peer makes room
                oldest = min(self.peers.values(), key=lambda p: p.last)
                self.gone(oldest, f"--max-conns {hub.settings.max_conns} peers reached")
            name = sockaddr_text(address) if address is not None else "(unnamed)"
            if creds:
                name = f"{name} pid {creds[0]} ({_process_name(creds[0])}) uid {creds[1]}"
            hub.count += 1
            found = Peer(address, name, hub.count, creds)
            self.peers[key] = found
            hub.emit("connect", conn=found.conn, peer=name, pid=creds[0] if creds else None, uid=creds[1] if creds else None, detail="first datagram")
        found.last = time.monotonic()
        return found

    def datagram(self, data: bytes, address: Any, creds: tuple[int, int] | None, truncated: bool) -> None:
        hub = self.hub
        peer = self.peer(address, creds)
        peer.rx += len(data)
        if hub.trace:
            hub.narrate(f"recvmsg(fd {self.sock.fileno()}) = {len(data)} from {peer.name}" + (" (MSG_TRUNC: cut to 65536)" if truncated else ""))
        if hub.settings.data_events:
            hub.emit("data", conn=peer.conn, peer=peer.name, size=len(data), data=data)
        if self.mode == "echo":
            self.send(peer, data)
        elif self.mode == "chat":
            for line in data.splitlines():
                message = b"[" + peer.name.encode() + b"] " + line + b"\n"
                for other in list(self.peers.values()):
                    if other is not peer:
                        self.send(other, message)

    def send(self, peer: Peer, data: bytes) -> None:
        if peer.address is None:
            if not self.unreplyable_told:
                self.unreplyable_told = True
                self.hub.emit("warning", peer=peer.name, detail="a client socket without a name cannot be answered (bind the client to a path)")
            return
        try:
            sent = self.sock.sendto(data, peer.address)
        except OSError as exc:  # a full buffer or a peer gone: a datagram is allowed to be lost
            if self.hub.trace:
                self.hub.narrate(f"sendto(fd {self.sock.fileno()}, {len(data)} bytes, {peer.name}) = -1 ({exc.strerror})")
            return
        peer.tx += sent
        if self.hub.trace:
            self.hub.narrate(f"sendto(fd {self.sock.fileno()}, {len(data)} bytes, {peer.name}) = {sent}")

    def forget(self) -> None:
        limit = time.monotonic() - self.forget_after
        for peer in [p for p in self.peers.values() if p.last < limit]:
            self.gone(peer, f"silent for {self.forget_after:g}s")
        self.timer = self.loop.call_later(min(1.0, self.forget_after / 4), self.forget)

    def gone(self, peer: Peer, reason: str) -> None:
        key = peer.address if peer.address is not None else ("unnamed", peer.creds)
        self.peers.pop(key, None)
        seconds = round(time.monotonic() - peer.started, 3)
        self.hub.emit("close", conn=peer.conn, peer=peer.name, sent=peer.tx, received=peer.rx, seconds=seconds, detail=reason)


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


def _split(listeners: list[socket.socket], settings: Settings) -> list[list[socket.socket]]:
    """Give each worker its own sockets (SO_REUSEPORT), or all workers the one unix socket."""
    if settings.address.is_unix or settings.workers == 1:
        return [listeners] * settings.workers
    per = len(listeners) // settings.workers
    return [listeners[i * per : (i + 1) * per] for i in range(settings.workers)]


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

    for sock in listeners:
        if sock.type == socket.SOCK_DGRAM:
            server = DatagramServer(hub, sock)
            server.start(loop)
            datagrams.append(server)
        elif sock.type == socket.SOCK_SEQPACKET:
            closers.append(_serve_packets(loop, sock, factory))
        else:
            if sock.family == socket.AF_UNIX:
                made = await loop.create_unix_server(factory, sock=sock, ssl=ssl_context, backlog=settings.backlog)
            else:
                made = await loop.create_server(factory, sock=sock, ssl=ssl_context, backlog=settings.backlog)
            closers.append(made.close)
    hub.start_sweeping(loop)
    await stop.wait()
    # stop: no new clients; those connected get `grace` seconds to finish, then are closed
    hub.stopping = True
    for close in closers:
        close()
    for server in datagrams:
        server.stop()
    hub.emit("stopping", size=len(hub.sessions), detail=f"waiting up to {settings.grace:g}s for {len(hub.sessions)} clients")
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
    for _ in range(3):
        await asyncio.sleep(0)
    if hub.idle_sweep:
        hub.idle_sweep.cancel()
    hub.emit("stopped", detail=f"{hub.count} clients served")


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
        return _run_workers(settings, sink, listeners, ssl_context)
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


def _run_workers(settings: Settings, sink: EventSink, listeners: list[socket.socket], ssl_context: Any) -> int:
    children: list[int] = []
    for index, mine in enumerate(_split(listeners, settings)):
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                for sock in listeners:
                    if sock not in mine:
                        sock.close()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
                run_worker(settings, sink, mine, index + 1, ssl_context)
            except BaseException as exc:
                sink(Event("error", detail=f"worker {index + 1} failed: {exc}", worker=index + 1))
                status = 5
            os._exit(status)
        children.append(pid)
    for sock in listeners:
        sock.close()
    # the parent forwards SIGINT/SIGTERM to its workers and waits for them all
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    worst = 0
    for child in children:
        while True:
            try:
                _pid, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 5)
    return worst

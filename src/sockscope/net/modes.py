"""The stream modes: one asyncio Protocol per client (echo, print, discard; chat is `chat.py`).

`StreamSession` holds what every mode shares (counting, events, the trace, flow control);
each mode is a small subclass. HTTP is its own module (`http.py`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..address import sockaddr_text
from .hub import Hub, process_name
from .listeners import peer_credentials


class StreamSession(asyncio.Protocol):
    """One client of a stream (or seqpacket) server. Subclasses are the modes."""

    __slots__ = ("client", "closing_reason", "conn", "fd", "hub", "idle", "mark", "peer", "pid", "rx", "started", "transport", "tx", "uid")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: Any = None
        self.conn: int | None = None
        self.rx = self.tx = self.mark = 0
        self.idle = 0.0
        self.peer = "?"
        self.client: Any = None  # what --max-per-client counts by: the peer's address, or its uid over unix
        self.pid: int | None = None
        self.uid: int | None = None
        self.fd = -1
        self.closing_reason: str | None = None
        self.started = time.monotonic()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.conn is None and not self.arrived(transport):
            return
        self.opened()

    def arrived(self, transport: Any) -> bool:
        """Name the client and count it in (True), or refuse it and close its connection (False)."""
        self.transport = transport
        hub = self.hub
        peername = transport.get_extra_info("peername")
        if hub.settings.address.is_unix:
            creds = peer_credentials(transport.get_extra_info("socket"))
            if creds:
                self.pid, self.uid = creds
                self.peer = f"pid {self.pid} ({process_name(self.pid)}) uid {self.uid}"
            if peername:
                self.peer = f"{sockaddr_text(peername)} {self.peer}"
            self.client = ("uid", self.uid)
        else:
            self.peer = sockaddr_text(peername)
            self.client = peername[0] if peername else None
        if hub.trace:
            sock = transport.get_extra_info("socket")
            self.fd = sock.fileno() if sock is not None else -1
            hub.narrate(f"accept() = fd {self.fd}, peer {self.peer}")
        if not hub.admit(self):
            transport.abort()
            return False
        return True

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

    def cut(self, reason: str) -> None:
        """Close this client now, throwing away what is queued for it (it does not read: waiting would hold it forever)."""
        self.closing_reason = self.closing_reason or reason
        self.transport.abort()

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

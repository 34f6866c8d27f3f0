"""The stream modes: one asyncio Protocol per client (echo, print, discard, chat).

`StreamSession` holds what every mode shares (counting, events, the trace, flow control);
each mode is a small subclass. HTTP is its own module (`http.py`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..address import sockaddr_text
from .hub import SLOW_RECEIVER, Hub, printable_text, process_name
from .listeners import peer_credentials


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
                self.peer = f"pid {self.pid} ({process_name(self.pid)}) uid {self.uid}"
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
        self.relay(f"* {printable_text(self.peer)} joined\n".encode())

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
            self.relay(b"[" + printable_text(self.peer).encode() + b"] " + line.rstrip(b"\r") + b"\n")

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
            self.relay(f"* {printable_text(self.peer)} left\n".encode())
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """Chat does not stop reading a client because another one is slow; see relay()."""

    def resume_writing(self) -> None:
        """See pause_writing."""

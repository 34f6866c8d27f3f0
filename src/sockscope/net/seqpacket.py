"""Unix SOCK_SEQPACKET clients, which asyncio does not take: a small transport of their own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from .hub import SLOW_RECEIVER
from .listeners import accept_clients, peer_shut_down
from .modes import StreamSession


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
        self.high = SLOW_RECEIVER
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
        if not data and not peer_shut_down(self.fd):
            self.protocol.data_received(data)  # an empty message, a record of its own (EOF reads empty as well)
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
        if self.queued > self.high and not self.writing_paused:
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

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        # writing resumes once the queue is empty, whatever `low` says
        self.high = SLOW_RECEIVER if high is None else high

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


def serve_packets(loop: asyncio.AbstractEventLoop, listener: socket.socket, factory: Callable[[], StreamSession]) -> Callable[[], None]:
    """Accept seqpacket clients on `listener`; give the function that stops accepting."""
    return accept_clients(loop, listener, lambda conn: PacketTransport(loop, conn, factory()))

"""`serve --mode http`: static files and directory listings over HTTP/1.1.

Requests are parsed by httptools (the llhttp parser of Node.js): framing, chunked bodies,
HTTP/1.0 and keep-alive rules, malformed and smuggling-prone input. The file side (the root jail
and `answer()`) is `files.py`; `HttpSession` keeps answers in request order and bounds what one
client can make the server hold: it stops reading a client whose answers are not being read,
streams files from their descriptor only when the transport has room, and keeps small files in a
cache bounded in total bytes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus

import httptools

from .. import __version__
from ..records import NamedTuple
from .files import Reply, answer, http_date, page
from .hub import Hub
from .jail import root_of
from .modes import StreamSession

SERVER = f"sockscope/{__version__}".encode()
CACHE_FILE = 64 * 1024  # files up to this size are kept in memory ...
CACHE_TOTAL = 16 << 20  # ... up to this many bytes in all, per process
CHUNK = 32 * 1024
# Bytes queued in our process for one client beyond what its socket took, before we stop answering
# (and reading) it: at most HIGH_WATER + one CHUNK or one cached file stay here per client.
HIGH_WATER = 32 * 1024
READ = 16 * 1024  # bytes read from a client at once (the event loop's own reads take 256 KiB)
FEED = 2 * 1024  # bytes parsed at once, so that a burst of pipelined requests stops near the queue's bound
PIPELINE_DEPTH = 32  # requests parsed ahead of their answers
PIPELINE_BYTES = 64 * 1024  # and their heads' bytes


class FileCache:
    """Small files kept in memory, keyed by (device, inode, mtime_ns, size) from fstat of the descriptor opened for a request."""

    def __init__(self, limit: int = CACHE_TOTAL) -> None:
        self.files: dict[tuple[int, int, int, int], bytes] = {}
        self.limit = limit
        self.total = 0

    def get(self, fd: int, key: tuple[int, int, int, int]) -> bytes | None:
        """Give the whole content of a small file (from memory, or read now from `fd`), or None for a large one."""
        found = self.files.pop(key, None)
        if found is not None:
            self.files[key] = found  # the most recently used goes last: the oldest leave first
            return found
        size = key[3]
        if size > CACHE_FILE:
            return None
        try:
            data = os.pread(fd, size + 1, 0)
        except OSError:
            return None
        if len(data) != size:
            return None  # changing while read: it is sent from the descriptor this once
        self.files[key] = data
        self.total += size
        while self.total > self.limit:
            oldest = next(iter(self.files))
            self.total -= len(self.files.pop(oldest))
        return data


class _Clock:
    """The Date header, made once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, http_date(second)
        return self.text


class Request(NamedTuple):
    """One parsed request waiting for its answer."""

    method: bytes
    target: bytes
    headers: dict[bytes, bytes]
    keep_alive: bool
    old: bool  # HTTP/1.0: its keep-alive must be confirmed in the answer
    size: int


_CLOCK = _Clock()
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_FILES = FileCache()  # one per process (each worker is a process)
_READ_BUFFER = bytearray(READ)  # one for all clients: what a read leaves unparsed is copied out before the next read
_REFUSAL = b"HTTP/1.1 %d %s\r\nconnection: close\r\ncontent-length: 0\r\nserver: " + SERVER + b"\r\n\r\n"


class _Stop(Exception):
    """Raised from a parser callback to stop reading this client (the reason is already set)."""


class HttpSession(StreamSession, asyncio.BufferedProtocol):
    """One HTTP client: requests are parsed by httptools (llhttp), answered by `answer()` in order.

    It is a BufferedProtocol so that reads are small and land in one shared buffer: a client that
    pipelines requests it never reads costs what is parsed, not what the loop could read at once.
    """

    __slots__ = (
        "begun", "halted", "head_size", "headers", "held", "held_at", "parser", "pump", "queue", "queued_bytes", "reading", "refusal",
        "request_since", "url",
    )  # fmt: skip

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.queued_bytes = 0
        self.pump: tuple[int, int, int, bool] | None = None  # descriptor, offset, bytes left, keep-alive
        self.request_since: float | None = time.monotonic()
        self.begun = False  # some bytes of the request being waited for have arrived
        self.refusal: tuple[int, str] | None = None
        self.halted = False  # the parser stopped on a request whose body is not read
        self.held: bytes | memoryview = b""  # received, not parsed yet (parsing waits while the queue is full)
        self.held_at = 0
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.head_size = 0
        self.reading = True

    def opened(self) -> None:
        self.transport.set_write_buffer_limits(high=HIGH_WATER, low=HIGH_WATER // 4)
        self.request_since = time.monotonic()

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.head_size = b"", {}, 0
        self.begun = True
        if self.request_since is None:
            self.request_since = time.monotonic()

    def _count(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.hub.settings.max_request:
            self.refusal = (431, f"request head over {self.hub.settings.max_request} bytes")
            raise _Stop

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        key = name.lower()
        self.headers[key] = self.headers[key] + b", " + value if key in self.headers else value

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD"):  # answer at once; its body is not read
            self._queue(method, False)
            self.halted = True
            raise _Stop

    def on_message_complete(self) -> None:
        self._queue(self.parser.get_method(), self.parser.should_keep_alive())
        self.request_since = None
        self.begun = False

    def _queue(self, method: bytes, keep_alive: bool) -> None:
        self.queue.append(Request(method, self.url, self.headers, keep_alive, self.parser.get_http_version() == "1.0", self.head_size))
        self.queued_bytes += self.head_size

    # -- the connection
    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(_READ_BUFFER)

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(memoryview(_READ_BUFFER)[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self.rx += len(data)
        if self.hub.trace:
            self.hub.narrate(f"recv(fd {self.fd}) = {len(data)}")
        if self.refusal is not None or self.halted:
            return
        self.held = bytes(self.held[self.held_at :]) + bytes(data) if self.held_at < len(self.held) else data
        self.held_at = 0
        self.guarded(self.advance)
        if self.held_at < len(self.held):
            self.held = bytes(self.held[self.held_at :])  # out of the shared buffer before the next read
        else:
            self.held = b""
        self.held_at = 0

    def guarded(self, step: Callable[[], None]) -> None:
        """Run one step of this session; an error of ours ends this client with an event, never a traceback."""
        try:
            step()
        except Exception as exc:  # one client's failure must not reach the event loop's printer
            self.hub.emit("error", conn=self.conn, peer=self.peer, detail=f"internal error, connection closed: {exc!r}")
            self.closing_reason = self.closing_reason or f"internal error: {type(exc).__name__}"
            self.transport.abort()

    def _room(self) -> bool:
        return len(self.queue) < PIPELINE_DEPTH and self.queued_bytes < PIPELINE_BYTES

    def parse_held(self) -> None:
        """Parse what was received, until the queue of requests waiting for answers is full."""
        while self.held_at < len(self.held) and self.refusal is None and not self.halted and self._room():
            start = self.held_at
            piece = memoryview(self.held)[start : start + FEED]
            self.held_at = start + len(piece)
            try:
                self.parser.feed_data(piece)
            except _Stop:
                pass
            except httptools.HttpParserUpgrade as exc:
                # Upgrade is ignored (RFC 9110 7.8 allows it): the request was answered as plain HTTP, and
                # what follows its head is read as the next request, by a fresh parser
                self.parser = httptools.HttpRequestParser(self)
                self.held_at = start + int(exc.args[0]) if exc.args else self.held_at
            except httptools.HttpParserCallbackError as exc:
                if not isinstance(exc.__context__, _Stop):
                    raise
            except httptools.HttpParserError as exc:
                self.refusal = (400, str(exc) or "malformed request")
        if self.held_at >= len(self.held):
            self.held, self.held_at = b"", 0

    def advance(self) -> None:
        """Parse what is held, answer what is queued while the client takes it, then read more only if there is room."""
        transport = self.transport
        while not transport.is_closing():
            self.parse_held()
            if not self.queue or self.pump is not None or transport.get_write_buffer_size() > HIGH_WATER:
                break
            request = self.queue.popleft()
            self.queued_bytes -= request.size
            self.request(request)
        if transport.is_closing() or self.pump is not None or self.queue:
            self.flow()
            return
        if self.refusal is not None:
            status, why = self.refusal
            self.send(_REFUSAL % (status, _REASONS.get(status, b"Bad Request")))
            self.drop(f"bad request: {why}")
        elif self.closing_reason == "client closed" and not self.held:
            transport.close()
        else:
            if self.request_since is None:  # the previous answer is out: the next request is waited for from now
                self.request_since = time.monotonic()
            self.flow()

    def flow(self) -> None:
        """Read from the client only while its answers are being taken and its queue has room."""
        transport = self.transport
        if transport.is_closing():
            return
        wanted = self.refusal is None and not self.halted and self._room() and not self.held and transport.get_write_buffer_size() <= HIGH_WATER
        if wanted != self.reading:  # only changes reach the transport: most answers change nothing
            self.reading = wanted
            if wanted:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def eof_received(self) -> bool | None:
        super().eof_received()
        self.guarded(self.advance)
        return bool(self.pump is not None or self.queue or self.held)  # keep answering what the client still waits for

    def request(self, request: Request) -> None:
        """Answer one request: the head and a small body at once, a large file by the pump."""
        hub = self.hub
        method, target, keep_alive = request.method, request.target, request.keep_alive
        try:
            reply = answer(root_of(hub.settings.root or "."), method, target, request.headers)
            body = reply.body
            if reply.fd is not None and reply.key is not None:
                whole = _FILES.get(reply.fd, reply.key)
                if whole is not None:
                    body = whole[reply.offset : reply.offset + reply.length]
                    os.close(reply.fd)
                    reply = reply._replace(fd=None)
        except Exception as exc:  # one bad request is a 500, not a dead server
            hub.emit("warning", conn=self.conn, peer=self.peer, detail=f"internal error answering {target[:200]!r}: {exc!r}")
            reply = page(500, "internal server error")
            body = reply.body
        if hub.settings.data_events:
            shown = f"{method.decode('ascii', 'replace')} {target.decode('ascii', 'backslashreplace')} {reply.status}"
            hub.emit("data", conn=self.conn, peer=self.peer, size=reply.length or len(body), detail=shown)
        head = self._head(reply, keep_alive, request.old)
        no_body = method == b"HEAD" or reply.status == 304
        if reply.fd is not None and not no_body and reply.length:
            self.send(head)
            self.pump = (reply.fd, reply.offset, reply.length, keep_alive)
            self.pump_more()
            return
        if reply.fd is not None:
            os.close(reply.fd)
        self.send(head if no_body else head + body)  # one write: one segment for a small answer
        if not keep_alive:
            self.queue.clear()
            self.drop("response sent with connection: close")

    @staticmethod
    def _head(reply: Reply, keep_alive: bool, old: bool) -> bytes:
        head = [b"HTTP/1.1 %d %s\r\n" % (reply.status, _REASONS.get(reply.status, b""))]
        head += [name + b": " + value + b"\r\n" for name, value in reply.headers]
        head.append(b"date: " + _CLOCK.now() + b"\r\nserver: " + SERVER + b"\r\n")
        if not keep_alive:
            head.append(b"connection: close\r\n")
        elif old:  # an HTTP/1.0 client asked for keep-alive: say it is kept, or it closes
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    def pump_more(self) -> None:
        """Send more of the file being sent, as far as the transport has room; the rest on resume_writing."""
        assert self.pump is not None
        fd, offset, remaining, keep_alive = self.pump
        transport = self.transport
        while remaining and transport.get_write_buffer_size() <= HIGH_WATER and not transport.is_closing():  # as the transport's pause_writing
            chunk = os.pread(fd, min(CHUNK, remaining), offset)
            if not chunk:  # the file shrank after its length was promised: the client must not take it as whole
                os.close(fd)
                self.pump = None
                self.closing_reason = "file shrank while being sent"
                transport.abort()
                return
            offset += len(chunk)
            remaining -= len(chunk)
            self.send(chunk)
        if remaining and not transport.is_closing():
            self.pump = (fd, offset, remaining, keep_alive)
            self.flow()
            return
        os.close(fd)
        self.pump = None
        if not keep_alive:
            self.queue.clear()
            self.drop("response sent with connection: close")
        else:
            self.advance()

    def pause_writing(self) -> None:
        self.reading = False
        self.transport.pause_reading()  # answers are not being taken: read no more requests

    def resume_writing(self) -> None:
        self.guarded(self.pump_more if self.pump is not None else self.advance)

    def stop(self) -> None:
        if self.pump is None and not self.begun and not self.queue and not self.held:
            self.drop("server stopping (idle keep-alive)")

    def check_deadline(self, now: float) -> None:
        since = self.request_since
        if since is None or self.pump is not None or self.queue or self.transport.is_closing():
            return
        limit = self.hub.settings.request_timeout
        if time.monotonic() - since <= limit:  # the loop's clock may not be time.monotonic (uvloop)
            return
        if self.begun or self.held:
            self.refusal = (408, f"request not complete after {limit:g}s")
            self.guarded(self.advance)
        else:
            self.drop(f"no request within {limit:g}s")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pump is not None:
            os.close(self.pump[0])
            self.pump = None
        super().connection_lost(exc)

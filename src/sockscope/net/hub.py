"""The state one serving process shares among its clients: settings, limits, events.

`Event`s are how the server tells what happens (the library prints nothing); `Hub` counts clients
in and out, applies the limits and sweeps idle and slow clients once per tick.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from typing import Any

from ..address import Address
from ..errors import SockscopeError, UsageError
from ..records import NamedTuple
from .listeners import Narrate

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
    max_per_client: int | None = None  # None: per_client_limit(max_conns)
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


# A seqpacket transport with more than this waiting to be sent asks its session to stop reading.
SLOW_RECEIVER = 1 << 20


def per_client_limit(settings: Settings) -> int:
    """Give how many connections one client address (one uid over unix) may hold at once.

    By default an eighth of --max-conns: one address cannot take more than its share, so it takes
    at least eight to lock everyone out, and 128 of the default 1024 is far above what a browser
    (6 per host) or a pool of keep-alive connections opens. Never below 16 (or --max-conns when
    smaller): on a small server a lower cap would turn away real clients more than attackers.
    """
    if settings.max_per_client is not None:
        return settings.max_per_client
    return max(min(settings.max_conns, 16), settings.max_conns // 8)


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
        try:
            import httptools  # noqa: F401 (checked here, before listening, not at the first client)
        except ImportError as exc:
            raise SockscopeError(f"--mode http needs the httptools package, which this python cannot import ({exc})") from None
    if settings.tls and kind not in ("tcp", "unix"):
        raise UsageError("--tls needs a stream socket (tcp:// or unix:)")
    if settings.mode == "chat" and settings.workers > 1:
        raise UsageError("--mode chat relays between the clients of one process: use --workers 1")
    if settings.workers < 1 or settings.max_conns < 1 or (settings.max_per_client is not None and settings.max_per_client < 1):
        raise UsageError("--workers, --max-conns and --max-per-client must be at least 1")
    if settings.idle_timeout is not None and settings.idle_timeout <= 0:
        raise UsageError("--idle-timeout must be more than 0 seconds")


# Control characters (C0, DEL, C1) and the bidirectional overrides a client could use to rewrite what an
# operator sees; the backslash is doubled so that an escape in the output always means an escape.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES |= {c: f"\\u{c:04x}" for c in (*range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)}
_ESCAPES_ALL = _ESCAPES | {0x5C: "\\\\"}


def printable(data: bytes) -> str:
    """Give `data` as text safe to show on a terminal: UTF-8, with control characters as `\\x1b`, `\\r`, `\\n`,
    `\\t`, C1 and bidi controls as `\\u009b`, bytes that are not UTF-8 as `\\xff`, and `\\` doubled."""
    try:
        return data.decode().translate(_ESCAPES_ALL)
    except UnicodeDecodeError:
        return data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace").translate(_ESCAPES)


def printable_text(text: str) -> str:
    """Give `text` (a name that may hold anything, even undecodable bytes as surrogates) escaped as `printable` does."""
    if text.isprintable() and "\\" not in text:
        return text
    return printable(text.encode("utf-8", "surrogateescape"))


# after this many clients left, the memory their buffers held is given back to the system (see give_back_memory)
TRIM_AFTER = 64


def give_back_memory() -> None:
    """Ask glibc to return the free memory it keeps to the system (malloc_trim); nothing elsewhere.

    Python frees a client's buffers when it leaves, but glibc keeps freed memory in its arenas: after
    a thousand clients with a megabyte queued each, the server would stay a gigabyte large.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no arenas to trim)
        return None


def process_name(pid: int) -> str:
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
        self.per_client = per_client_limit(settings)
        self.clients: dict[Any, int] = {}  # connections held, by client address (or uid)
        self.count = 0
        self.trace = settings.trace
        self.watching = settings.trace or settings.data_events
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.idle_sweep: asyncio.TimerHandle | None = None
        self.room: Any = None  # chat mode: the chat.ChatRoom all clients share
        self.departed = 0  # clients left since memory was last given back
        self.trimming: asyncio.TimerHandle | None = None
        self.trimmed = -1.0

    def emit(self, kind: str, **fields: Any) -> None:
        self.sink(Event(kind, worker=self.worker, **fields))

    def narrate(self, text: str) -> None:
        self.sink(Event("trace", detail=text, worker=self.worker))

    def narrator(self) -> Narrate | None:
        return self.narrate if self.trace else None

    def admit(self, session: Any) -> bool:
        """Count a new client in (True), or tell that the server is full, the client holds its share, or the server stops (False)."""
        held = self.clients.get(session.client, 0)
        why = None
        if self.stopping:
            why = "server stopping"
        elif len(self.sessions) >= self.settings.max_conns:
            why = f"--max-conns {self.settings.max_conns} reached"
        elif held >= self.per_client:
            why = f"--max-per-client {self.per_client} reached"
        if why:
            self.emit("refused", peer=session.peer, detail=why)
            return False
        self.clients[session.client] = held + 1
        self.count += 1
        session.conn = self.count
        self.sessions.add(session)
        self.emit("connect", conn=session.conn, peer=session.peer, pid=session.pid, uid=session.uid)
        return True

    def left(self, session: Any, reason: str | None) -> None:
        if session.conn is None or session not in self.sessions:
            return
        self.sessions.discard(session)
        held = self.clients.pop(session.client, 1) - 1
        if held:
            self.clients[session.client] = held
        self.departed += 1
        if self.departed >= TRIM_AFTER and self.trimming is None and self.loop is not None:
            # at most once a second, and half a second after the first of a burst leaves: uvloop frees a
            # transport's buffers only when libuv has closed its handle, a few loop turns later
            self.trimming = self.loop.call_later(max(0.5, self.trimmed + 1.0 - self.loop.time()), self.trim)
        seconds = time.monotonic() - session.started
        self.emit("close", conn=session.conn, peer=session.peer, sent=session.tx, received=session.rx, seconds=round(seconds, 3), detail=reason)

    def trim(self, settle: bool = True) -> None:
        assert self.loop is not None
        self.trimming, self.departed, self.trimmed = None, 0, self.loop.time()
        give_back_memory()
        if settle:  # what the loop frees in the turns after a burst is given back a second later
            self.trimming = self.loop.call_later(1.0, self.trim, False)

    # idle clients and slow requests are dropped by one sweep over all clients, not a timer each
    def start_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # --request-timeout bounds HTTP requests (checked here) and TLS handshakes (by the handshake's own timer, tls.py)
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
                if session.transport.get_write_buffer_size():  # nothing moved: it does not read what waits for it
                    session.cut(f"idle for {idle_limit:g}s")
                else:
                    session.drop(f"idle for {idle_limit:g}s")
            else:
                session.check_deadline(now)
        self.idle_sweep = self.loop.call_later(self.tick, self.sweep)

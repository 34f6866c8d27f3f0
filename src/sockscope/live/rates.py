"""Rates between refreshes: each socket's send and receive rate from its tcp_info byte counters,
diffed by socket cookie, and the connections that closed since (kept a few seconds, marked).

Pure: sockets and a time go in, records come out. The cookie tells a new connection from an
old one on the same ports, so a reused port never shows the old connection's counters as a burst.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from typing import NamedTuple

from ..model import Socket, State, TcpInfo

LINGER = 5.0  # seconds a closed connection stays on screen


class Conn(NamedTuple):
    """One socket as a live view shows it.

    `send_rate` is bytes per second the peer acknowledged since the previous refresh,
    `recv_rate` bytes per second received; None when not known yet (first sight, no tcp_info).
    `closed_at` is when it was first missing (monotonic seconds), None while it lives.
    """

    sock: Socket
    key: Hashable
    send_rate: float | None = None
    recv_rate: float | None = None
    closed_at: float | None = None

    @property
    def tcp(self) -> TcpInfo | None:
        """Give the socket's tcp_info, or None when it has none (not asked for, TIME-WAIT, UDP)."""
        internals = self.sock.internals
        return internals.tcp if internals is not None else None


def socket_key(sock: Socket) -> Hashable:
    """Give what names a socket across refreshes: its cookie, or (from /proc) its ends and inode."""
    return sock.cookie if sock.cookie is not None else (sock.netid, sock.local, sock.peer, sock.inode)


class Rates:
    """The diff between refreshes: call `update()` with each refresh's sockets."""

    def __init__(self, linger: float = LINGER) -> None:
        self.linger = linger
        self._counters: dict[Hashable, tuple[float, int, int]] = {}  # key -> (time, bytes_acked, bytes_received)
        self._live: dict[Hashable, Conn] = {}
        self._closed: dict[Hashable, Conn] = {}

    def update(self, sockets: Iterable[Socket], now: float) -> list[Conn]:
        """Give the live connections with their rates since the last update, then the recently closed ones."""
        before = self._counters
        counters: dict[Hashable, tuple[float, int, int]] = {}
        live: dict[Hashable, Conn] = {}
        for sock in sockets:
            key = sock.cookie if sock.cookie is not None else socket_key(sock)
            internals = sock.internals
            tcp = internals.tcp if internals is not None else None
            if tcp is None or tcp.bytes_received is None:
                live[key] = Conn(sock, key)
                continue
            acked, received = tcp.bytes_acked or 0, tcp.bytes_received
            counters[key] = (now, acked, received)
            last = before.get(key)
            if last is None or now <= last[0]:
                live[key] = Conn(sock, key)
                continue
            span = now - last[0]
            live[key] = Conn(sock, key, max(0, acked - last[1]) / span, max(0, received - last[2]) / span)
        closed = {key: conn for key, conn in self._closed.items() if now - (conn.closed_at or now) < self.linger and key not in live}
        for key, conn in self._live.items():
            if key not in live:
                closed.setdefault(key, conn._replace(send_rate=None, recv_rate=None, closed_at=now))
        self._counters, self._live, self._closed = counters, live, closed
        return [*live.values(), *closed.values()]


def state_counts(conns: Iterable[Conn]) -> Counter[State]:
    """Give how many live sockets are in each state (closed ones left out)."""
    return Counter(conn.sock.state for conn in conns if conn.closed_at is None)

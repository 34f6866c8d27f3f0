"""Rates between refreshes: each socket's send and receive rate from its tcp_info byte counters,
diffed by socket cookie, and the connections that closed since (kept a few seconds, marked).

Pure: sockets and a time go in, records come out. The cookie tells a new connection from an
old one on the same ports, so a reused port never shows the old connection's counters as a burst.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from typing import NamedTuple

from ..model import Socket, State

LINGER = 5.0  # seconds a closed connection stays on screen
_NO_INTERNALS = (None,)  # Socket.internals, the last field


class Conn(NamedTuple):
    """One socket as a live view shows it.

    `send_rate` is bytes per second the peer acknowledged since the previous refresh,
    `recv_rate` bytes per second received; None when not known yet (first sight, no tcp_info).
    `closed_at` is when it was first missing (monotonic seconds), None while it lives.
    `rtt_us` and `retrans` (retransmitted segments in all) come from tcp_info; the socket itself
    is kept without its internals: a whole tcp_info per connection would be most of the memory.
    """

    sock: Socket
    key: Hashable
    send_rate: float | None = None
    recv_rate: float | None = None
    closed_at: float | None = None
    rtt_us: int | None = None
    retrans: int | None = None


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
        new = tuple.__new__
        for sock in sockets:
            key = sock.cookie if sock.cookie is not None else socket_key(sock)
            internals = sock.internals
            if internals is None:
                live[key] = Conn(sock, key)
                continue
            bare = new(Socket, sock[:14] + _NO_INTERNALS)
            tcp = internals.tcp
            if tcp is None:
                live[key] = Conn(bare, key)
                continue
            received = tcp.bytes_received
            if received is None:
                live[key] = Conn(bare, key, None, None, None, tcp.rtt_us, tcp.total_retrans)
                continue
            acked = tcp.bytes_acked or 0
            counters[key] = (now, acked, received)
            last = before.get(key)
            if last is None or now <= last[0]:
                live[key] = Conn(bare, key, None, None, None, tcp.rtt_us, tcp.total_retrans)
                continue
            span = now - last[0]
            send, recv = max(0, acked - last[1]) / span, max(0, received - last[2]) / span
            live[key] = Conn(bare, key, send, recv, None, tcp.rtt_us, tcp.total_retrans)
        closed = {key: conn for key, conn in self._closed.items() if now - (conn.closed_at or now) < self.linger and key not in live}
        for key, conn in self._live.items():
            if key not in live:
                closed.setdefault(key, conn._replace(send_rate=None, recv_rate=None, closed_at=now))
        self._counters, self._live, self._closed = counters, live, closed
        return [*live.values(), *closed.values()]


def state_counts(conns: Iterable[Conn]) -> Counter[State]:
    """Give how many live sockets are in each state (closed ones left out)."""
    return Counter(conn.sock.state for conn in conns if conn.closed_at is None)

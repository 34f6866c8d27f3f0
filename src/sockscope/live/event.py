"""One event of `sockscope events` and how its fields are worked out from what the kernel tells.

Pure: sockets and tcp_info in, values out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..model import Endpoint, NetId, Owner, Socket, State, TcpInfo
from .holders import Process
from .snapshot import is_accepted

# How a process was told: it holds the socket; it holds the listener the connection came in on;
# or it made the last connection to the same peer (the socket itself was never seen open).
HOLDER, LISTENER, GUESSED = "holder", "listener", "guessed"
# Why no process is named.
UNSEEN = "the socket closed before a dump saw it open"
NOT_FOUND = "no process showed it (it was closed or its process exited before the scan)"
ORPHANED = "its process had already closed it"
HIDDEN = "held by a process this PID namespace does not show"
NEVER_ESTABLISHED = "never established (refused, or no answer)"
NO_RTT = 0xFFFFFFFF  # tcpi_min_rtt before any sample
LOST = "close messages dropped by the kernel (receive buffer full; of any socket, the filter cannot tell)"
# States in which the peer's FIN has arrived: the kernel's byte count holds it as one byte.
FIN_RECEIVED = frozenset({State.CLOSE_WAIT, State.LAST_ACK, State.CLOSING, State.TIME_WAIT})


def other_user(uid: int) -> str:
    """Give the reason for an unknown process of another user."""
    return f"a process of another user (uid {uid}); root sees it"


class Event(NamedTuple):
    """One change: a connection opened or closed, or close messages the kernel dropped.

    `socket` is the connection as last seen (its state the last one a dump showed). `process`
    is None when unknown, and `process_how` then says why; else it says how it was told
    (holder, listener, guessed). Bytes are data bytes each way (TCP, on close; None for UDP):
    `rx_exact` is False when the received count may hold the peer's FIN (one byte more).
    `duration` is in seconds, a lower bound (`duration_bound` "at least": seen open before
    watching began, or between dumps) or an upper one ("at most": never seen open).
    """

    time: float
    kind: str  # open, close, lost
    direction: str  # in (accepted here), out (connected from here), listen, bound (UDP, no peer)
    socket: Socket | None
    process: Process | None
    process_how: str
    tx_bytes: int | None = None
    rx_bytes: int | None = None
    rx_exact: bool = True
    retransmits: int | None = None
    duration: float | None = None
    duration_bound: str | None = None
    reason: str = ""
    lost: int = 0


def direction_of(sock: Socket, listening: frozenset[tuple[NetId, str, int]]) -> str:
    """Give the direction of a connection: in, out, listen or bound."""
    if sock.state is State.LISTEN:
        return "listen"
    peer = sock.peer
    if sock.netid is NetId.UDP and isinstance(peer, Endpoint) and peer.port == 0:
        return "bound"
    return "in" if is_accepted(sock, listening) else "out"


def data_bytes(info: TcpInfo | None, fin_received: bool | None) -> tuple[int | None, int | None, bool]:
    """Give (sent, received, received is exact) data bytes from a final tcp_info.

    Sent: bytes_sent less retransmitted bytes (kernel 4.19+), else bytes_acked less our FIN.
    Received: bytes_received counts the peer's FIN as a byte once it arrived; `fin_received`
    says whether it did (None: unknown, the count is then given as is and marked not exact).
    """
    if info is None or info.bytes_received is None:
        return None, None, True
    if info.bytes_sent is not None and info.bytes_retrans is not None:
        sent: int | None = info.bytes_sent - info.bytes_retrans
    elif info.bytes_acked is not None:
        sent = max(info.bytes_acked - 1, 0)
    else:
        sent = None
    received = info.bytes_received
    if fin_received and received > 0:
        received -= 1
    return sent, received, fin_received is not None


def never_established(info: TcpInfo | None) -> bool:
    """Tell from a final tcp_info whether a connection never got through: no RTT was ever
    measured (the SYN was never answered, or answered by a reset) and nothing was delivered."""
    return info is not None and info.delivered == 0 and info.min_rtt_us == NO_RTT


def with_owner(sock: Socket, process: Process | None) -> Socket:
    """Give the socket with its process as owner, for filters on pid, process and user."""
    owners = (Owner(process.pid, process.name, -1, process.user),) if process is not None else ()
    return sock._replace(owners=owners)


def keep(event: Event, where: Callable[[Socket], bool] | None) -> bool:
    """Tell whether an event passes a filter (lost-message events always do)."""
    if where is None or event.socket is None:
        return True
    return where(with_owner(event.socket, event.process))

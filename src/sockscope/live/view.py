"""What a live table shows, in which order: connections grouped by process, by remote host or
not at all, sorted by a column, filtered. Plain records only: drawing them is the face's work,
and only the rows on screen are ever drawn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from itertools import compress, filterfalse, repeat
from operator import attrgetter, itemgetter
from typing import Any, Literal, NamedTuple

from ..model import Endpoint, Socket, State
from .rates import Conn

Grouping = Literal["process", "remote", "flat"]
GROUPINGS: tuple[Grouping, ...] = ("process", "remote", "flat")
#: The columns a table may be sorted by, in the order they are shown.
COLUMNS = ("process", "state", "local", "remote", "send", "recv", "rtt", "retrans", "queue")
UNKNOWN_OWNER = "? (owner not seen)"  # the group of sockets no visible process holds
_STATE_ORDER = {state: number for number, state in enumerate(State)}


class Group(NamedTuple):
    """The sockets of one process (or one remote host) and their sums.

    `pid` is None for a remote-host group and for sockets whose owner is unknown; `fill` is the
    fullest accept backlog among its listeners (queued / limit, 0..1+), None without listeners.
    """

    key: Any
    title: str
    pid: int | None
    conns: list[Conn]
    send_rate: float | None
    recv_rate: float | None
    retrans: int
    rtt_us: int | None
    states: Counter[State]
    fill: float | None


class Row(NamedTuple):
    """One line of the table: a group's heading (conn is None) or one socket (`group` its group, if any)."""

    group: Group | None
    conn: Conn | None


def backlog_fill(sock: Socket) -> float | None:
    """Give how full a listener's accept backlog is (queued / limit), None for other sockets."""
    if sock.state is not State.LISTEN or sock.send_q <= 0:
        return None
    return sock.recv_q / sock.send_q


def _number(value: float | None) -> float:
    return -1.0 if value is None else value


def _conn_key(column: str) -> Callable[[Conn], Any]:
    """Give the sort key of a column for single connections.

    Ties (thousands of idle connections all at rate 0) are broken by the socket's key, its
    cookie: a number compares at C speed, and the order stays put from one refresh to the next.
    """
    if column == "process":
        return lambda c: (c.sock.owners[0].name, c.sock.owners[0].pid, c.key) if c.sock.owners else ("\uffff", 0, c.key)
    if column == "state":
        return lambda c: (c.closed_at is not None, _STATE_ORDER[c.sock.state], c.key)
    if column == "local":
        return lambda c: (_endpoint_key(c.sock.local), _endpoint_key(c.sock.peer))
    if column == "remote":
        return lambda c: (_endpoint_key(c.sock.peer), _endpoint_key(c.sock.local))
    if column == "send":
        return lambda c: (-1.0 if c.send_rate is None else c.send_rate, c.key)
    if column == "recv":
        return lambda c: (-1.0 if c.recv_rate is None else c.recv_rate, c.key)
    if column == "rtt":
        return lambda c: (-1 if c.rtt_us is None else c.rtt_us, c.key)
    if column == "retrans":
        return lambda c: (-1 if c.retrans is None else c.retrans, c.key)
    if column == "queue":
        return lambda c: (_number(backlog_fill(c.sock)), c.sock.recv_q, c.key)
    raise ValueError(f"no column {column!r}")


def _address_key(address: str) -> tuple[int, str]:
    """Give a sort key that orders addresses as people read them: 10.0.0.9 before 10.0.0.10."""
    parts = address.split(".")
    if len(parts) == 4 and all(part.isdigit() for part in parts):
        return (0, ".".join(part.zfill(3) for part in parts))
    return (1, address.lower())


def _endpoint_key(end: object) -> tuple[int, str, int]:
    if isinstance(end, Endpoint):
        return (*_address_key(end.address), end.port)
    return (2, str(end), 0)


def _group_key(column: str) -> Callable[[Group], Any]:
    if column in ("process", "local", "remote"):
        return lambda g: (g.title == UNKNOWN_OWNER, _address_key(g.title), g.pid or 0)
    if column == "state":
        return lambda g: (len(g.conns), g.title)
    if column == "send":
        return lambda g: (_number(g.send_rate), g.title)
    if column == "recv":
        return lambda g: (_number(g.recv_rate), g.title)
    if column == "rtt":
        return lambda g: (_number(g.rtt_us), g.title)
    if column == "retrans":
        return lambda g: (g.retrans, g.title)
    if column == "queue":
        return lambda g: (_number(g.fill), g.title)
    raise ValueError(f"no column {column!r}")


_SOCK, _SEND, _RECV, _CLOSED, _RTT, _RETRANS = (attrgetter(name) for name in ("sock", "send_rate", "recv_rate", "closed_at", "rtt_us", "retrans"))
_STATE = itemgetter(2)  # Socket.state


def make_group(key: Any, title: str, pid: int | None, conns: list[Conn]) -> Group:
    """Give a Group with its sums over `conns` (closed connections count in none of them).

    `rtt_us` is the largest among its established connections. Sums run at C speed (map,
    filter, sum): a group may hold tens of thousands of connections, every refresh.
    """
    live = list(filterfalse(_CLOSED, conns))
    states_of = list(map(_STATE, map(_SOCK, live)))
    states: Counter[State] = Counter(states_of)
    sends = [rate for rate in map(_SEND, live) if rate is not None]
    recvs = [rate for rate in map(_RECV, live) if rate is not None]
    send = float(sum(sends)) if sends else None  # None: no member's rate is known (UDP, a first refresh)
    recv = float(sum(recvs)) if recvs else None
    retrans = sum(filter(None, map(_RETRANS, live)))
    established = compress(live, map(State.ESTAB.__eq__, states_of))
    rtt = max(filter(None, map(_RTT, established)), default=None)
    fill: float | None = None
    if states[State.LISTEN]:
        levels = [backlog_fill(conn.sock) for conn in compress(live, map(State.LISTEN.__eq__, states_of))]
        fill = max((level for level in levels if level is not None), default=None)
    return Group(key, title, pid, conns, send, recv, retrans, rtt, states, fill)


def by_process(conns: Iterable[Conn]) -> list[Group]:
    """Give one Group per process holding sockets (a shared socket goes to its lowest pid), plus UNKNOWN_OWNER for the rest."""
    parts: dict[int | None, list[Conn]] = {}
    names: dict[int | None, str] = {None: UNKNOWN_OWNER}
    for conn in conns:
        owners = conn.sock.owners
        pid = owners[0].pid if owners else None
        if pid not in names and owners:
            names[pid] = f"{owners[0].name} ({pid}, {owners[0].user})"
        parts.setdefault(pid, []).append(conn)
    return [make_group(pid, names[pid], pid, part) for pid, part in parts.items()]


def by_remote(conns: Iterable[Conn]) -> list[Group]:
    """Give one Group per remote host; listeners and unconnected sockets form the group `*`."""
    parts: dict[str, list[Conn]] = {}
    for conn in conns:
        peer = conn.sock.peer
        host = peer.address if isinstance(peer, Endpoint) and peer.port else "*"
        parts.setdefault(host, []).append(conn)
    return [make_group(host, host, None, part) for host, part in parts.items()]


def rows(
    conns: list[Conn],
    grouping: Grouping = "process",
    column: str = "send",
    descending: bool = True,
    where: Callable[[Socket], bool] | None = None,
) -> list[Row]:
    """Give the lines of the table: groups in order, each heading followed by its sockets (listeners first)."""
    if where is not None:
        conns = [conn for conn in conns if where(conn.sock)]
    conn_key = _conn_key(column)
    if grouping == "flat":
        return list(map(tuple.__new__, repeat(Row), zip(repeat(None), sorted(conns, key=conn_key, reverse=descending))))
    groups = by_process(conns) if grouping == "process" else by_remote(conns)
    groups.sort(key=_group_key(column), reverse=descending)
    out: list[Row] = []
    for group in groups:
        out.append(Row(group, None))
        members = sorted(group.conns, key=conn_key, reverse=descending)
        if group.states[State.LISTEN]:  # stable: listeners first, each part still in order
            members.sort(key=lambda c: c.sock.state is not State.LISTEN)
        out += map(tuple.__new__, repeat(Row), zip(repeat(group), members))  # C-level: one Row per socket
    return out

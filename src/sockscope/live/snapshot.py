"""What changed between two dumps: sockets keyed by the kernel's cookie, which no two sockets share.

Ports and inodes are reused (a new connection may get the ports of one that just closed, and
an inode number of a socket long gone); the cookie is not while the host runs, so a diff by
cookie tells a new connection from an old one.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from operator import itemgetter
from typing import NamedTuple

from ..inventory import Query, state_mask, take
from ..model import Endpoint, Family, NetId, Socket, State

#: The states a dump asks for: every socket that is a connection or a listener. TIME-WAIT and
#: SYN-RECV entries are not sockets a process holds (the kernel keeps them alone) and a TCP
#: socket in CLOSE has no connection yet.
WATCHED_STATES = frozenset(State) - {State.UNKNOWN, State.TIME_WAIT, State.SYN_RECV}


class Snapshot(NamedTuple):
    """One dump: cookie -> Socket, when it was taken (monotonic seconds), and the listening ports."""

    sockets: dict[int, Socket]
    taken: float
    listening: frozenset[tuple[NetId, str, int]]  # (netid, address, port); address "" for a wildcard

    def accepts(self, sock: Socket) -> bool:
        """Tell whether a connection's local end is a listening port of this host (it was accepted there)."""
        return is_accepted(sock, self.listening)


def is_accepted(sock: Socket, listening: Collection[tuple[NetId, str, int]]) -> bool:
    """Tell whether `sock`'s local port is one a listener holds on its address (or on every address)."""
    local = sock.local
    if not isinstance(local, Endpoint) or sock.netid is not NetId.TCP:
        return False
    return (NetId.TCP, local.address, local.port) in listening or (NetId.TCP, "", local.port) in listening


_WILDCARDS = frozenset({"0.0.0.0", "::"})


def listening_ports(sockets: Collection[Socket]) -> frozenset[tuple[NetId, str, int]]:
    """Give (netid, address, port) of every TCP listener; the address is "" for a wildcard one."""
    found = set()
    for sock in sockets:
        if sock.state is State.LISTEN and isinstance(sock.local, Endpoint):
            address = "" if sock.local.address in _WILDCARDS else sock.local.address
            found.add((sock.netid, address, sock.local.port))
    return frozenset(found)


def is_connection(sock: Socket) -> bool:
    """Tell whether a socket is one `events` reports: a TCP connection or listener, or a bound UDP socket."""
    local, peer = sock.local, sock.peer
    if sock.netid is NetId.TCP:  # a TCP socket in CLOSE counts while it still names its peer (reset, not yet closed)
        return sock.state is not State.UNCONN or (isinstance(peer, Endpoint) and peer.port != 0)
    return isinstance(local, Endpoint) and local.port != 0


def take_snapshot(netids: frozenset[NetId], families: frozenset[Family], proc_root: str | None = None, keep: Collection[int] = ()) -> Snapshot:
    """Give a Snapshot of the TCP and UDP sockets of this network namespace (and the `keep` cookies).

    Sockets without a cookie (the /proc fallback has none) cannot be followed and are left out,
    and so are those without an inode: TIME-WAIT entries (which the kernel shows in FIN-WAIT-2
    too, and which a busy server holds by the ten thousand) and sockets their process already
    closed, which no process can be named for. The caller keeps following those it knew.
    """
    query = Query(
        netids=netids,
        states=state_mask(WATCHED_STATES),
        families=families,
        source="netlink",
        proc_root=proc_root,
    )
    found = take(query).sockets
    taken = time.monotonic()
    # most sockets are connections held by a process: take them all at C speed, then drop the few others
    sockets = dict(zip(map(itemgetter(13), found), found, strict=True))
    unconnected = State.UNCONN
    for sock in [sock for sock in found if sock.state is unconnected or not sock.inode or sock.cookie is None]:
        if sock.cookie is None or not is_connection(sock) or not (sock.inode or sock.cookie in keep):
            sockets.pop(sock.cookie, None)
    return Snapshot(sockets, taken, listening_ports(sockets.values()))


class Diff(NamedTuple):
    """Sockets in the new dump and not the old (opened), cookies in the old and not the new (gone)."""

    opened: list[Socket]
    gone: list[int]


def diff(before: Mapping[int, object], after: Mapping[int, Socket]) -> Diff:
    """Give what opened and what went between two dumps (by cookie; `before` may map to anything kept per socket).

    Key-set operations in C, not a loop in Python: a busy host has tens of thousands of sockets.
    """
    opened = [after[cookie] for cookie in after.keys() - before.keys()]
    gone = list(before.keys() - after.keys())
    return Diff(opened, gone)

"""This host's own addresses among the targets, and the sockets behind their ports.

A scan of this host can know what no remote scanner can: which process holds each open port,
and that a port which answers nothing has a listener whose accept queue is full. The kernel
drops SYNs to such a listener (a backlog-1 server that never accepts is one after two
connects), so from the wire it looks filtered; the listening socket says it is open.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

from ..errors import SockscopeError
from ..model import NetId, Owner, Socket
from ..records import NamedTuple
from .targets import Host

_WILDCARD: dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}


class LocalPort(NamedTuple):
    """A socket of this host bound to a scanned port: is its accept queue full, and who holds it."""

    full: bool
    process: Owner | None


def is_local(address: str, family: int) -> bool:
    """Tell whether `address` is one of this host's addresses (the kernel lets us bind only to those)."""
    if _nonlocal_bind(family):  # binding proves nothing then
        return address.startswith("127.") or address == "::1"
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))
        return True
    return False


def _nonlocal_bind(family: int) -> bool:
    path = "/proc/sys/net/ipv4/ip_nonlocal_bind" if family == socket.AF_INET else "/proc/sys/net/ipv6/ip_nonlocal_bind"
    try:
        with open(path) as handle:
            return handle.read().strip() != "0"
    except OSError:
        return False


def _serving(sock: Socket, address: str, family: int) -> int:
    """Give how closely a bound socket serves `address` (0: not at all; a higher number wins)."""
    local = sock.local.address  # type: ignore[union-attr]
    if local == address:
        return 3
    if local == _WILDCARD[family]:
        return 2
    # an IPv6 wildcard socket takes IPv4 too unless it is IPV6_V6ONLY, which the listing does not say
    return 1 if family == socket.AF_INET and local == "::" else 0


def local_ports(targets: Sequence[Host], protos: Sequence[str]) -> dict[tuple[int, str, int], LocalPort]:
    """Give, for the targets that are this host, the sockets bound to their ports: (host index, proto, port) -> LocalPort.

    TCP: listening sockets; UDP: bound sockets with no peer. Owners are looked up only for those.
    """
    mine = [(index, host) for index, host in enumerate(targets) if is_local(host.address, host.family)]
    if not mine:
        return {}
    from ..inventory import list_sockets
    from ..inventory.owners import find_holders
    from ..model import State

    wanted = [NetId.TCP] if protos == ["tcp"] else [NetId.UDP] if protos == ["udp"] else [NetId.TCP, NetId.UDP]
    try:
        listed = list_sockets(wanted)
    except SockscopeError:  # no socket source here: scan as any other host would
        return {}
    sockets = [
        sock
        for sock in listed
        if (sock.state == State.LISTEN if sock.netid == NetId.TCP else sock.peer.port == 0)  # type: ignore[union-attr]
    ]
    best: dict[tuple[int, str, int], tuple[int, Socket]] = {}
    for index, host in mine:
        for sock in sockets:
            rank = _serving(sock, host.address, host.family)
            key = (index, str(sock.netid), sock.local.port)  # type: ignore[union-attr]
            if rank and rank > best.get(key, (0, sock))[0]:
                best[key] = (rank, sock)
    holders = find_holders({sock.inode for _rank, sock in best.values()}, likely_uids={sock.uid for _r, sock in best.values() if sock.uid is not None})
    found = {}
    for key, (_rank, sock) in best.items():
        owners = holders.owners(sock.inode)
        # the kernel's test is "more waiting than the backlog allows" (sk_acceptq_is_full)
        full = sock.netid == NetId.TCP and sock.recv_q > sock.send_q
        found[key] = LocalPort(full, min(owners) if owners else None)
    return found

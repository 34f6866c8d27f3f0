"""Close single connections through the kernel (sock_diag SOCK_DESTROY, like `ss -K`).

The peer sees a reset and the holding process gets ECONNABORTED on its next call; the
process itself keeps running. It needs CAP_NET_ADMIN and a kernel built with
CONFIG_INET_DIAG_DESTROY.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from ..errors import PermissionDenied, SockscopeError, SourceUnavailable
from ..inventory import diag, netlink, owners, proc_root
from ..model import STATE_NUMBERS, Family, NetId, Socket
from ..records import NamedTuple

_PROTOCOLS = {NetId.TCP: socket.IPPROTO_TCP, NetId.UDP: socket.IPPROTO_UDP}


class Closed(NamedTuple):
    """Sockets closed, and sockets that vanished before they could be (closed by their owner)."""

    closed: list[Socket]
    gone: list[Socket]


def matching(netids: frozenset[NetId], states: int, where: Callable[[Socket], bool], with_owners: bool) -> list[tuple[Socket, bytes, int]]:
    """Give (socket, sockid, protocol) for every tcp/udp socket in `states` that `where` accepts."""
    scanner = owners.Scanner(proc_root()) if with_owners else None
    pending: list[tuple[Socket, bytes, int]] = []
    for netid in sorted(netids & _PROTOCOLS.keys()):
        protocol = _PROTOCOLS[netid]
        for family in (socket.AF_INET, socket.AF_INET6):
            source = f"netlink inet_diag {netid.value}{'6' if family == socket.AF_INET6 else ''}"
            addresses = diag.AddressText()
            for chunk, spans in netlink.dump(diag.inet_request(family, protocol, states), source):
                ids = diag.inet_ids(chunk, spans)
                pending += [(s, ids[s.inode][2], protocol) for s in diag.decode_inet(chunk, spans, protocol, addresses)]
    if scanner is not None:
        result = scanner.finish()
        pending = [(s._replace(owners=result.owners(s.inode)), sockid, protocol) for s, sockid, protocol in pending]
    return [(s, sockid, protocol) for s, sockid, protocol in pending if where(s)]


def destroy(sock: Socket, sockid: bytes, protocol: int) -> bool:
    """Close one socket through the kernel; give False when it had gone already."""
    family = socket.AF_INET6 if sock.family is Family.INET6 else socket.AF_INET
    code = netlink.command(diag.destroy_request(family, protocol, STATE_NUMBERS[sock.state], sockid), "netlink SOCK_DESTROY")
    if code == 0:
        return True
    if code == errno.ENOENT:
        return False
    if code in (errno.EPERM, errno.EACCES):
        raise PermissionDenied("closing sockets needs CAP_NET_ADMIN; run as root")
    if code == errno.EOPNOTSUPP:
        raise SourceUnavailable("this kernel does not allow closing sockets (it was built without CONFIG_INET_DIAG_DESTROY)")
    raise SockscopeError(f"the kernel refused to close {sock.local} -> {sock.peer}: {os.strerror(code)}")


def close(found: list[tuple[Socket, bytes, int]]) -> Closed:
    """Close every socket given (from `matching`)."""
    closed: list[Socket] = []
    gone: list[Socket] = []
    for sock, sockid, protocol in found:
        (closed if destroy(sock, sockid, protocol) else gone).append(sock)
    return Closed(closed, gone)

"""Sockets as they close: the kernel's sock_diag destroy multicast groups.

When a TCP or UDP socket is freed, the kernel sends every subscriber of its group an inet_diag
message with the socket's cookie, addresses and final tcp_info (bytes each way, retransmits).
Any user may subscribe; the kernel sends only the sockets of the subscriber's network namespace.
The message carries no inode and no uid: the process behind it comes from earlier dumps (by
cookie) or from the listener a connection was accepted on.

A subscriber that does not read fast enough loses messages (the kernel counts them in the
socket's drops and reports ENOBUFS once): `Subscription.read` gives that count, never hides it.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Callable, Collection
from typing import NamedTuple

from ..errors import PermissionDenied, SourceUnavailable
from ..inventory import diag
from ..model import Family, NetId, Socket

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8
INET_DIAG_PROTOCOL = 10
# linux/sock_diag.h: SKNLGRP_INET_TCP_DESTROY, INET_UDP, INET6_TCP, INET6_UDP
GROUPS: dict[tuple[Family, NetId], int] = {
    (Family.INET, NetId.TCP): 1,
    (Family.INET, NetId.UDP): 2,
    (Family.INET6, NetId.TCP): 3,
    (Family.INET6, NetId.UDP): 4,
}
#: Receive buffer asked for: about 80,000 destroy messages, several seconds of a very busy host.
BUFFER_BYTES = 32 << 20
_HEADER_SIZE = 16
_INET_MSG_SIZE = 72
_MAX_READS = 4096  # messages taken in one read() call, so a flood cannot starve the caller's other work


def decode(chunk: bytes, addresses: diag.AddressText) -> list[Socket]:
    """Give the sockets (with their final Internals.tcp for TCP) of one destroy-group datagram.

    Pure: bytes in, records out. Each message names its protocol in INET_DIAG_PROTOCOL; the
    kernel reports the state at destruction (always TCP_CLOSE) and no uid (None here) or inode (0).
    """
    spans, _done = diag.frame(chunk, "sock_diag destroy message")
    out: list[Socket] = []
    for message in diag.messages(chunk, spans):
        if len(message) < _HEADER_SIZE + _INET_MSG_SIZE:
            continue  # not an inet_diag message: nothing we can name
        attrs = diag.attributes(message, _HEADER_SIZE + _INET_MSG_SIZE, "sock_diag destroy message")
        protocol = attrs.get(INET_DIAG_PROTOCOL)
        number = protocol[0] if protocol is not None and len(protocol) >= 1 else socket.IPPROTO_TCP
        if number not in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
            continue
        single = bytes(message)
        # the kernel leaves uid and inode empty here: a uid of 0 would read as root's socket
        out += [sock._replace(uid=None) for sock in diag.decode_inet(single, [(0, len(single), 1)], number, addresses, internals=frozenset({"info"}))]
    return out


class Reading(NamedTuple):
    """What one read gave: the sockets that closed, and how many messages the kernel dropped since the last read."""

    closed: list[Socket]
    lost: int


class Subscription:
    """A NETLINK_SOCK_DIAG socket subscribed to the destroy groups of some families and protocols.

    Non-blocking: `fileno()` goes to select/poll, `read()` takes what is queued. The receive
    buffer is set past the system limit with SO_RCVBUFFORCE when allowed (root), else as large
    as SO_RCVBUF lets an unprivileged user (net.core.rmem_max); `buffer_bytes` tells what we got.
    """

    def __init__(self, kinds: Collection[tuple[Family, NetId]], buffer_bytes: int = BUFFER_BYTES) -> None:
        groups = sorted({GROUPS[kind] for kind in kinds if kind in GROUPS})
        if not groups:
            raise SourceUnavailable("the kernel reports closing sockets for TCP and UDP only")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, diag.NETLINK_SOCK_DIAG)
        except OSError as exc:
            raise SourceUnavailable(f"sock_diag destroy groups: no netlink sock_diag here ({exc.strerror})") from None
        try:
            sock.bind((0, 0))
            for group in groups:
                sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise PermissionDenied(f"sock_diag destroy groups: the kernel refused the subscription ({exc.strerror})") from None
            raise SourceUnavailable(f"sock_diag destroy groups: cannot subscribe ({exc.strerror})") from None
        self.sock = sock
        self.buffer_bytes = _size_buffer(sock, buffer_bytes)
        self.addresses = diag.AddressText()
        self.dropped = 0  # the kernel's drop count at the last read

    def fileno(self) -> int:
        """Give the descriptor to wait on."""
        return self.sock.fileno()

    def read(self, limit: int = _MAX_READS) -> Reading:
        """Give the sockets closed since the last read (at most `limit` messages) and the messages lost."""
        closed: list[Socket] = []
        recv = self.sock.recv
        overrun = False
        for _ in range(limit):
            try:
                chunk = recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # reported once per overrun; the queue still holds what fitted
                    overrun = True
                    continue
                raise
            if chunk:
                closed += decode(chunk, self.addresses)
        lost = self._drops() - self.dropped
        if overrun and lost <= 0:
            lost = 1  # the kernel said it dropped some but cannot say how many: at least one
        self.dropped += max(lost, 0)
        return Reading(closed, max(lost, 0))

    def _drops(self) -> int:
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * 9)
        except OSError:
            return self.dropped  # kernels before 4.12: only ENOBUFS tells
        if len(raw) < 4 * (SK_MEMINFO_DROPS + 1):
            return self.dropped
        return int(struct.unpack_from("=I", raw, 4 * SK_MEMINFO_DROPS)[0])

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _size_buffer(sock: socket.socket, wanted: int) -> int:
    """Set the receive buffer as near `wanted` as allowed; give the size the kernel holds (it doubles what is set)."""
    so_rcvbufforce = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, so_rcvbufforce, wanted)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)  # capped at net.core.rmem_max
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


class Watch:
    """A thread reading the destroy groups of TCP and UDP and handing each reading to every subscriber.

    One per process: the exporter and the web page, served together, share it (the kernel sends
    each subscribing socket its own copy). Subscribers run on this thread: they hand the reading
    on (a queue, an event loop) and return at once, or messages pile up and are lost.
    """

    def __init__(self, buffer_bytes: int = BUFFER_BYTES) -> None:
        import threading

        self.subscription = Subscription(GROUPS, buffer_bytes)  # SourceUnavailable or PermissionDenied here
        self.subscribers: list[Callable[[Reading], None]] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sockscope-closing", daemon=True)

    def subscribe(self, subscriber: Callable[[Reading], None]) -> None:
        """Have `subscriber` called (on the watch's thread) with each reading that holds closes or losses."""
        self.subscribers.append(subscriber)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread and the subscription."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.subscription.close()

    def _loop(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.subscription], [], [], 0.25)
            if not ready:
                continue
            try:
                reading = self.subscription.read()
            except OSError:
                continue  # one bad read: the next may do
            self.lost += reading.lost
            if reading.closed or reading.lost:
                for subscriber in self.subscribers:
                    subscriber(reading)


def final_bytes(sock: Socket) -> tuple[int, int] | None:
    """Give (bytes acked by the peer, bytes received) of a closed TCP socket's final tcp_info, None without it."""
    internals = sock.internals
    tcp = internals.tcp if internals is not None else None
    if tcp is None or tcp.bytes_acked is None or tcp.bytes_received is None:
        return None
    return tcp.bytes_acked, tcp.bytes_received

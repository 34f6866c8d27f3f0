"""The two ends of a connection between two local sockets, matched as they close.

The kernel's received count may hold the peer's FIN (one byte more than the data); when both
ends are on this host, each end's sent count gives the other's exact received count.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Collection, Iterator

from ..model import Endpoint, NetId
from .event import Event

PAIR_WAIT = 0.25  # seconds a close of a local connection waits for its other end's close


def is_local(address: str, locals_seen: Collection[str]) -> bool:
    """Tell whether an address is this host's (seen on a local socket, or loopback)."""
    if address in locals_seen:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class LocalPairs:
    """Closes of local connections waiting for their other end (held), and sent counts of ends that closed (for theirs)."""

    def __init__(self) -> None:
        self.held: dict[tuple[NetId, Endpoint, Endpoint], tuple[float, Event, int]] = {}
        self.sent: dict[tuple[NetId, Endpoint, Endpoint], tuple[float, int]] = {}

    def next_deadline(self) -> float | None:
        """Give when the first held close is due (monotonic), None when none is held."""
        return min((held[0] for held in self.held.values()), default=None)

    def match(self, event: Event, local_addresses: Collection[str]) -> Iterator[Event]:
        """Match the close of a connection between two local sockets with its other end's close.

        Each end's sent count gives the other's exact received count, which the kernel's own
        received count cannot (it may hold the peer's FIN). A close not exact yet waits up to
        PAIR_WAIT seconds for its other end; an exact one is remembered as long for the other.
        """
        sock = event.socket
        if event.kind != "close" or sock is None or sock.netid is not NetId.TCP:
            yield event
            return
        local, peer = sock.local, sock.peer
        if not isinstance(local, Endpoint) or not isinstance(peer, Endpoint) or not is_local(peer.address, local_addresses):
            yield event
            return
        info = sock.internals.tcp if sock.internals is not None else None
        received = info.bytes_received if info is not None else None
        mirror_key = (sock.netid, peer, local)
        held = self.held.pop(mirror_key, None)
        if held is not None:
            _deadline, other, other_received = held
            if event.tx_bytes is not None:
                other = other._replace(rx_bytes=min(other_received, event.tx_bytes), rx_exact=True)
            if not event.rx_exact and other.tx_bytes is not None and received is not None:
                event = event._replace(rx_bytes=min(received, other.tx_bytes), rx_exact=True)
            yield other
            yield event
            return
        sent = self.sent.pop(mirror_key, None)
        if not event.rx_exact and sent is not None and received is not None:
            event = event._replace(rx_bytes=min(received, sent[1]), rx_exact=True)
        if event.rx_exact:
            if event.tx_bytes is not None and sent is None:
                self.sent[(sock.netid, local, peer)] = (time.monotonic() + PAIR_WAIT, event.tx_bytes)
            yield event
            return
        self.held[(sock.netid, local, peer)] = (time.monotonic() + PAIR_WAIT, event, received or 0)

    def release(self, all_of_them: bool = False) -> Iterator[Event]:
        """Give the held closes whose other end did not close in time, as they are."""
        now = time.monotonic()
        for key, (deadline, _sent) in list(self.sent.items()):
            if deadline <= now:
                del self.sent[key]
        for key, (deadline, event, _received) in list(self.held.items()):
            if all_of_them or deadline <= now:
                del self.held[key]
                yield event

"""One refresh of a live view: the sockets with tcp_info, owners from the incremental map, rates."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import NamedTuple

from ..inventory import Query, proc_root, take
from ..model import ALL_STATES_MASK, NetId
from .owner_map import Holders
from .rates import Conn, Rates


class Sample(NamedTuple):
    """What one refresh found: connections (live, then recently closed), notes to show, and how
    long the refresh took (seconds, for the status line)."""

    conns: list[Conn]
    notes: list[str]
    took: float
    at: float  # monotonic time of the refresh


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while tens of thousands of records are made.

    None of them is in a cycle, and a long-lived view holds a large heap: each collection the
    new records set off would walk all of it (most of a second at 50,000 sockets).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class Sampler:
    """Takes refreshes one after another, keeping what the next one needs (counters, owners)."""

    def __init__(self, netids: frozenset[NetId] = frozenset({NetId.TCP}), root: str | None = None, owners: bool = True, local_port: int | None = None) -> None:
        self.netids = netids
        self.local_port = local_port  # only sockets bound to this port, filtered by the kernel
        self.root = root or proc_root()
        self.holders = Holders(self.root) if owners else None
        self.rates = Rates()

    def sample(self) -> Sample:
        """Give the next refresh."""
        started = time.monotonic()
        with collector_paused():
            query = Query(netids=self.netids, states=ALL_STATES_MASK, proc_root=self.root, local_port=self.local_port, internals=frozenset({"info"}))
            found = take(query)
            # the counters' time is the dump's: the owner update after it may take a while
            # (the first full scan), and rates must be over the time between two dumps
            now = time.monotonic()
            sockets, notes = found.sockets, list(found.notes)
            if self.holders is not None:
                self.holders.update(sockets)
                sockets = self.holders.attach(sockets)
                if denied := len(self.holders.denied):
                    notes.append(f"owners unknown for {denied} processes of other users (run as root to see them)")
            conns = self.rates.update(sockets, now)
        return Sample(conns, notes, time.monotonic() - started, now)

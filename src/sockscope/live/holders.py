"""Which process holds a socket, found incrementally: a process's descriptors are read only when a
new socket needs an owner, and the processes most likely to hold it are read first.

A full /proc scan every second would cost a busy host more than the dumps themselves. Here the
candidates are, in order: the hints the caller gives (the holders of the listener a connection
was accepted on), processes that started since the last look, and processes that held new
sockets lately; only the sockets still without a holder send us through every process, once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable
from typing import NamedTuple

from ..inventory import owners
from ..model import Owner

RECENT = 64  # processes remembered as recent socket makers
SEARCH_PAUSE = 2.0  # seconds between searches through every process (a host may have a process with 100,000 descriptors)


class Process(NamedTuple):
    """A process as an event names it."""

    pid: int
    name: str
    user: str


def process_of(holders: tuple[Owner, ...]) -> Process | None:
    """Give the first holder of a socket as a Process (None when nobody holds it)."""
    if not holders:
        return None
    first = holders[0]
    return Process(first.pid, first.name, first.user)


class HolderMap:
    """Finds the holders of socket inodes, reading as few /proc/<pid>/fd tables as it can."""

    def __init__(self, proc_root: str) -> None:
        self.proc_root = proc_root
        self.pids: set[int] = self._pids()
        self.recent: dict[int, None] = {}  # insertion-ordered: the newest socket makers last
        self.seen: dict[int, tuple[Owner, ...]] = {}  # every socket of the tables read at the last lookup
        self.denied = 0
        self.tables_read = 0  # fd tables read so far (what the incremental map saves is measured on it)
        self.searched = -SEARCH_PAUSE  # when every process was last searched (monotonic)

    def _pids(self) -> set[int]:
        try:
            return {int(name) for name in os.listdir(self.proc_root) if name.isdigit()}
        except OSError:
            return set()

    def prime(self) -> dict[int, tuple[Owner, ...]]:
        """Give the holders of every socket on the host: one full scan, when watching starts."""
        result = owners.scan(self.proc_root)
        self.tables_read += len(self.pids)
        self.denied = result.denied
        return result.holders

    def alive(self, pid: int) -> bool:
        """Tell whether a process still runs (as far as this PID namespace shows)."""
        return os.path.exists(f"{self.proc_root}/{pid}")

    def lookup(self, wanted: Collection[int], hints: Iterable[int] = (), likely_uids: Collection[int] = ()) -> dict[int, tuple[Owner, ...]]:
        """Give inode -> holders for the `wanted` inodes that some process holds now.

        Reads the hinted, new and recent processes first (remembering every socket they hold
        in `seen`), then searches the others for what is still missing, at most once every
        SEARCH_PAUSE seconds: a socket nobody holds (its process closed it, or lives in another
        PID namespace) would otherwise send every dump through every process.
        """
        found = {inode: self.seen[inode] for inode in wanted if inode in self.seen}
        remaining = set(wanted) - found.keys()
        if not remaining:
            return found
        now = self._pids()
        started = now - self.pids
        self._forget(self.pids - now)
        self.pids = now
        candidates = list(dict.fromkeys([*hints, *sorted(started), *reversed(self.recent)]))
        candidates = [pid for pid in candidates if pid in now]
        result = owners.scan(self.proc_root, None, candidates)
        self.tables_read += len(candidates)
        self.seen = result.holders
        for inode in list(remaining):
            if inode in result.holders:
                found[inode] = result.holders[inode]
                remaining.discard(inode)
        if remaining and time.monotonic() - self.searched >= SEARCH_PAUSE:
            self.searched = time.monotonic()
            searched = owners.find_holders(remaining, self.proc_root, likely_uids)
            self.tables_read += len(now)  # at most
            self.denied = searched.denied
            found.update(searched.holders)
        for holders in found.values():
            for owner in holders:
                self.recent.pop(owner.pid, None)
                self.recent[owner.pid] = None
        while len(self.recent) > RECENT:
            del self.recent[next(iter(self.recent))]
        return found

    def _forget(self, gone: Collection[int]) -> None:
        """Drop what is remembered of processes that exited, so a reused pid is not named after them."""
        for pid in gone:
            self.recent.pop(pid, None)
        owners.forget(self.proc_root, gone)

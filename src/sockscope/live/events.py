"""Every connection as it opens and closes, with its process: the stream behind `sockscope events`.

Closes come from the kernel's destroy groups (`closing`), with the final byte counts; opens
from dumps every `interval` seconds, diffed by cookie (`snapshot`). A connection that opened
and closed between two dumps is known only by its close. The process comes from the owner
scan (`holders`) when the socket was seen open, else from the listener it was accepted on,
else, as root, from the kernel itself (`bpf`: the process that connect()ed it), else it is a
guess (the process that made the last connection to the same peer) and says so.
"""

from __future__ import annotations

import os
import pwd
import select
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import NamedTuple

from ..errors import SockscopeError
from ..inventory import proc_root as default_proc_root
from ..model import Endpoint, Family, NetId, Owner, Socket, State
from . import bpf, closing
from .event import (
    FIN_RECEIVED,
    GUESSED,
    HIDDEN,
    HOLDER,
    LISTENER,
    LOST,
    NEVER_ESTABLISHED,
    NOT_FOUND,
    ORPHANED,
    UNSEEN,
    Event,
    data_bytes,
    direction_of,
    keep,
    never_established,
    other_user,
)
from .holders import HolderMap, Process, process_of
from .pairs import LocalPairs
from .snapshot import Snapshot, diff, is_accepted, listening_ports, take_snapshot

GONE_TICKS = 2  # dumps without a socket (and no close message) before it is reported closed
LISTEN_MEMORY = 300.0  # seconds a port still counts as listening after its listener went (socat without fork, restarts)
FINISHED_MEMORY = 10.0  # seconds a closed socket's cookie is remembered, so a late dump does not open it again
QUICK_SHARE = 0.05  # an early extra dump only when a dump costs less than this share of the interval
GUESS_AFTER = 2  # connections a process was seen making to a peer before it is named as the maker of unseen ones
EBPF = "ebpf"  # how a process was told: the kernel noted who connect()ed the socket
STARTED_MEMORY = 1.0  # seconds a process's start time is trusted without reading /proc again (thousands of closes a second)


class _Tracked(NamedTuple):
    socket: Socket
    first_seen: float  # monotonic
    before_start: bool
    process: Process | None
    how: str
    tries: int  # owner lookups made for it
    direction: str


class Watcher:
    """Watches TCP and UDP sockets of this network namespace; `events()` gives what changes.

    The destroy subscription opens before the first dump, so no socket the dump shows can
    close unseen. Sockets open when watching starts are followed (their closes are events)
    but not reported as opened.
    """

    def __init__(
        self,
        netids: frozenset[NetId] = frozenset({NetId.TCP, NetId.UDP}),
        families: frozenset[Family] = frozenset({Family.INET, Family.INET6}),
        interval: float = 1.0,
        where: Callable[[Socket], bool] | None = None,
        proc_root: str | None = None,
        use_bpf: bool = True,
    ) -> None:
        self.netids = netids & {NetId.TCP, NetId.UDP}
        self.families = families & {Family.INET, Family.INET6}
        self.interval = interval
        self.where = where
        self.proc_root = proc_root or default_proc_root()
        self.root = os.geteuid() == 0
        self.my_uid = os.geteuid()
        self.connectors: bpf.Connectors | None = None
        self.bpf_unavailable = "" if use_bpf else "turned off (--no-bpf)"  # why the kernel does not name connectors
        if use_bpf and NetId.TCP in self.netids:
            try:
                self.connectors = bpf.Connectors()
            except SockscopeError as exc:
                self.bpf_unavailable = exc.message
            except OSError as exc:
                self.bpf_unavailable = f"eBPF: {exc.strerror or exc}"
        try:
            self.subscription = closing.Subscription([(fam, netid) for fam in self.families for netid in self.netids])
        except BaseException:
            if self.connectors is not None:
                self.connectors.close()
            raise
        self.holders = HolderMap(self.proc_root)
        self.started: dict[int, tuple[float, int | None, str]] = {}  # pid -> (when read, start time, name)
        self.users: dict[int, str] = {}
        self.tracked: dict[int, _Tracked] = {}
        self.missing: dict[int, int] = {}  # cookie -> dumps in a row without it
        # (netid, peer) -> the process that made the last connections there, with how many it made
        self.makers: dict[tuple[NetId, Endpoint], tuple[Process, set[int]]] = {}
        self.pairs = LocalPairs()
        self.lost = 0
        self.finished: dict[int, float] = {}  # cookie -> when its close message came
        self.opened = self.closed = 0
        self.dump_seconds = 0.0
        first = self._snapshot()
        holders = self.holders.prime()
        self.listened: dict[tuple[NetId, str, int], float] = dict.fromkeys(first.listening, first.taken)
        self.listening = first.listening
        self.listener_holders: dict[tuple[NetId, str, int], tuple[Owner, ...]] = {}
        self.local_addresses: set[str] = set()
        for cookie, sock in first.sockets.items():
            process = process_of(holders.get(sock.inode, ()))
            how = HOLDER if process else self._why(sock, 1)
            self.tracked[cookie] = _Tracked(sock, first.taken, True, process, how, 1, direction_of(sock, self.listening))
        self.latest = first.sockets  # the last dump: each followed socket as last seen
        self.unresolved: set[int] = {cookie for cookie, t in self.tracked.items() if t.process is None and self._findable(t.socket)}
        self._learn(self.tracked.values())
        self.previous_dump = first.taken

    def close(self) -> None:
        """Stop watching."""
        self.subscription.close()
        if self.connectors is not None:
            self.connectors.close()

    def _snapshot(self) -> Snapshot:
        started = time.monotonic()
        snap = take_snapshot(self.netids, self.families, self.proc_root, self.tracked)
        self.dump_seconds = time.monotonic() - started
        return snap

    # ------------------------------------------------------------------ the loop

    def events(self, until: float | None = None) -> Iterator[Event]:
        """Yield the events that pass the filter as they happen, until the monotonic time `until` (None: for ever)."""
        for event in self._events(until):
            if keep(event, self.where):
                self.opened += event.kind == "open"
                self.closed += event.kind == "close"
                yield event

    def _events(self, until: float | None) -> Iterator[Event]:
        next_dump = time.monotonic() + self.interval
        quick = False  # one early dump per interval, to name short-lived connections
        while True:
            now = time.monotonic()
            if until is not None and now >= until:
                yield from self.pairs.release(all_of_them=True)
                return
            due = self.pairs.next_deadline()
            deadline = next_dump if due is None else min(next_dump, due)
            if until is not None:
                deadline = min(deadline, until)
            ready, _w, _x = select.select([self.subscription], [], [], max(0.0, deadline - now))
            if ready:
                yield from self._read()
            yield from self.pairs.release()
            if time.monotonic() >= next_dump:
                again = yield from self._tick(quick_allowed=not quick)
                quick = again
                next_dump = time.monotonic() + (0.0 if again else self.interval)
                if not again:
                    quick = False

    def _read(self) -> Iterator[Event]:
        reading = self.subscription.read()
        if reading.lost:
            self.lost += reading.lost
            yield Event(time.time(), "lost", "", None, None, "", reason=LOST, lost=reading.lost)
        for sock in reading.closed:
            event = self._closed(sock)
            if event is not None:
                yield from self.pairs.match(event, self.local_addresses)

    # ------------------------------------------------------------------ closes

    def _closed(self, final: Socket) -> Event | None:
        cookie = final.cookie or 0
        now = time.monotonic()
        info = final.internals.tcp if final.internals is not None else None
        tracked = self.tracked.pop(cookie, None)
        self.missing.pop(cookie, None)
        self.unresolved.discard(cookie)
        self.finished[cookie] = now
        if tracked is not None:
            sock = self.latest.get(cookie, tracked.socket)
            process, how, direction = tracked.process, tracked.how, tracked.direction
            duration, bound = now - tracked.first_seen, "at least"
            reason = f"closed from {sock.state.value}"
            fin: bool | None = True if sock.state in FIN_RECEIVED else None
            if process is None and final.netid is NetId.TCP and direction == "out":
                process, how, reason = self._connector(final, how, reason)
        else:
            sock = final
            peer, local = final.peer, final.local
            if not isinstance(peer, Endpoint) or not isinstance(local, Endpoint) or local.port == 0:
                return None
            if final.netid is NetId.TCP and peer.port == 0:
                return None  # never connected (a failed connect, or a socket only created): not a connection
            process, how = self._unseen_process(final)
            direction = direction_of(final, self.listening)
            duration, bound = now - self.previous_dump, "at most"
            reason = UNSEEN
            if (process is None or how == GUESSED) and final.netid is NetId.TCP:
                process, how, reason = self._connector(final, how, reason, process)
            fin = None
        if sock.netid is not NetId.TCP:
            fin = False
        elif never_established(info):
            fin, reason = False, NEVER_ESTABLISHED
        sent, received, exact = data_bytes(info, fin)
        return Event(
            time.time(),
            "close",
            direction,
            sock._replace(internals=final.internals),
            process,
            how,
            sent,
            received,
            exact,
            info.total_retrans if info is not None else None,
            duration,
            bound,
            reason,
        )

    def _unseen_process(self, sock: Socket) -> tuple[Process | None, str]:
        if is_accepted(sock, self.listening):
            process = self._listener_process(sock)
            if process is not None:
                return process, LISTENER
        known = self.makers.get((sock.netid, sock.peer))  # type: ignore[arg-type]
        # one connection seen says little (a curl still waiting); a process seen connecting there
        # again and again is the likely maker of one that came and went between dumps
        if known is not None and len(known[1]) >= GUESS_AFTER and self.holders.alive(known[0].pid):
            return known[0], GUESSED
        return None, UNSEEN

    def _connector(self, sock: Socket, how: str, reason: str, process: Process | None = None) -> tuple[Process | None, str, str]:
        """Give the process the kernel saw connect() a closed socket, how it was told and the reason, else those given."""
        if self.connectors is None:
            return process, how, reason
        found = self.connectors.take(sock)
        if found is None:
            return process, how, reason
        user = self.users.get(found.uid)
        if user is None:
            try:
                user = pwd.getpwuid(found.uid).pw_name
            except KeyError:
                user = str(found.uid)
            self.users[found.uid] = user
        now = time.monotonic()
        known = self.started.get(found.pid)
        if known is None or now - known[0] > STARTED_MEMORY:
            started, name = bpf.process_start(found.pid, self.proc_root)
            known = self.started[found.pid] = (now, started, name)
            if len(self.started) > 4096:
                self.started = {pid: k for pid, k in self.started.items() if now - k[0] <= STARTED_MEMORY}
        _when, started, name = known
        if started is None or started > found.connected_ns:  # gone, or its pid now names a newer process
            return Process(found.pid, found.name, user), EBPF, f"{reason}; its process has exited"
        return Process(found.pid, name or found.name, user), EBPF, reason

    def _listener_process(self, sock: Socket) -> Process | None:
        local = sock.local
        assert isinstance(local, Endpoint)
        for key in ((sock.netid, local.address, local.port), (sock.netid, "", local.port)):
            holders = self.listener_holders.get(key)
            if holders:
                return process_of(holders)
        return None

    # ------------------------------------------------------------------ dumps

    def _tick(self, quick_allowed: bool) -> Generator[Event, None, bool]:
        snap = self._snapshot()
        yield from self._read()  # closes that happened before the dump: they must not look "gone"
        for key in listening_ports(snap.sockets.values()):
            self.listened[key] = snap.taken
        for key, last in list(self.listened.items()):
            if snap.taken - last > LISTEN_MEMORY:
                del self.listened[key]
                self.listener_holders.pop(key, None)
        self.listening = frozenset(self.listened)
        # a dump taken just before a close message was read still shows that socket: not a new one
        for cookie, when in list(self.finished.items()):
            if snap.taken - when > FINISHED_MEMORY:
                del self.finished[cookie]
        # set operations on the keys, not a Python loop over every socket: a busy host has tens of thousands
        current = snap.sockets
        change = diff(self.tracked, current)
        opened = [sock for sock in change.opened if sock.cookie not in self.finished]
        for cookie in [cookie for cookie in self.missing if cookie in current or cookie not in self.tracked]:
            del self.missing[cookie]
        for cookie in change.gone:
            self.missing[cookie] = self.missing.get(cookie, 0) + 1
            if self.missing[cookie] >= GONE_TICKS:  # no close message came: lost, or not a socket the kernel reports
                del self.missing[cookie]
                self.unresolved.discard(cookie)
                yield self._gone(self.tracked.pop(cookie), self.latest.get(cookie))
        self.latest = current
        unresolved = self._resolve(opened, snap.taken)
        retry = [cookie for cookie in self.unresolved if cookie in current and self.tracked[cookie].tries == 1]
        if retry:
            self._resolve_again(retry)
        self._learn([self.tracked[cookie] for cookie in [*(sock.cookie or 0 for sock in opened), *retry]])
        for sock in opened:
            tracked = self.tracked[sock.cookie or 0]
            yield Event(time.time(), "open", tracked.direction, sock, tracked.process, tracked.how, reason="seen in a dump")
        self.previous_dump = snap.taken
        # an early second dump names connections opened since this one, if dumps are cheap here
        return bool(unresolved) and quick_allowed and self.dump_seconds < QUICK_SHARE * self.interval

    def _resolve(self, opened: list[Socket], taken: float) -> int:
        """Track the opened sockets with their processes; give how many are still without one."""
        wanted = [sock.inode for sock in opened if sock.inode and self._findable(sock)]
        hints: list[int] = []
        for sock in opened:
            if is_accepted(sock, self.listening):
                listener = self._listener_process(sock)
                if listener is not None:
                    hints.append(listener.pid)
        uids = {sock.uid for sock in opened if sock.uid is not None}
        found = self.holders.lookup(wanted, hints, uids) if wanted else {}
        unresolved = 0
        for sock in opened:
            process = process_of(found.get(sock.inode, ()))
            how = HOLDER
            if process is None and sock.state is not State.LISTEN and is_accepted(sock, self.listening):
                process, how = self._listener_process(sock), LISTENER
            if process is None:
                how = self._why(sock, 1)
                unresolved += sock.netid is NetId.TCP and sock.state is not State.LISTEN
            self.tracked[sock.cookie or 0] = _Tracked(sock, taken, False, process, how, 1, direction_of(sock, self.listening))
            if process is None and self._findable(sock):
                self.unresolved.add(sock.cookie or 0)
        return unresolved

    def _resolve_again(self, cookies: list[int]) -> None:
        """Look once more for the holders of sockets still open a dump later (a second chance, then a reason)."""
        tracked = [self.tracked[cookie] for cookie in cookies]
        found = self.holders.lookup([t.socket.inode for t in tracked], (), {t.socket.uid for t in tracked if t.socket.uid is not None})
        for cookie, t in zip(cookies, tracked, strict=True):
            process = process_of(found.get(t.socket.inode, ()))
            if process is None and self.holders.searched < t.first_seen:
                continue  # every process was not searched since it was seen (searches are spaced): again next dump
            self.tracked[cookie] = t._replace(process=process, how=HOLDER if process else self._why(t.socket, 2), tries=2)
            self.unresolved.discard(cookie)

    def _findable(self, sock: Socket) -> bool:
        """Tell whether looking for a socket's holder can succeed: without root, another user's processes cannot be read."""
        return self.root or sock.uid in (None, self.my_uid)

    def _why(self, sock: Socket, tries: int) -> str:
        if sock.inode == 0:
            return ORPHANED
        if not self.root and sock.uid is not None and sock.uid != self.my_uid:
            return other_user(sock.uid)
        return HIDDEN if tries >= 2 and self.root else NOT_FOUND

    def _learn(self, tracked: Iterable[_Tracked]) -> None:
        """Remember the listeners' holders, local addresses and who connects where (for connections never seen open)."""
        for t in tracked:
            sock, local, peer = t.socket, t.socket.local, t.socket.peer
            if not isinstance(local, Endpoint) or not isinstance(peer, Endpoint):
                continue
            self.local_addresses.add(local.address)
            if t.process is None or t.how != HOLDER:
                continue
            owner = Owner(t.process.pid, t.process.name, -1, t.process.user)
            if sock.state is State.LISTEN:
                address = "" if local.address in ("0.0.0.0", "::") else local.address
                self.listener_holders[(sock.netid, address, local.port)] = (owner,)
            elif t.direction == "out" and peer.port:
                key = (sock.netid, peer)
                known = self.makers.get(key)
                if known is None or known[0] != t.process:
                    known = self.makers[key] = (t.process, set())
                if len(known[1]) < GUESS_AFTER:
                    known[1].add(sock.cookie or 0)
        self.local_addresses -= {"0.0.0.0", "::"}

    def _gone(self, tracked: _Tracked, last: Socket | None) -> Event:
        sock = last or tracked.socket
        info = sock.internals.tcp if sock.internals is not None else None
        sent, received, _exact = data_bytes(info, sock.state in FIN_RECEIVED)
        return Event(
            time.time(),
            "close",
            tracked.direction,
            sock,
            tracked.process,
            tracked.how,
            sent,
            received,
            False,
            info.total_retrans if info is not None else None,
            time.monotonic() - tracked.first_seen,
            "at least",
            "gone from the dumps without a close message (bytes as last seen)",
        )

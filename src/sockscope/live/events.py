"""Every connection as it opens and closes, with its process: the stream behind `sockscope events`.

Closes come from the kernel's destroy groups (`closing`), with the final byte counts; opens
from dumps every `interval` seconds, diffed by cookie (`snapshot`). A connection that opened
and closed between two dumps is known only by its close. The process comes from the owner
scan (`holders`) when the socket was seen open, else from the listener it was accepted on,
else it is a guess (the process that made the last connection to the same peer) and says so.
"""

from __future__ import annotations

import ipaddress
import os
import select
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import NamedTuple

from ..inventory import proc_root as default_proc_root
from ..model import Endpoint, Family, NetId, Owner, Socket, State, TcpInfo
from . import closing
from .holders import HolderMap, Process, process_of
from .snapshot import Snapshot, diff, is_accepted, listening_ports, take_snapshot

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
PAIR_WAIT = 0.25  # seconds a close of a local connection waits for its other end's close
GONE_TICKS = 2  # dumps without a socket (and no close message) before it is reported closed
LISTEN_MEMORY = 300.0  # seconds a port still counts as listening after its listener went (socat without fork, restarts)
FINISHED_MEMORY = 10.0  # seconds a closed socket's cookie is remembered, so a late dump does not open it again
QUICK_SHARE = 0.05  # an early extra dump only when a dump costs less than this share of the interval
GUESS_AFTER = 2  # connections a process was seen making to a peer before it is named as the maker of unseen ones


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


class _Tracked(NamedTuple):
    socket: Socket
    first_seen: float  # monotonic
    before_start: bool
    process: Process | None
    how: str
    tries: int  # owner lookups made for it
    direction: str


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


def _is_local(address: str, locals_seen: set[str]) -> bool:
    if address in locals_seen:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


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
    ) -> None:
        self.netids = netids & {NetId.TCP, NetId.UDP}
        self.families = families & {Family.INET, Family.INET6}
        self.interval = interval
        self.where = where
        self.proc_root = proc_root or default_proc_root()
        self.root = os.geteuid() == 0
        self.my_uid = os.geteuid()
        self.subscription = closing.Subscription([(fam, netid) for fam in self.families for netid in self.netids])
        self.holders = HolderMap(self.proc_root)
        self.tracked: dict[int, _Tracked] = {}
        self.missing: dict[int, int] = {}  # cookie -> dumps in a row without it
        # (netid, peer) -> the process that made the last connections there, with how many it made
        self.connectors: dict[tuple[NetId, Endpoint], tuple[Process, set[int]]] = {}
        self.held: dict[tuple[NetId, Endpoint, Endpoint], tuple[float, Event, int]] = {}  # close of a local connection waiting for its other end
        self.sent: dict[tuple[NetId, Endpoint, Endpoint], tuple[float, int]] = {}  # bytes sent by a local end that closed, for its other end
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
        self.unresolved: set[int] = {cookie for cookie, t in self.tracked.items() if t.process is None}
        self._learn(self.tracked.values())
        self.previous_dump = first.taken

    def close(self) -> None:
        """Stop watching."""
        self.subscription.close()

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
                yield from self._release(all_of_them=True)
                return
            deadline = min(next_dump, *(held[0] for held in self.held.values())) if self.held else next_dump
            if until is not None:
                deadline = min(deadline, until)
            ready, _w, _x = select.select([self.subscription], [], [], max(0.0, deadline - now))
            if ready:
                yield from self._read()
            yield from self._release()
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
                yield from self._pair(event)

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
        known = self.connectors.get((sock.netid, sock.peer))  # type: ignore[arg-type]
        # one connection seen says little (a curl still waiting); a process seen connecting there
        # again and again is the likely maker of one that came and went between dumps
        if known is not None and len(known[1]) >= GUESS_AFTER and self.holders.alive(known[0].pid):
            return known[0], GUESSED
        return None, UNSEEN

    def _listener_process(self, sock: Socket) -> Process | None:
        local = sock.local
        assert isinstance(local, Endpoint)
        for key in ((sock.netid, local.address, local.port), (sock.netid, "", local.port)):
            holders = self.listener_holders.get(key)
            if holders:
                return process_of(holders)
        return None

    def _pair(self, event: Event) -> Iterator[Event]:
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
        if not isinstance(local, Endpoint) or not isinstance(peer, Endpoint) or not _is_local(peer.address, self.local_addresses):
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

    def _release(self, all_of_them: bool = False) -> Iterator[Event]:
        """Give the held closes whose other end did not close in time, as they are."""
        now = time.monotonic()
        for key, (deadline, _sent) in list(self.sent.items()):
            if deadline <= now:
                del self.sent[key]
        for key, (deadline, event, _received) in list(self.held.items()):
            if all_of_them or deadline <= now:
                del self.held[key]
                yield event

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
        wanted = [sock.inode for sock in opened if sock.inode]
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
            if process is None:
                self.unresolved.add(sock.cookie or 0)
        return unresolved

    def _resolve_again(self, cookies: list[int]) -> None:
        """Look once more for the holders of sockets still open a dump later (a second chance, then a reason)."""
        tracked = [self.tracked[cookie] for cookie in cookies]
        found = self.holders.lookup([t.socket.inode for t in tracked], (), {t.socket.uid for t in tracked if t.socket.uid is not None})
        for cookie, t in zip(cookies, tracked, strict=True):
            process = process_of(found.get(t.socket.inode, ()))
            self.tracked[cookie] = t._replace(process=process, how=HOLDER if process else self._why(t.socket, 2), tries=2)
            self.unresolved.discard(cookie)

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
                known = self.connectors.get(key)
                if known is None or known[0] != t.process:
                    known = self.connectors[key] = (t.process, set())
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


def _with_owner(sock: Socket, process: Process | None) -> Socket:
    """Give the socket with its process as owner, for filters on pid, process and user."""
    owners = (Owner(process.pid, process.name, -1, process.user),) if process is not None else ()
    return sock._replace(owners=owners)


def keep(event: Event, where: Callable[[Socket], bool] | None) -> bool:
    """Tell whether an event passes a filter (lost-message events always do)."""
    if where is None or event.socket is None:
        return True
    return where(_with_owner(event.socket, event.process))

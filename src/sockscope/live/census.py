"""Sockets counted the way a fleet's dashboards want them: per kind and state, per listener, per process.

A `Census` is fed one inventory after another (`refresh`) and gives `Figures` back: gauges of
what exists now and counters that only grow (TCP bytes, connections opened and closed, their
durations), kept across refreshes by socket cookie. Connections that close reach it through one
narrow door, `Census.closed`, whoever saw them go: the kernel's destroy events, or a refresh that
no longer finds a connection the previous one had (its last-seen byte counts are then all there is).

Label sets stay bounded: processes beyond the top N by sockets are folded into `other`, and only
the busiest (local address, remote address, remote port) tuples of ephemeral ports are kept.
Pure: sockets, counters and numbers in, figures out; the reading happens in the thin functions at
the end (`read_counters`, `read_port_range`).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from operator import itemgetter

from ..model import Endpoint, NetId, Owner, Socket, State
from ..records import NamedTuple

#: Upper bounds (seconds) of the connection duration histogram; +Inf is implied.
DURATION_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0)

ENDED_KEPT = 65536  # closed connections remembered, so that a late close event does not count twice
OTHER = ("other", "")  # the processes outside the top N, folded together
UNKNOWN = ("unknown", "")  # sockets no visible process holds (TIME-WAIT, other users' without root)

# A TCP socket in one of these states is a connection being counted; leaving them (closing, or
# turning into TIME-WAIT, which keeps the cookie but no process) is its end. SYN-SENT and
# SYN-RECV are attempts and pending requests, not yet connections.
_CONNECTED = frozenset({State.ESTAB, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT, State.LAST_ACK, State.CLOSING})
_TCP = frozenset({NetId.TCP, NetId.MPTCP})
_WILDCARDS = {"inet": "0.0.0.0", "inet6": "::"}

#: Kernel counters published, by their /proc/net/{snmp,netstat} names (`Group:Name`): metric stem and help.
KERNEL_COUNTERS: dict[str, tuple[str, str]] = {
    "TcpExt:ListenOverflows": ("tcp_listen_overflows", "Times a listener's accept queue was full when a connection completed."),
    "TcpExt:ListenDrops": ("tcp_listen_drops", "Connection requests dropped at a listener, for any reason."),
    "TcpExt:TCPBacklogDrop": ("tcp_backlog_drops", "Segments dropped because a socket's backlog was full."),
    "TcpExt:TCPReqQFullDrop": ("tcp_request_queue_full_drops", "SYNs dropped because the request queue was full and syncookies were off."),
    "TcpExt:TCPReqQFullDoCookies": ("tcp_request_queue_full_syncookies", "SYNs answered with a syncookie because the request queue was full."),
    "TcpExt:SyncookiesSent": ("tcp_syncookies_sent", "Syncookies sent."),
    "TcpExt:SyncookiesRecv": ("tcp_syncookies_received", "Valid syncookies received."),
    "TcpExt:SyncookiesFailed": ("tcp_syncookies_failed", "Invalid syncookies received."),
    "TcpExt:TCPAbortOnData": ("tcp_aborts_on_data", "Connections reset because data arrived after close."),
    "TcpExt:TCPAbortOnClose": ("tcp_aborts_on_close", "Connections reset because they were closed with unread data."),
    "TcpExt:TCPAbortOnMemory": ("tcp_aborts_on_memory", "Connections reset for lack of memory."),
    "TcpExt:TCPAbortOnTimeout": ("tcp_aborts_on_timeout", "Connections reset after too many retransmissions or probes."),
    "TcpExt:TCPAbortOnLinger": ("tcp_aborts_on_linger", "Connections reset when a linger timeout ran out."),
    "TcpExt:TCPAbortFailed": ("tcp_aborts_failed", "Resets that could not be sent."),
    "TcpExt:TCPRcvQDrop": ("tcp_receive_queue_drops", "Segments dropped because the receive queue was over its memory limit."),
    "TcpExt:TCPZeroWindowDrop": ("tcp_zero_window_drops", "Segments dropped because the receive window was zero."),
    "TcpExt:TCPTimeWaitOverflow": ("tcp_time_wait_overflows", "Connections that skipped TIME-WAIT because tcp_max_tw_buckets was reached."),
    "TcpExt:PruneCalled": ("tcp_receive_prunes", "Times a socket's receive queue had to be pruned under memory pressure."),
    "TcpExt:TCPMemoryPressures": ("tcp_memory_pressures", "Times TCP entered memory pressure."),
    "Tcp:ActiveOpens": ("tcp_active_opens", "Connections this host opened."),
    "Tcp:PassiveOpens": ("tcp_passive_opens", "Connections this host accepted."),
    "Tcp:AttemptFails": ("tcp_attempt_failures", "Connection attempts that failed."),
    "Tcp:EstabResets": ("tcp_established_resets", "Established connections reset."),
    "Tcp:RetransSegs": ("tcp_retransmitted_segments", "Segments retransmitted."),
    "Tcp:InErrs": ("tcp_received_errors", "Segments received in error."),
    "Tcp:OutRsts": ("tcp_resets_sent", "Segments sent with the RST flag."),
}

Process = tuple[str, str]
"""A process as labels: (name, pid text); OTHER and UNKNOWN have an empty pid."""


class Listener(NamedTuple):
    """A listening socket as labels: namespace ("" for this one), protocol, address, port, process name."""

    netns: str
    protocol: str
    address: str
    port: int
    process: str


class Flow(NamedTuple):
    """Where ephemeral ports go: namespace, local address, remote address and remote port."""

    netns: str
    local_address: str
    remote_address: str
    remote_port: int


class Histogram(NamedTuple):
    """Cumulative bucket counts (one per DURATION_BUCKETS bound, then +Inf), the sum and the number observed."""

    buckets: tuple[int, ...]
    total: float
    observed: int


class Figures(NamedTuple):
    """What one refresh found: gauges of now and the counters so far.

    Keys are label values; counters (`*_total` in the metrics) never go down while the process
    they belong to lives.
    """

    sockets: dict[tuple[str, str, str], int]  # (netns, netid, state) -> sockets
    accept_queues: dict[Listener, tuple[int, int]]  # listener -> (waiting, limit)
    listener_connections: dict[tuple[Listener, str], int]  # (listener, state) -> connections
    process_sockets: dict[tuple[Process, str, str], int]  # (process, netid, state) -> sockets
    sent_bytes: dict[Process, int]
    received_bytes: dict[Process, int]
    opened: dict[Process, int]
    closed: dict[Process, int]
    durations: dict[Process, Histogram]
    ephemeral_used: dict[Flow, int]
    ephemeral_ports: dict[str, int]  # netns -> size of the range
    kernel: dict[tuple[str, str], int]  # (netns, counter name as in KERNEL_COUNTERS) -> value


class _Account:
    """A process's counters: bytes of connections that closed, opens, closes, durations."""

    __slots__ = ("buckets", "closed", "count", "opened", "received", "sent", "total")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.opened = 0
        self.closed = 0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds


class _Connection:
    """A connection being followed: the process charged, when it was first seen, its latest byte counts."""

    __slots__ = ("process", "received", "sent", "started")

    def __init__(self, process: Process, started: float | None, sent: int, received: int) -> None:
        self.process = process
        self.started = started  # None: open before the first refresh, start unknown
        self.sent = sent
        self.received = received


class Census:
    """Counts kept across refreshes; `refresh` for each new inventory, `closed` for each ending seen elsewhere.

    A connection is charged to the process that held it when it was first seen, for its whole
    life: counters stay monotonic when processes enter or leave the top N, pass descriptors on,
    or exit. The price: a process entering the top N is charged only for connections it opens
    from then on (its older ones stay with `other`). A socket several processes share is
    charged to the one with the lowest pid. Connections open before the first refresh count as
    closed when they end, but not as opened, and give no duration (their start is unknown).
    """

    def __init__(self, top: int = 10, ephemeral_flows: int = 20) -> None:
        self.top = top
        self.ephemeral_flows = ephemeral_flows
        self._chosen: dict[int, str] = {}  # pid -> name: the processes with labels of their own
        self._accounts: dict[Process, _Account] = {OTHER: _Account(), UNKNOWN: _Account()}
        self._live: dict[object, _Connection] = {}  # by cookie
        self._ended: dict[object, _Connection] = {}  # the latest connections closed, by cookie, as counted
        self._refreshed = False

    def closed(self, cookie: object, bytes_sent: int, bytes_received: int, duration_s: float | None, pid: int | None, at: float | None = None) -> None:
        """Count a connection that ended, with its final byte counts (a destroy event, or a refresh that misses it).

        A cookie seen open before is charged to the process it was charged to then, whatever
        `pid` says; one never seen (opened and closed between two refreshes) counts as opened
        too, charged to `pid` when that process has labels of its own. A cookie counts once: a
        destroy event for a connection a refresh already found gone adds only the bytes it
        moved since it was last seen.
        """
        ended = self._ended.get(cookie)
        if ended is not None:
            account = self._account(ended.process)
            account.sent += max(bytes_sent - ended.sent, 0)
            account.received += max(bytes_received - ended.received, 0)
            ended.sent, ended.received = max(bytes_sent, ended.sent), max(bytes_received, ended.received)
            return
        entry = self._live.pop(cookie, None)
        if entry is None:
            process = self._process_of(pid)
            account = self._account(process)
            account.opened += 1
        else:
            account = self._account(entry.process)
            if duration_s is None and at is not None and entry.started is not None:
                duration_s = at - entry.started  # a destroy event: it lasted from its first sighting to `at` (monotonic)
            bytes_sent = max(bytes_sent, entry.sent)
            bytes_received = max(bytes_received, entry.received)
        account.closed += 1
        account.sent += bytes_sent
        account.received += bytes_received
        if duration_s is not None:
            account.observe(max(duration_s, 0.0))
        self._ended[cookie] = _Connection(entry.process if entry is not None else process, None, bytes_sent, bytes_received)
        if len(self._ended) > ENDED_KEPT:
            del self._ended[next(iter(self._ended))]  # the oldest: dicts keep insertion order

    def refresh(
        self,
        sockets: Iterable[Socket],
        now: float,
        kernel: Mapping[str, Mapping[str, int]] | None = None,
        port_ranges: Mapping[str, tuple[int, int]] | None = None,
        byte_counts: Mapping[object, tuple[int, int]] | None = None,
    ) -> Figures:
        """Give the Figures of an inventory taken at `now` (seconds, monotonic).

        `kernel` maps a namespace label ("" for ours) to its counters (`parse_counters`),
        `port_ranges` a namespace to its ephemeral port range. Connections the previous refresh
        had and this one lacks are closed with their last-seen byte counts. A connection's bytes
        (acked, received) come from its tcp_info, or from `byte_counts` by cookie when given (sockets
        then need no internals: `byte_counts` from `tcp_byte_counts` is a small fraction of their size).
        """
        found = list(sockets)
        owner_of = list(map(_first_owner, map(itemgetter(10), found)))  # 10: owners
        self._choose(owner_of)
        labelled = {pid: (name, str(pid)) for pid, name in self._chosen.items()}
        for process in labelled.values():  # every labelled process has its counters, at 0 to begin with
            self._account(process)
        processes = [UNKNOWN if owner is None else labelled.get(owner[0], OTHER) for owner in owner_of]
        listeners, by_port = _listeners(found, owner_of)
        figures = Figures({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})
        figures.accept_queues.update(listeners)
        # Tens of thousands of sockets: count by C-level zips; states and netids are StrEnums,
        # which are their own text as keys
        netids, states = list(map(itemgetter(0), found)), list(map(itemgetter(2), found))
        sockets_count = Counter(zip([netns or "" for netns in map(itemgetter(9), found)], netids, states, strict=True))
        process_count = Counter(zip(processes, netids, states, strict=True))
        seen: set[object] = set()
        live_sent: Counter[Process] = Counter()
        live_received: Counter[Process] = Counter()
        listener_count: Counter[tuple[Listener, str]] = Counter()
        live, started_now = self._live, now if self._refreshed else None
        for sock, process in zip(found, processes, strict=True):
            netid, state = sock[0], sock[2]
            if netid not in _TCP or state is State.LISTEN:
                continue
            if by_port and (listener := _listener_of(sock, by_port)) is not None:
                listener_count[listener, state] += 1
            if state in _CONNECTED:
                key = sock.cookie if sock.cookie is not None else _connection_key(sock)
                seen.add(key)
                if byte_counts is not None:
                    sent, received = byte_counts.get(key, (0, 0))
                else:
                    sent, received = _bytes_of(sock)
                entry = live.get(key)
                if entry is None and key in self._ended:
                    continue  # its close event came while the inventory was taken: counted already
                if entry is None:
                    entry = live[key] = _Connection(process, started_now, sent, received)
                    if started_now is not None:
                        self._account(process).opened += 1
                else:  # a later sample without tcp_info (the /proc fallback) must not take bytes back
                    entry.sent = max(entry.sent, sent)
                    entry.received = max(entry.received, received)
                live_sent[entry.process] += entry.sent
                live_received[entry.process] += entry.received
        for key in [key for key in self._live if key not in seen]:
            entry = self._live[key]
            started = entry.started
            self.closed(key, entry.sent, entry.received, None if started is None else now - started, None)
        self._refreshed = True
        figures.sockets.update(sockets_count)
        figures.process_sockets.update(process_count)
        figures.listener_connections.update(listener_count)
        self._forget_gone(process_count, live_sent)
        for process, account in self._accounts.items():
            figures.sent_bytes[process] = account.sent + live_sent[process]
            figures.received_bytes[process] = account.received + live_received[process]
            figures.opened[process] = account.opened
            figures.closed[process] = account.closed
            running = 0
            cumulative = []
            for count in account.buckets:
                running += count
                cumulative.append(running)
            figures.durations[process] = Histogram(tuple(cumulative), account.total, account.count)
        figures.ephemeral_used.update(self._ephemeral(found, by_port, port_ranges or {}))
        for netns, (low, high) in (port_ranges or {}).items():
            figures.ephemeral_ports[netns] = max(high - low + 1, 0)
        for netns, counters in (kernel or {}).items():
            for name, number in counters.items():
                if name in KERNEL_COUNTERS:
                    figures.kernel[netns, name] = number
        return figures

    def _process_of(self, pid: int | None) -> Process:
        if pid is None:
            return UNKNOWN
        name = self._chosen.get(pid)
        return OTHER if name is None else (name, str(pid))

    def _account(self, process: Process) -> _Account:
        account = self._accounts.get(process)
        if account is None:
            account = self._accounts[process] = _Account()
        return account

    def _choose(self, owner_of: list[tuple[int, str] | None]) -> None:
        """Keep the top-N processes that still hold sockets; fill free places with the busiest others."""
        counts = Counter(owner for owner in owner_of if owner is not None)
        alive = {pid for pid, _name in counts}
        self._chosen = {pid: name for pid, name in self._chosen.items() if pid in alive}
        if len(self._chosen) >= self.top:
            return
        for (pid, name), _count in sorted(counts.items(), key=lambda item: (-item[1], item[0][0])):
            if pid not in self._chosen:
                self._chosen[pid] = name
                if len(self._chosen) >= self.top:
                    break

    def _forget_gone(self, process_count: Counter[tuple[Process, str, str]], live: Counter[Process]) -> None:
        """Drop the counters of labelled processes that hold nothing and are no longer chosen (they exited)."""
        holding = {process for process, _netid, _state in process_count} | set(live)
        chosen = {(name, str(pid)) for pid, name in self._chosen.items()}
        for process in list(self._accounts):
            if process not in (OTHER, UNKNOWN) and process not in holding and process not in chosen:
                del self._accounts[process]

    def _ephemeral(self, found: list[Socket], by_port: Mapping[tuple[str, int], object], ranges: Mapping[str, tuple[int, int]]) -> dict[Flow, int]:
        """Give the busiest flows' count of ephemeral ports in use (TCP, every state but LISTEN)."""
        used: Counter[Flow] = Counter()
        for sock in found:
            if sock.netid not in _TCP or sock.state is State.LISTEN:
                continue
            local, peer = sock.local, sock.peer
            if not isinstance(local, Endpoint) or not isinstance(peer, Endpoint):
                continue
            netns = sock.netns or ""
            span = ranges.get(netns)
            if span is None or not span[0] <= local.port <= span[1] or (netns, local.port) in by_port:
                continue  # an accepted connection shares its listener's port: not an ephemeral one
            used[Flow(netns, local.address, peer.address, peer.port)] += 1
        return dict(used.most_common(self.ephemeral_flows))


def _bytes_of(sock: Socket) -> tuple[int, int]:
    tcp = sock.internals.tcp if sock.internals is not None else None
    return ((tcp.bytes_acked or 0), (tcp.bytes_received or 0)) if tcp is not None else (0, 0)


def tcp_byte_counts(sockets: Iterable[Socket]) -> dict[object, tuple[int, int]]:
    """Give connection key (the cookie) -> (bytes acked, bytes received) of the TCP connections among `sockets`."""
    return {_connection_key(sock): _bytes_of(sock) for sock in sockets if sock.netid in _TCP and sock.state in _CONNECTED}


def _first_owner(owners: tuple[Owner, ...] | None) -> tuple[int, str] | None:
    if not owners:
        return None
    first = min(owners)
    return first.pid, first.name


def _connection_key(sock: Socket) -> object:
    if sock.cookie is not None:
        return sock.cookie
    return (sock.netns, sock.local, sock.peer, sock.inode)  # the /proc fallback has no cookies


def _listeners(found: list[Socket], owner_of: list[tuple[int, str] | None]) -> tuple[dict[Listener, tuple[int, int]], dict[tuple[str, int], list[Listener]]]:
    """Give each TCP listener's accept queue (waiting, limit), and the listeners by (netns, port)."""
    queues: dict[Listener, tuple[int, int]] = {}
    by_port: dict[tuple[str, int], list[Listener]] = {}
    for sock, owner in zip(found, owner_of, strict=True):
        if sock.state is not State.LISTEN or sock.netid not in _TCP or not isinstance(sock.local, Endpoint):
            continue
        netns = sock.netns or ""
        listener = Listener(netns, sock.netid.value, sock.local.address, sock.local.port, owner[1] if owner else "")
        waiting, limit = queues.get(listener, (0, 0))
        queues[listener] = (waiting + sock.recv_q, max(limit, sock.send_q))  # SO_REUSEPORT twins add up
        by_port.setdefault((netns, sock.local.port), []).append(listener)
    return queues, by_port


def _listener_of(sock: Socket, by_port: Mapping[tuple[str, int], list[Listener]]) -> Listener | None:
    """Give the listener an accepted connection came through (same port, same or wildcard address)."""
    local = sock.local
    if not isinstance(local, Endpoint):
        return None
    candidates = by_port.get((sock.netns or "", local.port))
    if not candidates:
        return None
    wildcard = _WILDCARDS.get(sock.family.value)
    fallback = None
    for listener in candidates:
        if listener.address == local.address:
            return listener
        if listener.address == wildcard or (listener.address == "::" and fallback is None):
            fallback = listener  # "::" takes IPv4 too unless it is v6only
    return fallback


def parse_counters(text: str) -> dict[str, int]:
    """Give `Group:Name` -> value from /proc/net/snmp or /proc/net/netstat text (header line, value line).

    Lines that do not pair up are skipped: a kernel may add groups we do not know.
    """
    found: dict[str, int] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        words = line.split()
        if not words or not words[0].endswith(":"):
            header = None
            continue
        if header is None or header[0] != words[0]:
            header = words  # a group's names; its values are on the next line
            continue
        if len(header) == len(words):
            for name, number in zip(header[1:], words[1:], strict=True):
                if number.isdigit():
                    found[words[0] + name] = int(number)
        header = None
    return found


def read_counters(net_dir: str) -> dict[str, int]:
    """Give the kernel's TCP counters from `net_dir`/snmp and /netstat ({} for a file that cannot be read)."""
    found: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        try:
            with open(f"{net_dir}/{name}", encoding="ascii", errors="replace") as handle:
                found.update(parse_counters(handle.read()))
        except OSError:
            continue
    return found


def parse_port_range(text: str) -> tuple[int, int] | None:
    """Give (low, high) from net.ipv4.ip_local_port_range text, or None when it does not read as two ports."""
    words = text.split()
    if len(words) != 2 or not all(word.isdigit() for word in words):
        return None
    low, high = int(words[0]), int(words[1])
    return (low, high) if 0 < low <= high <= 65535 else None


def read_port_range(sys_dir: str = "/proc/sys") -> tuple[int, int]:
    """Give the ephemeral port range of the namespace this thread is in (Linux's default when unreadable)."""
    try:
        with open(f"{sys_dir}/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
            found = parse_port_range(handle.read())
    except OSError:
        found = None
    return found or (32768, 60999)

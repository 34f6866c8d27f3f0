"""What a live page shows of the host's sockets, and what changed since the page last looked.

Pure: snapshots of sockets go in (`Board.update`, from `inventory.take`), plain dicts ready for
JSON come out (`Page.delta`). The Board keeps the latest snapshot, each socket's rate from its
tcp_info byte counters (diffed by socket cookie between refreshes), the connection log and the
traffic history. A Page is one viewer: its filter (the `ls` language), sort, grouping and page
number, and the rows it was last sent, so that only rows that changed travel again.

Whatever the number of sockets, a page is sent at most `View.size` rows, `MAP_EDGES` edges of
the map, `LISTENERS` listeners and `EVENTS_PER_DELTA` log lines per refresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UsageError
from ..inventory.filters import compile_filter, tokenize
from ..model import Endpoint, Family, NetId, Socket, State
from .closing import final_bytes

Shape = Callable[[Socket], dict[str, Any]]  # a socket -> its JSON object (the `ls --json` shape)
Key = int | tuple[object, ...]
Predicate = Callable[[Socket], bool]

UNKNOWN = "?"  # the process of a socket whose holder cannot be seen (another user's, without root)
LISTENERS = 200
MAP_EDGES = 60
EVENTS_PER_DELTA = 200
KEPT_EVENTS = 2000
HISTORY_POINTS = 300
PROCESSES_PER_POINT = 12
LARGEST_PAGE = 500
_QUIET = frozenset({State.LISTEN, State.UNCONN})  # not connections: no log lines, no map edges

SORTS = ("netid", "state", "recv_q", "send_q", "local", "peer", "process", "tx", "rx")
GROUPS = ("", "process", "state", "netid", "local_port", "remote", "peer")


def socket_key(sock: Socket) -> Key:
    """Give what tells one socket from every other across refreshes: its cookie, else its identity."""
    if sock.cookie is not None:
        return sock.cookie
    return (sock.netid, sock.inode, sock.local, sock.peer)


def key_text(key: Key) -> str:
    """Give the id a page knows a socket by."""
    if isinstance(key, int):
        return f"c{key:x}"
    return "|".join(map(str, key))


def process_of(sock: Socket) -> str:
    """Give `name(pid)` of a socket's first holder, or `?` when none can be seen."""
    if not sock.owners:
        return UNKNOWN
    owner = sock.owners[0]
    more = f"+{len(sock.owners) - 1}" if len(sock.owners) > 1 else ""
    return f"{owner.name}({owner.pid}){more}"


def _end_text(end: object) -> str:
    if isinstance(end, Endpoint):
        host = f"[{end.address}]" if ":" in end.address else end.address
        return f"{host}:{end.port}"
    return str(end)


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the connection log: a connection seen for the first time, or seen no more."""

    seq: int
    time: float
    kind: str  # "open", "close", or "lost" (close events the kernel dropped; no socket then)
    sock: Socket | None
    process: str
    seconds: float | None  # how long it was seen, for a close (None: it was there at the start)
    bytes: tuple[int, int] | None = None  # sent (acked), received: a close the kernel told of, with its final tcp_info
    lost: int = 0  # for kind "lost": close events the kernel dropped


@dataclass(frozen=True, slots=True)
class View:
    """What one page asked for: the `ls` filter, sort column and order, grouping and page."""

    filter: str = ""
    sort: str = "state"
    descending: bool = False
    group: str = ""
    page: int = 0
    size: int = 100


def parse_view(asked: object) -> View:
    """Give the View a page asked for (a JSON object); UsageError naming what is wrong."""
    if not isinstance(asked, dict):
        raise UsageError("a view is a JSON object")
    unknown = set(asked) - set(View.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown view field {sorted(unknown)[0]!r}")
    view = View(**asked)
    if not isinstance(view.filter, str) or len(view.filter) > 4096:
        raise UsageError("the filter is text of at most 4096 characters")
    if view.sort not in SORTS:
        raise UsageError(f"cannot sort by {view.sort!r} (one of {', '.join(SORTS)})")
    if view.group not in GROUPS:
        raise UsageError(f"cannot group by {view.group!r} (one of {', '.join(filter(None, GROUPS))})")
    if not isinstance(view.descending, bool):
        raise UsageError("descending is true or false")
    for name, value, most in (("page", view.page, 1_000_000), ("size", view.size, LARGEST_PAGE)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
            raise UsageError(f"{name} is a whole number from 0 to {most}")
    return replace(view, size=max(view.size, 1))


def compile_view_filter(text: str, service_port: Callable[[str], int | None] | None = None) -> Predicate | None:
    """Give the predicate of a filter in the `ls` language (None for an empty one); FilterError when it does not parse."""
    words = tokenize(text)
    if not words:
        return None
    return compile_filter(words, service_port).predicate


class Board:
    """The latest snapshot of the host's sockets, their rates, the connection log and the traffic history."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.time: float | None = None
        self.refreshes = 0
        self.sockets: dict[Key, Socket] = {}
        self.rates: dict[Key, tuple[int, int]] = {}  # bytes/s sent (acked by the peer), received
        self.events: deque[Event] = deque(maxlen=KEPT_EVENTS)
        self.next_seq = 1
        self.history: deque[tuple[int, float, dict[str, tuple[int, int]]]] = deque(maxlen=HISTORY_POINTS)
        self.next_point = 1
        self._counters: dict[Key, tuple[int, int]] = {}
        self._first_seen: dict[Key, float] = {}
        self._told_closed: dict[Key, None] = {}  # closes the kernel told of, so that a late snapshot does not reopen them
        self.listening_ports: frozenset[tuple[str, int]] = frozenset()

    def update(self, sockets: Iterable[Socket], now: float) -> None:
        """Take a new snapshot taken at `now` (seconds): rates, log lines and a history point follow from it."""
        fresh = {socket_key(sock): sock for sock in sockets}
        previous, elapsed = self.sockets, (now - self.time) if self.time is not None else None
        if self.time is not None:  # the first snapshot is the starting point, not a burst of opens
            for key in fresh.keys() - previous.keys():
                if fresh[key].state not in _QUIET and key not in self._told_closed:
                    self._log("open", fresh[key], now, None)
        for key in previous.keys() - fresh.keys():
            sock = previous[key]
            if sock.state not in _QUIET:
                seen = self._first_seen.get(key)
                self._log("close", sock, now, None if seen is None else now - seen)
        first_seen = self._first_seen
        self._first_seen = {key: first_seen.get(key, now) for key in fresh}
        self._rates(fresh, elapsed)
        # of tcp_info only two counters are kept (in _rates): the rest weighs a sixth of the board
        self.sockets = {key: sock._replace(internals=None) if sock.internals else sock for key, sock in fresh.items()}
        self.time = now
        self.refreshes += 1
        self.listening_ports = frozenset((s.netid, s.local.port) for s in fresh.values() if s.state is State.LISTEN and isinstance(s.local, Endpoint))
        self._history_point(now)

    def closed(self, sockets: Iterable[Socket], lost: int, now: float) -> None:
        """Log the closes the kernel told of (destroy events, with final bytes) at once, and the events it lost.

        A connection on the board leaves it now (the next refresh logs nothing more for it); one
        that opened and closed between two refreshes is logged as a close it never showed.
        """
        for sock in sockets:
            key = socket_key(sock)
            self._told_closed[key] = None
            if len(self._told_closed) > KEPT_EVENTS:
                del self._told_closed[next(iter(self._told_closed))]
            known = self.sockets.pop(key, None)
            if known is None and sock.netid is not NetId.TCP:
                continue  # a UDP socket the board never showed (a DNS query): noise in a connection log
            seen = self._first_seen.pop(key, None)
            self._counters.pop(key, None)
            self.rates.pop(key, None)
            # the kernel reports every destroyed socket as CLOSE (ss's UNCONN): what it was is the board's to know
            if known is not None and known.state in _QUIET:
                continue
            if known is None and (not isinstance(sock.peer, Endpoint) or sock.peer.port == 0):
                continue  # a listener or a socket never connected: not a connection
            shown = sock if known is None else known
            self.events.append(Event(self.next_seq, now, "close", shown, process_of(shown), None if seen is None else now - seen, final_bytes(sock)))
            self.next_seq += 1
        if lost:
            self.events.append(Event(self.next_seq, now, "lost", None, UNKNOWN, None, None, lost))
            self.next_seq += 1

    def _log(self, kind: str, sock: Socket, now: float, seconds: float | None) -> None:
        self.events.append(Event(self.next_seq, now, kind, sock, process_of(sock), seconds))
        self.next_seq += 1

    def _rates(self, fresh: dict[Key, Socket], elapsed: float | None) -> None:
        counters: dict[Key, tuple[int, int]] = {}
        rates: dict[Key, tuple[int, int]] = {}
        old = self._counters
        for key, sock in fresh.items():
            now_counters = final_bytes(sock)
            if now_counters is None:
                continue
            counters[key] = now_counters
            if elapsed is None or elapsed <= 0:
                continue
            # a connection new since the last refresh moved all its bytes within the interval
            before = old.get(key, (0, 0))
            sent, received = now_counters[0] - before[0], now_counters[1] - before[1]
            if sent > 0 or received > 0:
                rates[key] = (max(round(sent / elapsed), 0), max(round(received / elapsed), 0))
        self._counters, self.rates = counters, rates

    def _history_point(self, now: float) -> None:
        totals: dict[str, list[int]] = {}
        for key, (sent, received) in self.rates.items():
            total = totals.setdefault(process_of(self.sockets[key]), [0, 0])
            total[0] += sent
            total[1] += received
        busiest = sorted(totals.items(), key=lambda item: -(item[1][0] + item[1][1]))[:PROCESSES_PER_POINT]
        self.history.append((self.next_point, now, {name: (sent, received) for name, (sent, received) in busiest}))
        self.next_point += 1

    def row(self, key: Key, sock: Socket) -> dict[str, Any]:
        """Give the JSON row of a socket: its `ls --json` object, plus id, process and rates."""
        sent, received = self.rates.get(key, (0, 0))
        return {**self.shape(sock), "id": key_text(key), "process": process_of(sock), "tx_bps": sent, "rx_bps": received}

    def listeners(self) -> tuple[list[dict[str, Any]], int]:
        """Give the listening sockets (fullest accept queue first, at most LISTENERS) and how many there are in all."""
        found = [(key, sock) for key, sock in self.sockets.items() if sock.state is State.LISTEN]
        found.sort(key=lambda pair: (-(pair[1].recv_q / max(pair[1].send_q, 1)), _port(pair[1].local), pair[1].netid))
        return [self.row(key, sock) for key, sock in found[:LISTENERS]], len(found)


def _port(end: object) -> int:
    return end.port if isinstance(end, Endpoint) else 0


def _remote_host(sock: Socket) -> str:
    return sock.peer.address if isinstance(sock.peer, Endpoint) else _end_text(sock.peer)


def _sort_key(board: Board, sort: str, plain: bool) -> Callable[[tuple[Key, Socket]], Any]:
    """Give the sort key of a column; `plain` when every end is an Endpoint, compared as it is (fast)."""
    rates = board.rates
    end: Callable[[object], Any] = (lambda end: end) if plain else _end_sort
    keys: dict[str, Callable[[tuple[Key, Socket]], Any]] = {
        "netid": lambda pair: (pair[1].netid, end(pair[1].local)),
        "state": lambda pair: (pair[1].state, end(pair[1].local)) if not plain else (pair[1].state, pair[1].local),
        "recv_q": lambda pair: pair[1].recv_q,
        "send_q": lambda pair: pair[1].send_q,
        "local": lambda pair: end(pair[1].local),
        "peer": lambda pair: end(pair[1].peer),
        "process": lambda pair: process_of(pair[1]),
        "tx": lambda pair: rates.get(pair[0], (0, 0))[0],
        "rx": lambda pair: rates.get(pair[0], (0, 0))[1],
    }
    return keys[sort]


def _end_sort(end: object) -> tuple[int, str, int]:
    if isinstance(end, Endpoint):
        return (1 if ":" in end.address else 0, end.address, end.port)
    return (2, str(end), 0)


_GROUP_OF: dict[str, Callable[[Socket], str]] = {
    "process": process_of,
    "state": lambda sock: sock.state.value,
    "netid": lambda sock: sock.netid.value,
    "local_port": lambda sock: str(_port(sock.local)),
    "remote": _remote_host,
    "peer": lambda sock: _end_text(sock.peer),
}


def _diff(old: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Give the rows by id, and what turns `old` into them: rows new or changed, ids gone, the new order."""
    new = {row["id"]: row for row in rows}
    part: dict[str, Any] = {}
    changed = [row for row in rows if old.get(row["id"]) != row]
    gone = [key for key in old if key not in new]
    if changed:
        part["upsert"] = changed
    if gone:
        part["remove"] = gone
    if list(new) != list(old):
        part["order"] = list(new)
    return new, part


@dataclass
class Page:
    """One viewer of the board: what it asked for and what it holds, to send it only what changed."""

    board: Board
    service_port: Callable[[str], int | None] | None = None
    view: View = field(default_factory=View)
    predicate: Predicate | None = None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = ""
    listeners: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: tuple[int, ...] = ()
    seen_seq: int = 0
    seen_point: int = 0
    _total: int = 0  # rows (or groups) the filter lets through, over every page

    def __post_init__(self) -> None:
        # a new page sees the recent log and the traffic history it missed, then follows along
        self.seen_seq = max(self.board.next_seq - 1 - EVENTS_PER_DELTA, 0)

    def ask(self, asked: object) -> None:
        """Take a new view from the page; UsageError (FilterError for the filter) when it is wrong, the old view kept."""
        view = parse_view(asked)
        if view.filter != self.view.filter:
            self.predicate = compile_view_filter(view.filter, self.service_port)
        self.view = view

    def delta(self) -> dict[str, Any]:
        """Give what changed for this page since its last delta (only the parts that did)."""
        board, view = self.board, self.view
        message: dict[str, Any] = {}
        chosen = [(key, sock) for key, sock in board.sockets.items() if self.predicate is None or self.predicate(sock)]
        table = self._table(chosen)
        if table:
            message["table"] = table
        listeners, listening = board.listeners()
        self.listeners, part = _diff(self.listeners, listeners)
        if part:
            message["listeners"] = part
        self.edges, part = _diff(self.edges, self._edges(chosen))
        if part:
            message["map"] = part
        counts = (len(board.sockets), len(chosen), listening, view.page)
        if counts != self.counts:
            self.counts = counts
            pages = max((self._total + view.size - 1) // view.size, 1)
            message["counts"] = {"sockets": counts[0], "shown": counts[1], "rows": self._total, "listeners": listening, "page": view.page, "pages": pages}
        events = self._events()
        if events:
            message["events"] = events
        points = [(time, rates) for number, time, rates in board.history if number > self.seen_point]
        if board.history:
            self.seen_point = board.history[-1][0]
        if points:
            message["rates"] = [{"t": round(time, 3), "p": {name: list(pair) for name, pair in rates.items()}} for time, rates in points]
        return message

    def _table(self, chosen: list[tuple[Key, Socket]]) -> dict[str, Any]:
        view, board = self.view, self.board
        mode = f"group:{view.group}" if view.group else "rows"
        if view.group:
            rows = self._groups(chosen)
        else:
            plain = all(type(sock.local) is Endpoint and type(sock.peer) is Endpoint for _key, sock in chosen)
            chosen = sorted(chosen, key=_sort_key(board, view.sort, plain), reverse=view.descending)
            self._total = len(chosen)
            start = view.page * view.size
            rows = [board.row(key, sock) for key, sock in chosen[start : start + view.size]]
        if mode != self.mode:  # other columns: the page starts the table afresh
            self.mode, self.rows = mode, {}
            self.rows, part = _diff({}, rows)
            return {"reset": mode, **part}
        self.rows, part = _diff(self.rows, rows)
        return part

    def _groups(self, chosen: list[tuple[Key, Socket]]) -> list[dict[str, Any]]:
        view, rates = self.view, self.board.rates
        group_of = _GROUP_OF[view.group]
        totals: dict[str, list[int]] = {}
        for key, sock in chosen:
            total = totals.setdefault(group_of(sock), [0, 0, 0])
            sent, received = rates.get(key, (0, 0))
            total[0] += 1
            total[1] += sent
            total[2] += received
        column = {"tx": 1, "rx": 2}.get(view.sort, 0)
        ordered = sorted(totals.items(), key=lambda item: (-item[1][column], item[0]))
        if view.descending:
            ordered.reverse()
        self._total = len(ordered)
        start = view.page * view.size
        return [
            {"id": f"g:{name}", "group": name, "count": count, "tx_bps": sent, "rx_bps": received}
            for name, (count, sent, received) in ordered[start : start + view.size]
        ]

    def _edges(self, chosen: list[tuple[Key, Socket]]) -> list[dict[str, Any]]:
        """Give the map: process -> remote end, counted; the client end of an accepted connection is shown by host only."""
        listening, rates = self.board.listening_ports, self.board.rates
        totals: dict[tuple[str, str], list[int]] = {}
        for key, sock in chosen:
            if sock.state in _QUIET or sock.family not in (Family.INET, Family.INET6) or not isinstance(sock.local, Endpoint):
                continue
            accepted = (sock.netid, sock.local.port) in listening
            remote = _remote_host(sock) if accepted else _end_text(sock.peer)
            total = totals.setdefault((process_of(sock), remote), [0, 0, 0])
            sent, received = rates.get(key, (0, 0))
            total[0] += 1
            total[1] += sent
            total[2] += received
        busiest = sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))[:MAP_EDGES]
        return [
            {"id": f"{process}>{remote}", "process": process, "remote": remote, "count": count, "tx_bps": sent, "rx_bps": received}
            for (process, remote), (count, sent, received) in busiest
        ]

    def _events(self) -> list[dict[str, Any]]:
        board = self.board
        fresh = [event for event in board.events if event.seq > self.seen_seq]
        if board.events:
            self.seen_seq = board.events[-1].seq
        if self.predicate is not None:
            predicate = self.predicate
            fresh = [event for event in fresh if event.sock is None or predicate(event.sock)]
        return [
            {
                "seq": event.seq,
                "time": round(event.time, 3),
                "kind": event.kind,
                "process": event.process,
                "seconds": None if event.seconds is None else round(event.seconds, 3),
                "socket": None if event.sock is None else board.shape(event.sock),
                **({"bytes": list(event.bytes)} if event.bytes is not None else {}),
                **({"lost": event.lost} if event.kind == "lost" else {}),
            }
            for event in fresh[-EVENTS_PER_DELTA:]
        ]

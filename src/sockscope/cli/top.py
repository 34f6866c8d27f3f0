"""`sockscope top`: a live view of sockets grouped by process, refreshed every second (like htop).

This module holds the command and the text of each line (shared by the terminal view and by
`--once`); the terminal view itself (textual, imported only here) is in top_app.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ExitCode, SockscopeError, UsageError
from ..model import Endpoint, NetId, State
from . import seconds
from .environment import Environment
from .render import escape

if TYPE_CHECKING:
    import argparse

    from ..live.rates import Conn
    from ..live.view import Group, Row

SORTABLE = ("process", "state", "local", "remote", "send", "recv", "rtt", "retrans", "queue")
_HEADINGS = {"state": "STATE", "local": "LOCAL", "remote": "REMOTE", "send": "SEND", "recv": "RECV", "rtt": "RTT", "retrans": "RETR", "queue": "QUEUE"}
_SHORT_STATES = {State.LISTEN: "listen", State.ESTAB: "estab", State.TIME_WAIT: "time-wait", State.CLOSE_WAIT: "close-wait", State.SYN_RECV: "syn-recv"}


def add_parser(commands: Any) -> None:
    """Add `top` to the command parsers."""
    p = commands.add_parser(
        "top",
        help="a live view of TCP sockets by process: send/receive rates, rtt, retransmits, accept backlogs",
        description="Listeners and connections grouped by process, refreshed every second, with send and receive rates "
        "(from tcp_info), rtt, retransmits and how full each listener's accept backlog is. Keys are shown at the bottom. "
        "Needs a terminal; --once prints one plain-text table instead.",
        epilog="Keys: < and > choose the sort column, i inverts it, / filters, p pauses, n shows port names, g groups by "
        "process, remote host or not at all, Enter opens a process (its sockets and every open descriptor), c closes a "
        "connection and k stops a listener (both ask first), q quits. SEND is bytes per second the peer acknowledged, "
        "RECV bytes per second received; QUEUE is a listener's accept backlog and its limit. Closed connections stay "
        "5 seconds, marked 'closed'. "
        "Examples: 'sockscope top', 'sockscope top dport = :443', 'sockscope top --once --group flat --sort recv'.",
    )
    p.add_argument("-d", "--interval", type=seconds, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    p.add_argument("-u", "--udp", action="store_true", help="show UDP sockets too")
    p.add_argument("-g", "--group", choices=("process", "remote", "flat"), default="process", help="group rows by process (default), remote host, or not")
    p.add_argument("-s", "--sort", choices=SORTABLE, default="send", help="sort by this column, largest first (default send)")
    p.add_argument("-p", "--port", type=int, metavar="PORT", help="only sockets whose local port is PORT, filtered by the kernel (cheap on a busy host)")
    p.add_argument("--once", action="store_true", help="print one table as plain text (rates over one interval) and exit")
    p.add_argument("filter", nargs="*", metavar="FILTER", help="show only sockets this filter matches (the language of ls)")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Show the live view (or one table with --once); give the exit status."""
    if not 0.1 <= args.interval <= 3600 or math.isnan(args.interval):
        raise UsageError(f"--interval {args.interval:g}: give a number of seconds from 0.1 to 3600")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: give a port from 1 to 65535")
    where = compile_words(args.filter)
    netids = frozenset({NetId.TCP, NetId.UDP} if args.udp else {NetId.TCP})
    if args.once:
        return print_once(env, netids, where, args)
    if not env.is_tty or not env.stderr.isatty():  # textual draws on stderr: both must be the terminal
        raise UsageError("top needs a terminal; use 'sockscope top --once' for one table as text, or 'sockscope ls -ti' in a pipe")
    try:
        from .top_app import TopApp
    except ImportError as missing:
        if missing.name is None or not missing.name.startswith("textual"):
            raise
        raise SockscopeError("top needs textual, which is not installed: pip install 'sockscope[top]' (or use 'sockscope top --once')") from None
    from ..live.sampler import Sampler

    sampler = Sampler(netids, local_port=args.port)
    app = TopApp(interval=args.interval, grouping=args.group, column=args.sort, filter_text=" ".join(args.filter), sampler=sampler)
    app.run()
    if app.failure is not None:
        raise app.failure
    return ExitCode.OK


def compile_words(words: list[str]) -> Callable[[Any], bool] | None:
    """Give the predicate of a filter in the `ls` language (None for no filter); FilterError when it is wrong."""
    if not words or not " ".join(words).strip():
        return None
    from .. import services
    from ..inventory.filters import compile_filter

    tcp = services.by_port("tcp")
    return compile_filter(words, {name: port for port, name in sorted(tcp.items(), reverse=True)}.get).predicate


def print_once(env: Environment, netids: frozenset[NetId], where: Callable[[Any], bool] | None, args: argparse.Namespace) -> int:
    """Print one table (two refreshes `interval` apart, so rates are known); exit 1 when nothing matched."""
    import time

    from ..live.sampler import Sampler
    from ..live.view import rows

    sampler = Sampler(netids, local_port=args.port)
    sampler.sample()
    time.sleep(args.interval)
    sample = sampler.sample()
    lines = rows(sample.conns, args.group, args.sort, True, where)
    layout = Layout(env.width if env.is_tty else 100, args.group)
    write = env.stdout.write
    write(layout.heading(args.sort, True) + "\n")
    for row in lines:
        write(layout.line(row).text + "\n")
    for note in sample.notes:
        env.note(note)
    return ExitCode.OK if lines else ExitCode.NOTHING_FOUND


def rate_text(value: float | None) -> str:
    """Give a rate in bytes per second as `0`, `512`, `1.5K`, `12M` (binary units), or `` when unknown."""
    if value is None:
        return ""
    for unit in ("", "K", "M", "G", "T"):
        if value < 1000 or unit == "T":
            return f"{value:.0f}{unit}" if value >= 10 or not unit else f"{value:.1f}{unit}"
        value /= 1024
    return ""  # pragma: no cover - the loop always returns


def rtt_text(rtt_us: int | None) -> str:
    """Give a round-trip time as `80us`, `1.2ms`, `35ms` or `1.5s`."""
    if rtt_us is None:
        return ""
    if rtt_us < 1000:
        return f"{rtt_us}us"
    if rtt_us < 10_000:
        return f"{rtt_us / 1000:.1f}ms"
    if rtt_us < 1_000_000:
        return f"{rtt_us // 1000}ms"
    return f"{rtt_us / 1e6:.1f}s"


def endpoint_text(end: object, names: dict[int, str] | None = None) -> str:
    """Give `127.0.0.1:80` or `[::1]:80` (`:http` with service names), `*` for an unconnected peer."""
    if isinstance(end, Endpoint):
        port = (names or {}).get(end.port, str(end.port)) if end.port else "*"
        address = "*" if end.address in ("0.0.0.0", "::") else end.address
        return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return str(end)


def fit(text: str, width: int, left: bool = True) -> str:
    """Give text cut or padded to `width`; a cut keeps the end (the port) behind an ellipsis."""
    if width <= 0:
        return ""
    if len(text) > width:
        text = "…" + text[len(text) - width + 1 :] if width > 1 else text[:width]
    return text.ljust(width) if left else text.rjust(width)


class Line(NamedTuple):
    """One line of the table as text, and what it is (`group`, `socket`, `closed`, `full`: a full backlog)."""

    text: str
    kind: str


class Layout:
    """Column widths for a terminal width, and the text of the heading and of each row."""

    FIXED = (("state", 10), ("send", 6), ("recv", 6), ("rtt", 6), ("retrans", 4), ("queue", 8))

    def __init__(self, width: int, grouping: str, names: dict[int, str] | None = None) -> None:
        self.width = max(width, 40)
        self.grouping = grouping
        self.names = names
        self.indent = 0 if grouping == "flat" else 2
        fixed = sum(size for _name, size in self.FIXED) + len(self.FIXED) + 1  # a space after each column
        room = self.width - fixed - self.indent
        if grouping == "flat":  # addresses first; the process gets what is left, if it is enough to read
            self.address = min(30, max(min(15, room // 2), (room - 17) // 2))
            self.process = room - 2 * self.address - 1 if room - 2 * self.address - 1 >= 6 else 0
        else:
            self.address = max(9, min(30, room // 2))
            self.process = 0

    def heading(self, column: str, descending: bool) -> str:
        """Give the heading line, the sort column marked with ▼ (largest first) or ▲."""
        mark = "▼" if descending else "▲"

        def title(name: str, width: int, left: bool = False) -> str:
            text = _HEADINGS.get(name, name.upper()) + (mark if name == column else "")
            return fit(text, width, left)

        parts = [" " * self.indent + title("state", 10, True), title("local", self.address, True), title("remote", self.address, True)]
        parts += [title(name, size) for name, size in self.FIXED[1:]]
        if self.process:
            parts.append(title("process", self.process, True))
        elif column == "process":
            parts.append("PROCESS" + mark)
        return " ".join(parts)[: self.width]

    def line(self, row: Row) -> Line:
        """Give the text of one row."""
        if row.conn is None:
            assert row.group is not None
            return self.group_line(row.group)
        return self.conn_line(row.conn)

    def conn_line(self, conn: Conn) -> Line:
        """Give the text of one socket's row."""
        from ..live.view import backlog_fill

        sock = conn.sock
        shown = sock.state is not State.LISTEN  # a listener's tcp_info says nothing of its clients
        fill = backlog_fill(sock)
        if conn.closed_at is not None:
            state, kind = "closed", "closed"
        else:
            state, kind = sock.state.value, "full" if fill is not None and fill >= 1 else "socket"
        if fill is not None:
            queue = f"{sock.recv_q}/{sock.send_q}"
            if len(queue) > 8:
                queue = f"{fill:.0%}"
        else:
            queue = str(sock.recv_q) if sock.recv_q else ""
        netid = "" if sock.netid is NetId.TCP else f"{sock.netid.value} "
        parts = [
            " " * self.indent + fit(netid + state, 10),
            fit(endpoint_text(sock.local, self.names), self.address),
            fit(endpoint_text(sock.peer, self.names), self.address),
            fit(rate_text(conn.send_rate), 6, False),
            fit(rate_text(conn.recv_rate), 6, False),
            fit(rtt_text(conn.rtt_us if shown else None), 6, False),
            fit(str(conn.retrans) if shown and conn.retrans is not None else "", 4, False),
            fit(queue, 8, False),
        ]
        if self.process:
            owner = sock.owners[0] if sock.owners else None
            parts.append(fit(f"{escape(owner.name)}/{owner.pid}" if owner else "?", self.process))
        return Line(" ".join(parts), kind)

    def group_line(self, group: Group) -> Line:
        """Give a group's heading: its title and socket counts by state, then its sums under the columns."""
        counts = ", ".join(f"{number} {_SHORT_STATES.get(state, state.value.lower())}" for state, number in group.states.most_common())
        title_width = 10 + 2 * self.address + 2 + self.indent
        # a process names itself (prctl): its name may hold a newline or a terminal escape
        name = escape(group.title)
        title = f"{name}  {counts}" if counts else f"{name}  (closed)"
        parts = [
            fit(title, title_width),
            fit(rate_text(group.send_rate), 6, False),
            fit(rate_text(group.recv_rate), 6, False),
            fit(rtt_text(group.rtt_us), 6, False),
            fit(str(group.retrans) if group.retrans else "", 4, False),
            fit(f"{group.fill:.0%}" if group.fill is not None else "", 8, False),
        ]
        full = group.fill is not None and group.fill >= 1
        return Line(" ".join(parts), "full-group" if full else "group")


def state_summary(counts: dict[State, int]) -> str:
    """Give `1,204 sockets: 1,100 estab, 12 listen, ...` for the status line."""
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return f"{total:,} sockets" + (": " + ", ".join(f"{n:,} {_SHORT_STATES.get(s, s.value.lower())}" for s, n in ordered) if ordered else "")

"""The terminal view of `sockscope top` (textual). Imported only by the `top` command.

The table is one widget that draws only the lines on screen from plain records (textual's
line API): at 50,000 sockets there are 50,000 records and about twenty drawn lines, never
50,000 widgets. Refreshes run in a thread, so keys answer while the kernel is being asked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Input, Static

from ..errors import SockscopeError
from ..live.rates import Conn, state_counts
from ..live.sampler import Sample, Sampler, collector_paused
from ..live.view import GROUPINGS, Grouping, Row, rows
from ..model import Endpoint, NetId, State
from .render import escape
from .top import SORTABLE, Layout, Line, compile_words, endpoint_text, state_summary
from .top_screens import Confirm, LineView, ProcessScreen

MESSAGE_SECONDS = 8.0


class TopApp(App[None]):
    """Sockets by process (or remote host, or flat), refreshed every `interval` seconds."""

    TITLE = "sockscope top"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #status { height: 2; }
    #heading { height: 1; text-style: bold; }
    #table { height: 1fr; scrollbar-size-vertical: 1; overflow-x: hidden; }
    #note { height: 1; }
    #filter { dock: bottom; display: none; border: none; height: 1; padding: 0; }
    #filter.shown { display: block; }
    #descriptors { height: 1fr; overflow-x: hidden; }
    #who { height: 1; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("greater_than_sign,right", "sort(1)", "Sort", key_display=">"),
        Binding("less_than_sign,left", "sort(-1)", "Sort", show=False),
        Binding("i", "invert", "Invert"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("p", "pause", "Pause"),
        Binding("n", "names", "Names"),
        Binding("g", "group", "Group"),
        Binding("enter", "open", "Open"),
        Binding("c", "close_connection", "Close"),
        Binding("k", "kill_listener", "Kill"),
    ]

    def __init__(
        self,
        netids: frozenset[NetId] = frozenset({NetId.TCP}),
        interval: float = 1.0,
        grouping: Grouping = "process",
        column: str = "send",
        filter_text: str = "",
        sampler: Sampler | None = None,
    ) -> None:
        # NO_COLOR: the terminal's own colours (textual would otherwise draw in 256-colour greys)
        super().__init__(ansi_color=True if "NO_COLOR" in os.environ else None)
        self.sampler = sampler or Sampler(netids)
        self.interval = interval
        self.grouping: Grouping = grouping
        self.column = column
        self.descending = True
        self.filter_text = filter_text
        self.where = compile_words(filter_text.split())
        self.paused = False
        self.names: dict[int, str] | None = None
        self.layout_ = Layout(80, grouping)
        self.sample: Sample | None = None
        self.lines: list[Row] = []
        self.failure: SockscopeError | None = None
        self.message = ""
        self.message_at = 0.0
        self._sampling = False
        self.refreshes = 0

    def compose(self) -> ComposeResult:
        yield Static("starting…", id="status", markup=False)
        yield Static("", id="heading", markup=False)
        yield LineView(self._line, id="table")
        yield Static("", id="note", markup=False)
        yield Input(placeholder="filter, as for ls: dport = :443 and not dst 10.0.0.0/8 (enter: apply, escape: cancel)", id="filter")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(LineView).focus()
        self._relayout()
        self.tick()
        self.set_interval(self.interval, self.tick)

    def on_resize(self, event: events.Resize) -> None:
        self._relayout(event.size.width)
        self._status()

    # -- refreshes ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Start a refresh unless paused or one is still under way (a slow refresh is never stacked)."""
        if not self.paused and not self._sampling:
            self._sampling = True
            self._take_sample()

    @work(thread=True, group="sample")
    def _take_sample(self) -> None:
        try:
            sample = self.sampler.sample()
            settings = self._settings()
            with collector_paused():
                lines = rows(sample.conns, *settings)
        except SockscopeError as error:
            self.call_from_thread(self._failed, error)
            return
        except Exception as error:  # a bug of ours, or /proc in a state we did not foresee: one line, never a traceback
            self.call_from_thread(self._failed, SockscopeError(f"internal error {type(error).__name__}: {error} (please report it)"))
            return
        finally:
            self._sampling = False
        self.call_from_thread(self._show, sample, lines, settings)

    def _failed(self, error: SockscopeError) -> None:
        if self.sample is None:  # nothing to show at all: leave with the reason
            self.failure = error
            self.exit()
            return
        self.say(error.message)

    def _settings(self) -> tuple[Grouping, str, bool, Callable[[Any], bool] | None]:
        return (self.grouping, self.column, self.descending, self.where)

    def _show(self, sample: Sample, lines: list[Row], settings: tuple[Any, ...]) -> None:
        if settings != self._settings():  # a key changed the order while the refresh ran
            with collector_paused():
                lines = rows(sample.conns, *self._settings())
        self.sample = sample
        self.refreshes += 1
        self._set_lines(lines)
        self._status()

    def _set_lines(self, lines: list[Row]) -> None:
        table = self.query_one(LineView)
        keep = self._row_key(self.lines[table.cursor]) if self.lines and table.cursor < len(self.lines) else None
        self.lines = lines
        cursor = table.cursor
        if keep is not None:
            for index, row in enumerate(lines):
                if self._row_key(row) == keep:
                    cursor = index
                    break
        table.set_count(len(lines), cursor)

    @staticmethod
    def _row_key(row: Row) -> Hashable:
        return ("conn", row.conn.key) if row.conn is not None else ("group", row.group.key if row.group else None)

    def _regroup(self) -> None:
        """Order the last refresh again after a change of sort, grouping, filter or names."""
        if self.sample is not None:
            with collector_paused():
                self._set_lines(rows(self.sample.conns, *self._settings()))
        self._relayout()
        self._status()

    # -- drawing -----------------------------------------------------------------------------

    def _line(self, index: int) -> Line:
        return self.layout_.line(self.lines[index])

    def _relayout(self, width: int | None = None) -> None:
        self.layout_ = Layout(width or self.size.width or 80, self.grouping, self.names)
        self.query_one("#heading", Static).update(self.layout_.heading(self.column, self.descending))
        self.query_one(LineView).refresh()

    def _status(self) -> None:
        sample = self.sample
        width = self.layout_.width
        # the sockets shown (the filter's), so the counts agree with the table
        shown = [row.conn for row in self.lines if row.conn is not None]
        counts = state_summary(state_counts(shown)) if sample else "starting…"
        if sample and self.where is not None:
            counts += f" (of {sum(state_counts(sample.conns).values()):,})"
        # what the user chose comes first: an 80-column line cuts the end, the timing and units
        took = f"refresh {sample.took:.2f}s every {self.interval:g}s · rates in bytes/s" if sample else ""
        grouped = {"process": "by process", "remote": "by remote host"}.get(self.grouping, "not grouped")
        mode = [grouped, f"sort {self.column}{' ▼' if self.descending else ' ▲'}", took]
        if self.names is not None:
            mode.insert(2, "port names")
        if self.filter_text:
            mode.insert(0, f"filter: {self.filter_text}")
        if self.paused:
            mode.insert(0, "PAUSED")
        # one line each: a wrapped line would push the next one out of its two rows
        self.query_one("#status", Static).update(f"{counts[:width]}\n{' · '.join(part for part in mode if part)[:width]}")
        recent = self.message if time.monotonic() - self.message_at < MESSAGE_SECONDS else ""
        notes = sample.notes if sample else []
        self.query_one("#note", Static).update((recent or " · ".join(notes))[:width])

    def say(self, message: str) -> None:
        """Show a message above the keys for a few seconds."""
        self.message, self.message_at = message, time.monotonic()
        self._status()

    # -- keys --------------------------------------------------------------------------------

    def action_sort(self, step: int) -> None:
        self.column = SORTABLE[(SORTABLE.index(self.column) + step) % len(SORTABLE)]
        self._regroup()

    def action_invert(self) -> None:
        self.descending = not self.descending
        self._regroup()

    def action_group(self) -> None:
        self.grouping = GROUPINGS[(GROUPINGS.index(self.grouping) + 1) % len(GROUPINGS)]
        self._regroup()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._status()

    def action_names(self) -> None:
        from .. import services

        self.names = None if self.names is not None else services.by_port("tcp")
        self._relayout()
        self._status()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.filter_text
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        try:
            self.where = compile_words(text.split())
        except SockscopeError as error:
            self.say(f"filter not applied: {error.message}")
            return
        self.filter_text = text
        self._close_filter()
        self._regroup()

    def on_key(self, event: Any) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            self._close_filter()
            event.stop()

    def _close_filter(self) -> None:
        self.query_one("#filter", Input).remove_class("shown")
        self.query_one(LineView).focus()

    def _current(self) -> Row | None:
        table = self.query_one(LineView)
        return self.lines[table.cursor] if self.lines and table.cursor < len(self.lines) else None

    def action_open(self) -> None:
        row = self._current()
        pid = None
        if row is not None and row.conn is not None and row.conn.sock.owners:
            pid = row.conn.sock.owners[0].pid
        elif row is not None and row.conn is None and row.group is not None:
            pid = row.group.pid
        if pid is None:
            self.say("no process to open here: choose a row of a process whose owner is known")
            return
        self.push_screen(ProcessScreen(pid, self.sample.conns if self.sample else [], self.layout_, self.sampler.root))

    def action_close_connection(self) -> None:
        row = self._current()
        conn = row.conn if row is not None else None
        if conn is None or conn.closed_at is not None or conn.sock.state in (State.LISTEN, State.TIME_WAIT, State.UNCONN):
            self.say("choose a connection to close (c), or a listener to stop (k)")
            return
        sock = conn.sock
        owner = f" held by {escape(sock.owners[0].name)} (pid {sock.owners[0].pid})" if sock.owners else ""
        question = f"Close {sock.netid.value} {endpoint_text(sock.local)} -> {endpoint_text(sock.peer)}{owner}? The peer gets a reset."

        def answered(yes: bool | None) -> None:
            if yes:
                self._close(conn)

        self.push_screen(Confirm(question), answered)

    @work(thread=True, group="act")
    def _close(self, conn: Conn) -> None:
        from ..inventory import state_mask
        from ..ports.close import close, matching

        sock = conn.sock

        def same(candidate: Any) -> bool:
            if sock.cookie is not None:
                return bool(candidate.cookie == sock.cookie)
            return bool(candidate.local == sock.local and candidate.peer == sock.peer)

        try:
            found = matching(frozenset({sock.netid}), state_mask({sock.state}), same, False)
            done = close(found) if found else None
        except SockscopeError as error:
            self.call_from_thread(self.say, f"not closed: {error.message}")
            return
        except OSError as error:
            self.call_from_thread(self.say, f"not closed: {error.strerror or error}")
            return
        text = "closed" if done is not None and done.closed else "it had closed already"
        self.call_from_thread(self.say, f"{endpoint_text(sock.local)} -> {endpoint_text(sock.peer)}: {text}")

    def action_kill_listener(self) -> None:
        row = self._current()
        conn = row.conn if row is not None else None
        if conn is None or conn.closed_at is not None or conn.sock.state is not State.LISTEN or not isinstance(conn.sock.local, Endpoint):
            self.say("choose a listener to stop (k), or a connection to close (c)")
            return
        port, proto = conn.sock.local.port, "udp" if conn.sock.netid is NetId.UDP else "tcp"
        holders = ", ".join(f"{escape(o.name)} (pid {o.pid})" for o in conn.sock.owners or ()) or "a process that cannot be seen"
        question = f"Stop whoever listens on port {port}/{proto}: {holders}? SIGTERM now, SIGKILL after 5 s."

        def answered(yes: bool | None) -> None:
            if yes:
                self._kill(port, proto == "udp")

        self.push_screen(Confirm(question), answered)

    @work(thread=True, group="act")
    def _kill(self, port: int, udp: bool) -> None:
        from ..ports.kill import stop

        proto = "udp" if udp else "tcp"
        try:
            outcome = stop(port, udp=udp, root=self.sampler.root, timeout=5.0)
        except SockscopeError as error:
            self.call_from_thread(self.say, f"port {port}/{proto}: {error.message}")
            return
        except OSError as error:
            self.call_from_thread(self.say, f"port {port}/{proto}: {error.strerror or error}")
            return
        sent = ", ".join(f"{signal} to pid {victim.process.pid}" for victim, signal in outcome.signalled)
        if outcome.free:
            self.call_from_thread(self.say, f"port {port}/{proto} is free ({sent})")
        else:
            left = ", ".join(f"{escape(p.name)} (pid {p.pid})" for p in outcome.left) or "a process that cannot be seen"
            self.call_from_thread(self.say, f"port {port}/{proto} is still held by {left}")

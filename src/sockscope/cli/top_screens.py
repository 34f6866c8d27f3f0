"""The pieces of `sockscope top`'s terminal view: the table that draws only the lines on screen,
the yes/no question, and a process's page (its sockets, then every open descriptor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.screen import ModalScreen, Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Static

from ..errors import SockscopeError
from ..live.rates import Conn
from .render import escape
from .top import Layout, Line, endpoint_text

_STYLES = {
    "group": Style(bold=True),
    "full-group": Style(bold=True, color="red"),
    "full": Style(bold=True, color="red"),
    "closed": Style(dim=True, strike=True),
    "socket": Style(),
    "heading": Style(bold=True),
}
_CURSOR = Style(reverse=True)


class LineView(ScrollView, can_focus=True):
    """A scrolling list of lines with a cursor, drawn on demand: `line_at(index)` gives a line's text."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "move(-1000000000)", "First", show=False),
        Binding("end", "move(1000000000)", "Last", show=False),
    ]

    def __init__(self, line_at: Callable[[int], Line], count: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line_at = line_at
        self.count = count
        self.cursor = 0

    def set_count(self, count: int, cursor: int | None = None) -> None:
        """Show `count` lines (their text is asked for only when drawn), the cursor on line `cursor`."""
        self.count = count
        self.cursor = max(0, min(self.cursor if cursor is None else cursor, count - 1))
        self.virtual_size = Size(self.size.width, count)
        self._follow()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        index = y + self.scroll_offset.y
        width = self.scrollable_content_region.width
        base = self.rich_style  # never a style of None: textual's NO_COLOR filter cannot take one
        if index >= self.count:
            return Strip.blank(width, base)
        line = self.line_at(index)
        style = base + _STYLES.get(line.kind, Style())
        if index == self.cursor and self.has_focus:
            style = style + _CURSOR
        return Strip([Segment(line.text[:width].ljust(width), style)], width)

    def action_move(self, step: int) -> None:
        self.cursor = max(0, min(self.cursor + step, self.count - 1))
        self._follow()
        self.refresh()

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 1))

    def _follow(self) -> None:
        top = self.scroll_offset.y
        height = max(1, self.size.height)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


class Confirm(ModalScreen[bool]):
    """A yes/no question; only `y` says yes."""

    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Static { width: 70; max-width: 100%; height: auto; border: heavy $warning; padding: 1 2; background: $surface; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "Yes"), Binding("n,escape,q", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(f"{self.question}\n\n[y] yes   [n] no", markup=False)
        yield Footer()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ProcessScreen(Screen[None]):
    """One process: who it is, its sockets as top shows them, then every open descriptor."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,left", "app.pop_screen", "Back")]

    def __init__(self, pid: int, conns: list[Conn], layout: Layout, proc_root: str) -> None:
        super().__init__()
        self.pid = pid
        self.lines = _process_lines(pid, conns, layout, proc_root)

    def compose(self) -> ComposeResult:
        yield Static(self.lines[0].text, id="who", markup=False)
        view = LineView(lambda index: self.lines[index + 1], len(self.lines) - 1, id="descriptors")
        yield view
        yield Footer()

    def on_mount(self) -> None:
        view = self.query_one(LineView)
        view.set_count(len(self.lines) - 1)
        view.focus()


def _process_lines(pid: int, conns: list[Conn], layout: Layout, proc_root: str) -> list[Line]:
    """Give the lines of a process's page: a title, its sockets, its descriptors."""
    from ..inventory.processes import describe
    from ..live.owner_map import descriptors

    info = describe(pid, proc_root)
    command = " ".join(info.command) or info.name
    lines = [Line(escape(f"pid {pid}  {info.name}  user {info.user}  {command}"), "heading")]
    mine = [conn for conn in conns if conn.closed_at is None and any(owner.pid == pid for owner in conn.sock.owners or ())]
    lines.append(Line(f"{len(mine)} sockets shown by top", "heading"))
    lines += [layout.conn_line(conn) for conn in mine]
    by_inode = {conn.sock.inode: conn.sock for conn in mine}
    try:
        found = descriptors(pid, proc_root)
    except SockscopeError as error:
        return [*lines, Line(error.message, "full")]
    lines.append(Line(f"{len(found)} open descriptors (/proc/{pid}/fd)", "heading"))
    for descriptor in found:
        text = f"{descriptor.fd:>6}  {escape(descriptor.target)}"  # a file name may hold any byte but / and NUL
        if descriptor.target.startswith("socket:["):
            sock = by_inode.get(int(descriptor.target[8:-1]))
            if sock is not None:
                text += f"  {sock.netid.value} {sock.state.value} {endpoint_text(sock.local)} -> {endpoint_text(sock.peer)}"
        lines.append(Line(text, "socket"))
    return lines

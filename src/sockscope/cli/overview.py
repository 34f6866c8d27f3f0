"""`sockscope` / `sockscope listening`: what is listening on this host, and who runs it."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ExitCode
from ..model import Endpoint, NetId, Socket, State, UnixEndpoint
from .environment import Environment

GROUPS = (("TCP", (NetId.TCP,)), ("UDP", (NetId.UDP,)), ("UNIX", (NetId.UNIX_STREAM, NetId.UNIX_SEQPACKET)))


def add_parser(commands: Any) -> None:
    """Add `listening` (the default command) to the command parsers."""
    p = commands.add_parser("listening", help="what is listening on this host (the default)")
    p.add_argument("-n", "--numeric", action="store_true", help="no service names")
    p.add_argument("--json", action="store_true", help="the listeners as a JSON array of sockets")
    p.add_argument("--no-unix", action="store_true", help="leave out unix socket listeners")


def listeners(include_unix: bool = True) -> tuple[list[Socket], list[str]]:
    """Give listening TCP, bound UDP and (optionally) listening unix stream/seqpacket sockets, with owners."""
    from ..inventory import Query, state_mask, take

    kinds = {NetId.TCP, NetId.UDP}
    if include_unix:
        kinds |= {NetId.UNIX_STREAM, NetId.UNIX_SEQPACKET}
    inventory = take(Query(netids=frozenset(kinds), states=state_mask({State.LISTEN, State.UNCONN}), owners=True))
    keep = [
        s
        for s in inventory.sockets
        if (s.netid is NetId.TCP and s.state is State.LISTEN)
        or (s.netid is NetId.UDP and isinstance(s.local, Endpoint) and s.local.port != 0)
        or (s.netid in (NetId.UNIX_STREAM, NetId.UNIX_SEQPACKET) and s.state is State.LISTEN)
    ]
    return sorted(keep, key=_order), inventory.notes


def _order(s: Socket) -> tuple[int, str, str]:
    if isinstance(s.local, Endpoint):
        return s.local.port, s.family.value, s.local.address
    return 0, "", s.local.path or "" if isinstance(s.local, UnixEndpoint) else ""


def _process(s: Socket) -> tuple[str, str, str]:
    from .render import escape

    owners = s.owners or ()
    pids = ",".join(sorted({str(o.pid) for o in owners}, key=int)) or "-"
    names = ",".join(sorted({escape(o.name) for o in owners})) or "-"
    users = ",".join(sorted({escape(o.user) for o in owners})) or "-"
    return pids, names, users


def rows(sockets: list[Socket], tcp: dict[int, str], udp: dict[int, str]) -> list[tuple[str, list[tuple[str, ...]]]]:
    """Give the overview's groups: (title, rows of address, port, service, pid, process, user).

    Names are escaped (see render.escape): a row is always one line, whatever a name holds.
    """
    from .render import escape

    groups = []
    for title, netids in GROUPS:
        found: list[tuple[str, ...]] = []
        for s in sockets:
            if s.netid not in netids:
                continue
            pid, name, user = _process(s)
            if isinstance(s.local, Endpoint):
                names = tcp if s.netid is NetId.TCP else udp
                address = "*" if s.v6only is False and s.local.address == "::" else s.local.address  # IPv4 too, as ss shows it
                address += "" if s.device is None else f"%{escape(s.device)}"
                found.append((address, str(s.local.port), names.get(s.local.port, ""), pid, name, user))
            elif isinstance(s.local, UnixEndpoint):
                found.append((escape(s.local.path or "*"), "", s.netid.value, pid, name, user))
        if found:
            groups.append((title, found))
    return groups


HEADINGS = ("Address", "Port", "Service", "PID", "Process", "User")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Show the listeners, grouped by protocol; plain columns when piped."""
    from .. import services

    sockets, notes = listeners(include_unix=not getattr(args, "no_unix", False))
    for note in notes:
        env.note(note)
    if getattr(args, "json", False):
        import json

        from . import render

        service = render.service_of(services.by_port("tcp"), services.by_port("udp"))
        env.stdout.write(json.dumps([render.socket_json(s, service(s)) for s in sockets], indent=1) + "\n")
        return ExitCode.OK
    numeric = getattr(args, "numeric", False)
    tcp = {} if numeric else services.by_port("tcp")
    udp = {} if numeric else services.by_port("udp")
    groups = rows(sockets, tcp, udp)
    if env.is_tty:
        _pretty(env, groups)
    else:
        _plain(env, groups)
    return ExitCode.OK


def _plain(env: Environment, groups: list[tuple[str, list[tuple[str, ...]]]]) -> None:
    table = [("Proto", *HEADINGS)] + [(title.lower(), *row) for title, found in groups for row in found]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        env.stdout.write(" ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() + "\n")


def _pretty(env: Environment, groups: list[tuple[str, list[tuple[str, ...]]]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=env.stdout, color_system="auto" if env.color else None, width=env.width)
    if not groups:
        console.print("Nothing is listening.")
    for title, found in groups:
        table = Table(title=f"{title} — {len(found)} listening", title_justify="left", title_style="bold", header_style="bold")
        for heading in HEADINGS:
            table.add_column(heading, justify="right" if heading in ("Port", "PID") else "left", style="cyan" if heading == "Port" else None)
        for row in found:
            table.add_row(*map(Text, row))  # plain text: a name like "[bold]" is not markup
        console.print(table)

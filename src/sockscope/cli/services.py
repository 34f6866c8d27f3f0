"""`sockscope services QUERY`: ports and service names, range classes, and what binding takes here."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ExitCode
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `services` to the command parsers."""
    p = commands.add_parser(
        "services",
        help="look up a port or service: 22, 5432/tcp, ssh, 'postgres*', 8000-8100",
        description="Look up services by port, port/protocol, name (or alias), glob or range, from /etc/services "
        "(a built-in table when it is missing). Shows the IANA range class and whether binding needs privilege here.",
    )
    p.add_argument("query", metavar="QUERY", help="22, 5432/tcp, ssh, 'postgres*', 8000-8100")
    p.add_argument("--json", action="store_true", help="a JSON array")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Print the matching ports; exit 1 when nothing matches."""
    from ..ports.free import unprivileged_port_start
    from ..ports.services import lookup

    found = lookup(args.query)
    if args.json:
        import json

        env.stdout.write(json.dumps([f._asdict() | {"aliases": list(f.aliases)} for f in found], indent=2) + "\n")
        return ExitCode.OK if found else ExitCode.NOTHING_FOUND
    if not found:
        env.stderr.write(f"no service matches {args.query!r}\n")
        return ExitCode.NOTHING_FOUND
    start = unprivileged_port_start()
    rows = [("Port", "Proto", "Service", "Aliases", "Class", "Bind")]
    for f in found:
        bind = f"root (below {start})" if f.privileged else "anyone"
        rows.append((str(f.port), f.proto, f.name or "-", ",".join(f.aliases) or "-", f.port_class + (", ephemeral" if f.ephemeral else ""), bind))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        env.stdout.write(" ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n")
    return ExitCode.OK

"""`sockscope free`: ports that are free to bind right now."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ExitCode
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `free` to the command parsers."""
    p = commands.add_parser(
        "free",
        help="ports free to bind right now (proved by binding), outside the ephemeral range",
        description="Find ports that can be bound right now, proved by binding them (without SO_REUSEADDR). "
        "Without --range: 1024-65535 minus this host's ephemeral range.",
    )
    p.add_argument("-n", "--count", type=int, default=1, metavar="N", help="how many ports (default 1)")
    p.add_argument("-u", "--udp", action="store_true", help="UDP ports instead of TCP")
    p.add_argument("-r", "--range", metavar="A-B", help="look only in this range (the ephemeral range too, if it overlaps)")
    p.add_argument("--host", metavar="ADDR", help="the address to bind (default: every IPv4 and IPv6 address)")
    p.add_argument("--json", action="store_true", help='JSON: {"ports": [...], "proto": ..., "host": ...}')


def run(args: argparse.Namespace, env: Environment) -> int:
    """Print N free ports, one per line (or JSON)."""
    from ..address import parse_range
    from ..ports.free import free_ports

    found = free_ports(args.count, udp=args.udp, port_range=parse_range(args.range) if args.range else None, host=args.host)
    if args.json:
        import json

        env.stdout.write(json.dumps({"ports": found, "proto": "udp" if args.udp else "tcp", "host": args.host}) + "\n")
    else:
        env.stdout.write("".join(f"{port}\n" for port in found))
    return ExitCode.OK

"""`sockscope wait ADDRESS ... [-- COMMAND]`: wait until addresses accept connections, then run a command."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from ..errors import ExitCode, NothingFound, UsageError
from . import seconds
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `wait` to the command parsers."""
    p = commands.add_parser(
        "wait",
        help="wait until HOST:PORT or unix:PATH addresses accept connections, then run a command",
        description="Try every address until all accept a connection, then run COMMAND (if given) and exit with its "
        "status. Exit 1 on timeout, naming the addresses still down.",
        epilog="Examples: 'sockscope wait db:5432 redis:6379 -- ./start.sh', 'sockscope wait unix:/run/app.sock -t 10'.",
    )
    p.add_argument("addresses", nargs="+", metavar="ADDRESS", help="HOST:PORT, :PORT, [::1]:PORT, tcp://..., unix:PATH, seqpacket:PATH")
    p.add_argument("-t", "--timeout", type=seconds, default=30.0, metavar="S", help="give up after S seconds (default 30)")
    p.add_argument("-i", "--interval", type=seconds, default=0.25, metavar="S", help="seconds between tries (default 0.25)")
    p.add_argument("-q", "--quiet", action="store_true", help="say nothing on success")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Wait for the addresses; run the command after `--` when all are up."""
    from ..address import parse_address
    from ..ports.wait import wait_for

    command: list[str] = getattr(args, "command_after", [])
    if not (0 < args.timeout < math.inf and 0 < args.interval < math.inf):  # nan and inf would never end
        raise UsageError("--timeout and --interval take a number of seconds, more than 0")
    addresses = []
    for text in args.addresses:
        address = parse_address(text, default_host="127.0.0.1")
        try:
            (address.host or "").encode("idna")
        except UnicodeError:  # getaddrinfo would fail the same way on every try
            raise UsageError(f"{text!r}: {address.host!r} is not a host name or address") from None
        if address.kind in ("udp", "unix-dgram"):
            raise UsageError(f"{text!r}: datagram sockets accept no connections to wait for; use tcp, unix or seqpacket")
        addresses.append(address)

    def up(address: object, seconds: float) -> None:
        if not args.quiet:
            env.stderr.write(f"{address} is up after {seconds:.2f}s\n")

    result = wait_for(addresses, args.timeout, args.interval, up)
    if result.down:
        down = ", ".join(f"{a} ({why})" for a, why in result.down)
        raise NothingFound(f"still down after {args.timeout:g}s: {down}")
    if not command:
        return ExitCode.OK
    env.stdout.flush()
    env.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        env.error(f"cannot run {command[0]!r}: {exc.strerror}")
        sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
    return ExitCode.OK  # not reached: exec replaced this process

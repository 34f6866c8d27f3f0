"""`sockscope listen ADDRESS`: accept one client (or, with -k, one after another) and bridge it with stdin/stdout."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from ..errors import ExitCode
from .connect import add_bridge_options, bridge_options, default_kind, run_bridge
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `listen` to the command parsers."""
    p = commands.add_parser(
        "listen",
        help="wait for one client on ADDRESS and bridge it with stdin/stdout, like nc -l (-k: one after another)",
        description="Bind ADDRESS (a bare port binds 127.0.0.1; write 0.0.0.0:PORT for every interface), accept one "
        "client and bridge it with standard input and output until it closes. UDP: the first datagram's sender is the "
        "peer. Exit 4 when the address is in use (naming the holder).",
    )
    p.add_argument("address", metavar="ADDRESS", help="PORT, HOST:PORT, [::]:PORT, udp://:PORT, unix:/path, seqpacket:/path")
    add_bridge_options(p)
    p.add_argument("-k", "--keep-open", action="store_true", help="after a client leaves, accept the next one")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Accept and bridge."""
    from ..address import parse_address
    from ..net.client import accept, listen_socket

    options = bridge_options(args)
    address = parse_address(args.address, default_host="127.0.0.1", default_kind=default_kind(args))
    listener = listen_socket(address)
    path = address.path if address.is_unix and not (address.path or "").startswith("@") else None
    try:
        if args.verbose:
            env.stderr.write(f"sockscope: listening on {address}\n")
        while True:
            conn, peer = accept(listener, args.timeout)
            if args.verbose:
                env.stderr.write(f"sockscope: connection from {peer}\n")
            try:
                run_bridge(conn, options, env, args.verbose)
            finally:
                if conn is not listener:
                    conn.close()
            if not args.keep_open or conn is listener:
                return ExitCode.OK
    finally:
        listener.close()
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)

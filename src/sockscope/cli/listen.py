"""`sockscope listen ADDRESS`: accept one client (or, with -k, one after another) and bridge it with stdin/stdout."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from ..errors import ConnectFailed, ExitCode, UsageError
from .connect import add_bridge_options, bridge_options, run_bridge, target_address
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `listen` to the command parsers."""
    p = commands.add_parser(
        "listen",
        help="wait for one client on ADDRESS and bridge it with stdin/stdout, like nc -l (-k: one after another)",
        description="Bind ADDRESS (a bare port binds 127.0.0.1; write 0.0.0.0:PORT for every interface), accept one "
        "client and bridge it with standard input and output: the input is sent even after the client's EOF, and it "
        "ends when both directions are done (as connect does). nc's spellings work: -l PORT, -l -p PORT, HOST PORT, "
        "-U PATH. UDP: the first datagram's sender is the peer. Exit 4 when the address is in use (naming the holder).",
    )
    p.add_argument("address", nargs="?", metavar="ADDRESS", help="PORT, HOST:PORT, HOST PORT, [::]:PORT, udp://:PORT, unix:/path, seqpacket:/path")
    p.add_argument("port", nargs="?", metavar="PORT", help=argparse.SUPPRESS)
    add_bridge_options(p)
    p.add_argument("-k", "--keep-open", action="store_true", help="after a client leaves, accept the next one")
    p.add_argument("-l", dest="listen", action="store_true", help="accepted for nc's habit (listen always listens)")
    p.add_argument("-p", dest="local_port", metavar="PORT", help="the port to listen on (nc -l -p PORT)")


def listen_address(args: argparse.Namespace) -> Any:
    """Give the Address to bind from ADDRESS, `HOST PORT` or -p PORT (nc's spellings)."""
    if args.local_port is not None:
        if args.port is not None or (args.address is not None and not _bare_host(args.address)):
            raise UsageError("give the port once: -p PORT, PORT or HOST:PORT")
        return target_address(args, args.address or "127.0.0.1", args.local_port)
    if args.address is None:
        raise UsageError("give the port to listen on: 'sockscope listen PORT' (or HOST:PORT, -p PORT, unix:PATH)")
    if args.port is not None:
        return target_address(args, args.address, args.port)
    return target_address(args, args.address)


def _bare_host(text: str) -> bool:
    return not text.isdigit() and ":" not in text.replace("::", "") and not text.startswith(("/", "@", "["))


def run(args: argparse.Namespace, env: Environment) -> int:
    """Accept and bridge."""
    from ..net.client import accept, listen_socket

    address = listen_address(args)
    options = bridge_options(args, address.kind)
    listener = listen_socket(address)
    path = address.path if address.is_unix and not (address.path or "").startswith("@") else None
    try:
        if args.verbose:
            env.stderr.write(f"sockscope: listening on {address}\n")
        while True:
            conn, peer = accept(listener, args.timeout)
            if args.verbose:
                from ..net.hub import printable_text

                # a unix peer names itself: its path may hold escape sequences meant for this terminal
                env.stderr.write(f"sockscope: connection from {printable_text(peer)}\n")
            try:
                run_bridge(conn, options, env, args.verbose)
            except ConnectFailed as lost:
                if not args.keep_open or conn is listener:
                    raise
                env.error(lost.message)  # one client's trouble does not end -k
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

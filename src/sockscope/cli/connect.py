"""`sockscope connect TARGET`: a netcat-like client (also the zero-I/O port check, -z)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Literal

from ..errors import ExitCode, UsageError
from .environment import Environment


def add_bridge_options(p: Any) -> None:
    """The options `connect` and `listen` share."""
    p.add_argument("-u", "--udp", action="store_true", help="UDP instead of TCP (each input read is one datagram)")
    p.add_argument("-w", "--timeout", type=float, metavar="S", help="give up connecting after S seconds, and end after S seconds of silence")
    p.add_argument("-q", "--quit-after", type=float, metavar="S", help="quit S seconds after input EOF (default: when the peer closes; UDP: 2)")
    p.add_argument("--no-shutdown", action="store_true", help="on input EOF keep the writing side open (no shutdown(SHUT_WR))")
    p.add_argument("--send-only", action="store_true", help="only send: ignore what arrives, end on input EOF")
    p.add_argument("--recv-only", action="store_true", help="only receive: standard input is not read")
    p.add_argument("--crlf", action="store_true", help="send line ends as CRLF")
    p.add_argument("--hex", action="store_true", help="show both directions as a hex dump ('>' sent, '<' received) instead of raw bytes")
    p.add_argument("-v", "--verbose", action="store_true", help="say on stderr when connected and why it ended")


def add_parser(commands: Any) -> None:
    """Add `connect` to the command parsers."""
    p = commands.add_parser(
        "connect",
        help="connect to TARGET and bridge it with stdin/stdout, like nc; -z checks ports without sending",
        description="Standard input goes to the socket and the socket to standard output, binary-safe. On input EOF "
        "the writing side is shut down and reading goes on until the peer closes (--no-shutdown, -q S change that). "
        "With -z: check that TARGET (and more PORTS) accept connections; exit 0 when all do, 1 otherwise.",
        epilog="Targets: host:port, [::1]:port, tcp://, udp://host:port, unix:/path, unix:@name, unix-dgram:/path, "
        "seqpacket:/path. Examples: 'sockscope connect example.org:443 --tls', 'sockscope connect -z localhost 22 80 8000-8010'. "
        "Exit 1 when the connection is refused or times out.",
    )
    p.add_argument("target", metavar="TARGET", help="where to connect: HOST:PORT, unix:PATH, ... (with -z also HOST)")
    p.add_argument("ports", nargs="*", metavar="PORTS", help="with -z: more ports or ranges (A-B) on TARGET's host")
    add_bridge_options(p)
    p.add_argument("-z", "--zero-io", action="store_true", help="only check whether the ports accept connections; send nothing")
    p.add_argument("--tls", action="store_true", help="speak TLS, verifying the certificate and name")
    p.add_argument("--insecure", action="store_true", help="with --tls: accept any certificate")
    p.add_argument("--ca-file", metavar="PEM", help="with --tls: trust these CA certificates (instead of the system's)")
    p.add_argument("--server-name", metavar="NAME", help="with --tls: the name to send and verify (default: the host)")


def default_kind(args: argparse.Namespace) -> Literal["tcp", "udp"]:
    """Give the kind of a target written without a scheme: udp with -u, else tcp."""
    return "udp" if args.udp else "tcp"


def bridge_options(args: argparse.Namespace) -> Any:
    """Give client.Options from the parsed arguments (UsageError when they contradict)."""
    from ..net.client import Options

    if args.send_only and args.recv_only:
        raise UsageError("--send-only and --recv-only exclude each other")
    for name in ("timeout", "quit_after"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more seconds")
    quit_after = args.quit_after if args.quit_after is not None else (2.0 if args.udp else None)
    return Options(
        timeout=args.timeout,
        quit_after=quit_after,
        shutdown=not args.no_shutdown,
        send_only=args.send_only,
        recv_only=args.recv_only,
        crlf=args.crlf,
        hexdump=args.hex,
    )


def run_bridge(sock: Any, options: Any, env: Environment, verbose: bool) -> str:
    """Bridge stdin/stdout with a connected socket; give why it ended."""
    from ..net.client import HexDump, bridge, write_all

    env.stdout.flush()
    out = sys.stdout.fileno()
    dump = HexDump(lambda data: write_all(out, data)) if options.hexdump else None
    why = bridge(sock, options, 0, out, dump)
    if verbose:
        env.stderr.write(f"sockscope: {why}\n")
    return why


def _zero_io(args: argparse.Namespace, env: Environment) -> int:
    from ..address import parse_address, parse_range
    from ..net.client import probe

    first = parse_address(args.target, default_host="127.0.0.1", default_kind=default_kind(args), port_required=False)
    addresses = [first] if first.port is not None or first.is_unix else []
    for text in args.ports:
        low, high = parse_range(text)
        if first.is_unix:
            raise UsageError("ports make no sense after a unix socket target")
        if high - low >= 65535 or len(addresses) + high - low > 100_000:
            raise UsageError("too many ports for -z: use 'sockscope scan' for large scans")
        addresses += [first._replace(port=port) for port in range(low, high + 1)]
    if not addresses:
        raise UsageError(f"{args.target!r} has no port: write HOST:PORT or HOST PORT...")
    timeout = args.timeout if args.timeout is not None else 2.0
    all_open = True
    for address in addresses:
        answer = probe(address, timeout)
        all_open &= answer.state == "open"
        env.stdout.write(f"{address} {answer.state} ({answer.detail})\n")
        env.stdout.flush()
    return ExitCode.OK if all_open else ExitCode.NOTHING_FOUND


def run(args: argparse.Namespace, env: Environment) -> int:
    """Connect and bridge, or check ports (-z)."""
    from ..address import parse_address
    from ..net.client import client_tls, connect, describe

    if args.zero_io:
        return _zero_io(args, env)
    if args.ports:
        raise UsageError("extra PORTS are only for -z; write one TARGET")
    options = bridge_options(args)
    address = parse_address(args.target, default_host="127.0.0.1", default_kind=default_kind(args))
    if (args.insecure or args.ca_file or args.server_name) and not args.tls:
        raise UsageError("--insecure, --ca-file and --server-name go with --tls")
    if args.tls and address.kind in ("udp", "unix-dgram"):
        raise UsageError("--tls needs a stream socket (tcp or unix)")
    tls = client_tls(args.insecure, args.ca_file) if args.tls else None
    sock = connect(address, args.timeout, tls, args.server_name)
    with sock:
        if args.verbose:
            env.stderr.write(f"sockscope: connected {describe(sock)}\n")
        run_bridge(sock, options, env, args.verbose)
    return ExitCode.OK

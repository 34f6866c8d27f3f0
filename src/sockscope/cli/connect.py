"""`sockscope connect TARGET`: a netcat-like client (also the zero-I/O port check, -z)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Literal

from ..errors import ExitCode, UsageError
from . import seconds
from .environment import Environment


def add_bridge_options(p: Any) -> None:
    """The options `connect` and `listen` share (nc's letters where nc has one)."""
    p.add_argument("-u", "--udp", action="store_true", help="UDP instead of TCP (each input read is one datagram, cut at 65507 bytes)")
    p.add_argument("-U", "--unix", action="store_true", help="the address is a unix socket path (with -u: unix-dgram), as nc -U")
    p.add_argument("-w", "--timeout", type=seconds, metavar="S", help="give up connecting after S seconds, and end after S seconds of silence")
    p.add_argument(
        "-q",
        "--quit-after",
        type=seconds,
        metavar="S",
        help="quit S seconds after the input was sent, even if the peer has not closed (default: wait for it; udp and unix-dgram: 2; -1: wait)",
    )
    p.add_argument("-N", dest="shutdown", action="store_true", help="shut down writing on input EOF (the default; accepted for nc's habit)")
    p.add_argument("--no-shutdown", action="store_true", help="on input EOF keep the writing side open (no shutdown(SHUT_WR))")
    p.add_argument("-n", "--numeric", action="store_true", help="numeric addresses only: never look a host name up")
    p.add_argument("--send-only", action="store_true", help="only send: ignore what arrives, end once the input is delivered")
    p.add_argument("-d", "--recv-only", action="store_true", help="only receive: standard input is not read")
    p.add_argument("-C", "--crlf", action="store_true", help="send line ends as CRLF")
    p.add_argument("--hex", action="store_true", help="show both directions as a hex dump ('>' sent, '<' received) instead of raw bytes")
    p.add_argument("-v", "--verbose", action="store_true", help="say on stderr when connected, and why it ended with the byte counts")


def add_parser(commands: Any) -> None:
    """Add `connect` to the command parsers."""
    p = commands.add_parser(
        "connect",
        help="connect to TARGET and bridge it with stdin/stdout, like nc; -z checks ports without sending",
        description="Standard input goes to the socket and the socket to standard output, binary-safe. The two "
        "directions are independent: on input EOF the writing side is shut down and reading goes on until the peer "
        "closes; when the peer closes first, the input is still sent. It ends when both are done (--no-shutdown, "
        "-q S, -w S, --send-only change that). Input that did not reach the peer is never an exit 0. "
        "With -z: check that TARGET (and more PORTS) accept connections; exit 0 when all do, 1 otherwise.",
        epilog="Targets: host:port, host port, [::1]:port, tcp://, udp://host:port, unix:/path, unix:@name, "
        "unix-dgram:/path, seqpacket:/path, -U /path; ports may be service names (http). Examples: "
        "'sockscope connect example.org 443 --tls', 'sockscope connect -z localhost 22 http 8000-8010'. "
        "Exit 1 when the connection is refused or times out, or when input was not delivered.",
    )
    p.add_argument("target", metavar="TARGET", help="where to connect: HOST:PORT, HOST PORT, unix:PATH, ... (with -z also HOST)")
    p.add_argument("ports", nargs="*", metavar="PORT", help="the port when TARGET is a bare HOST; with -z: more ports or ranges (A-B)")
    add_bridge_options(p)
    p.add_argument("-z", "--zero-io", action="store_true", help="only check whether the ports accept connections; send nothing")
    p.add_argument("-l", dest="listen", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tls", action="store_true", help="speak TLS, verifying the certificate and name")
    p.add_argument("--insecure", action="store_true", help="with --tls: accept any certificate")
    p.add_argument("--ca-file", metavar="PEM", help="with --tls: trust these CA certificates (instead of the system's)")
    p.add_argument("--server-name", metavar="NAME", help="with --tls: the name to send and verify (default: the host)")
    p.add_argument(
        "--trace",
        action="store_true",
        help="narrate each step on stderr: name resolution, socket, connect (with the port the kernel chose), send, recv, shutdown, close; "
        "the data never waits for the trace: lines stderr cannot take at once are dropped, and their count told on the next line it takes",
    )


def default_kind(args: argparse.Namespace) -> Literal["tcp", "udp"]:
    """Give the kind of a target written without a scheme: udp with -u, else tcp."""
    return "udp" if args.udp else "tcp"


def target_address(args: argparse.Namespace, text: str, port_word: str | None = None, port_required: bool = True) -> Any:
    """Give the Address the user means: `HOST:PORT`, `HOST PORT` (nc's two words), `-U PATH`, a service name as port."""
    from ..address import parse_address, port_or_service

    if args.unix:
        if port_word is not None:
            raise UsageError("-U takes one unix socket path, no port")
        return parse_address(f"{'unix-dgram' if args.udp else 'unix'}:{text}")
    kind = default_kind(args)
    if text.count(":") > 1 and not text.startswith("[") and (port_word is not None or not port_required):
        text = f"[{text}]"  # `::1 8080`, nc's spelling of an IPv6 host beside its port
    needs_port = port_required and port_word is None
    address = parse_address(text, default_host="127.0.0.1", default_kind=kind, port_required=needs_port, service_names=True)
    if port_word is not None:
        if address.is_unix or address.port is not None:
            raise UsageError(f"{text!r} already has a port: write HOST:PORT or HOST PORT, not both")
        address = address._replace(port=port_or_service(port_word, address.kind))
    if args.numeric and address.host is not None:
        _numeric_only(address.host)
    return address


def _numeric_only(host: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise UsageError(f"-n: {host!r} is not a numeric address (-n looks no names up)") from None


def bridge_options(args: argparse.Namespace, kind: str) -> Any:
    """Give bridge Options for an address of `kind` from the parsed arguments (UsageError when they contradict)."""
    from ..net.bridge import Options

    if args.send_only and args.recv_only:
        raise UsageError("--send-only and --recv-only exclude each other")
    if args.shutdown and args.no_shutdown:
        raise UsageError("-N (shut down on input EOF) and --no-shutdown exclude each other")
    if args.timeout is not None and args.timeout < 0:
        raise UsageError("--timeout must be 0 or more seconds")
    # a datagram peer never says it has finished: without a limit the bridge would wait forever
    quit_after = args.quit_after if args.quit_after is not None else (2.0 if kind in ("udp", "unix-dgram") else None)
    if quit_after is not None and quit_after < 0:
        quit_after = None  # nc's -q -1: wait for the peer, however long
    return Options(
        timeout=args.timeout,
        quit_after=quit_after,
        shutdown=not args.no_shutdown,
        send_only=args.send_only,
        recv_only=args.recv_only,
        crlf=args.crlf,
        hexdump=args.hex,
    )


PIPE_BUF = 4096  # a write of at most this many bytes to a pipe is whole or not at all


def narrator(env: Environment) -> Any:
    """Give a function that writes one trace line on stderr, never waiting for it.

    The trace gives way to the data: a line that stderr cannot take at once (a pipe nobody
    drains) is dropped rather than waited for, and the count of dropped lines is told with the
    next line stderr takes (lines dropped after the last one are not counted anywhere). Once
    stderr is gone (closed, full disk), the trace goes quiet.
    """
    from .render import escape

    working = [True]
    dropped = [0]
    try:
        fd = env.stderr.fileno()
    except (OSError, ValueError, AttributeError):
        fd = -1

    def write(line: str) -> bool:
        if fd < 0:
            env.stderr.write(line)
            env.stderr.flush()
            return True
        import select

        env.stderr.flush()  # what the text layer holds goes first, in order
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(mask & select.POLLOUT for _, mask in poller.poll(0)):
            return False
        raw = line.encode("utf-8", "backslashreplace")
        if len(raw) > PIPE_BUF:
            raw = raw[: PIPE_BUF - 7] + b" [...]\n"
        os.write(fd, raw)
        return True

    def narrate(text: str) -> None:
        if not working[0]:
            return
        try:
            if dropped[0] and write(f"  ({dropped[0]} trace lines were dropped: stderr was not being read)\n"):
                dropped[0] = 0
            if dropped[0] or not write(f"  {escape(text)}\n"):
                dropped[0] += 1
        except (OSError, ValueError):
            working[0] = False  # a trace nobody can read must not end the data's transfer
            from . import _silence_stdout

            _silence_stdout(2)  # nor fail the exit, when Python flushes what stderr still buffers

    return narrate


def run_bridge(sock: Any, options: Any, env: Environment, verbose: bool, narrate: Any = None) -> str:
    """Bridge stdin/stdout with a connected socket; give why it ended (ConnectFailed when input was lost)."""
    from ..net.bridge import bridge
    from ..net.stdio import HexDump, write_all

    env.stdout.flush()
    out = sys.stdout.fileno()
    dump = HexDump(lambda data: write_all(out, data)) if options.hexdump else None
    outcome = bridge(sock, options, 0, out, dump, narrate)
    if verbose:
        env.stderr.write(f"sockscope: {outcome.why}; {outcome.sent} bytes sent, {outcome.received} received\n")
    return str(outcome.why)


def _zero_io(args: argparse.Namespace, env: Environment) -> int:
    from ..address import parse_range, port_or_service
    from ..net.client import probe

    first = target_address(args, args.target, port_required=False)
    addresses = [first] if first.port is not None or first.is_unix else []
    for text in args.ports:
        if first.is_unix:
            raise UsageError("ports make no sense after a unix socket target")
        if text[:1].isdigit() and "-" in text:
            low, high = parse_range(text)
        else:
            low = high = port_or_service(text, first.kind)
        if len(addresses) + high - low >= 100_000:
            raise UsageError("too many ports for -z: use 'sockscope scan' for large scans")
        addresses += [first._replace(port=port) for port in range(low, high + 1)]
    if not addresses:
        raise UsageError(f"{args.target!r} has no port: write HOST:PORT or HOST PORT...")
    timeout = args.timeout if args.timeout is not None else 2.0
    all_open = True
    narrate = narrator(env) if args.trace else None
    for address in addresses:
        answer = probe(address, timeout, narrate)
        all_open &= answer.state == "open"
        env.stdout.write(f"{address} {answer.state} ({answer.detail})\n")
        env.stdout.flush()
    return ExitCode.OK if all_open else ExitCode.NOTHING_FOUND


def run(args: argparse.Namespace, env: Environment) -> int:
    """Connect and bridge, or check ports (-z)."""
    from ..net.client import client_tls, connect, describe

    if args.listen:
        raise UsageError("connect does not listen: use 'sockscope listen PORT' (nc -l's twin)")
    if args.zero_io:
        return _zero_io(args, env)
    if len(args.ports) > 1:
        raise UsageError("several ports are only for -z; write HOST PORT or HOST:PORT")
    address = target_address(args, args.target, args.ports[0] if args.ports else None)
    options = bridge_options(args, address.kind)
    if (args.insecure or args.ca_file or args.server_name) and not args.tls:
        raise UsageError("--insecure, --ca-file and --server-name go with --tls")
    if args.tls and address.kind in ("udp", "unix-dgram"):
        raise UsageError("--tls needs a stream socket (tcp or unix)")
    tls = client_tls(args.insecure, args.ca_file) if args.tls else None
    narrate = narrator(env) if args.trace else None
    sock = connect(address, args.timeout, tls, args.server_name, narrate)
    fd = sock.fileno()
    try:
        if args.verbose:
            env.stderr.write(f"sockscope: connected {describe(sock)}\n")
        run_bridge(sock, options, env, args.verbose, narrate)
    finally:
        sock.close()
        if narrate:
            narrate(f"close(fd {fd}) = 0")
    return ExitCode.OK

"""`sockscope ls`: the socket inventory, with the flags and filters of `ss`."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ExitCode, UsageError
from ..model import ALL_STATES_MASK, Family, NetId, State
from .environment import Environment

# ss's default: every state but listening, closed, time-wait and syn-recv.
DEFAULT_STATES = frozenset(State) - {State.UNKNOWN, State.LISTEN, State.UNCONN, State.TIME_WAIT, State.SYN_RECV}
LISTENING_STATES = frozenset({State.LISTEN, State.UNCONN})

KIND_WORDS: dict[str, frozenset[NetId]] = {
    "all": frozenset(NetId),
    "inet": frozenset({NetId.TCP, NetId.UDP, NetId.RAW}),
    "tcp": frozenset({NetId.TCP}),
    "udp": frozenset({NetId.UDP}),
    "raw": frozenset({NetId.RAW}),
    "unix": frozenset({NetId.UNIX_STREAM, NetId.UNIX_DGRAM, NetId.UNIX_SEQPACKET}),
    "unix_stream": frozenset({NetId.UNIX_STREAM}),
    "unix_dgram": frozenset({NetId.UNIX_DGRAM}),
    "unix_seqpacket": frozenset({NetId.UNIX_SEQPACKET}),
    "netlink": frozenset({NetId.NETLINK}),
    "packet": frozenset({NetId.PACKET_RAW, NetId.PACKET_DGRAM}),
    "packet_raw": frozenset({NetId.PACKET_RAW}),
    "packet_dgram": frozenset({NetId.PACKET_DGRAM}),
    "vsock": frozenset({NetId.VSOCK_STREAM, NetId.VSOCK_DGRAM, NetId.VSOCK_SEQPACKET}),
    "mptcp": frozenset({NetId.MPTCP}),
}


def add_parser(commands: Any) -> None:
    """Add `ls` to the command parsers."""
    p = commands.add_parser(
        "ls",
        help="list sockets (like ss): -t -u -w -x -A, -l -a, -4 -6, -n -p -e, filters, --json",
        description="List sockets, like ss. Without -l or -a: connected sockets only, as ss shows.",
        epilog="Filter examples: 'state listening', 'dport = :443', 'src 10.0.0.0/8', ':8080', "
        "'( sport = :ssh or dport = :ssh )', 'pid=123', 'proc=nginx', 'user=www-data'.",
    )
    kinds = p.add_argument_group("socket kinds (default: tcp, udp, raw and unix)")
    kinds.add_argument("-t", "--tcp", action="store_true", help="TCP sockets")
    kinds.add_argument("-u", "--udp", action="store_true", help="UDP sockets")
    kinds.add_argument("-w", "--raw", action="store_true", help="raw sockets")
    kinds.add_argument("-x", "--unix", action="store_true", help="unix domain sockets")
    kinds.add_argument("-M", "--mptcp", action="store_true", help="MPTCP sockets")
    kinds.add_argument("-0", "--packet", action="store_true", help="packet sockets")
    kinds.add_argument("-A", "--query", metavar="KINDS", help=f"comma-separated kinds: {','.join(KIND_WORDS)}")
    states = p.add_argument_group("states")
    states.add_argument("-l", "--listening", action="store_true", help="listening (and unconnected) sockets only")
    states.add_argument("-a", "--all", action="store_true", help="sockets in every state")
    p.add_argument("-4", "--ipv4", action="store_true", help="IPv4 sockets only")
    p.add_argument("-6", "--ipv6", action="store_true", help="IPv6 sockets only")
    p.add_argument("-n", "--numeric", action="store_true", help="port numbers, not service names")
    p.add_argument("-p", "--processes", action="store_true", help="show the processes that hold each socket")
    p.add_argument("-e", "--extended", action="store_true", help="show uid and inode")
    p.add_argument("-H", "--no-header", action="store_true", help="no header line")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="a JSON array of sockets")
    output.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    output.add_argument("--csv", action="store_true", help="CSV with a header")
    p.add_argument(
        "--source", choices=("auto", "netlink", "proc"), default="auto", help="netlink sock_diag or /proc/net (default: netlink, /proc where missing)"
    )
    p.add_argument("--netns", metavar="NAME|PID|all", help="list the sockets of another network namespace (or all)")
    p.add_argument("filter", nargs="*", metavar="FILTER", help="ss-style filter words")


def selected_kinds(args: argparse.Namespace) -> frozenset[NetId]:
    """Give the socket kinds the flags ask for (ss's default set when none is given)."""
    kinds: set[NetId] = set()
    if args.tcp:
        kinds |= KIND_WORDS["tcp"]
    if args.udp:
        kinds |= KIND_WORDS["udp"]
    if args.raw:
        kinds |= KIND_WORDS["raw"]
    if args.unix:
        kinds |= KIND_WORDS["unix"]
    if args.mptcp:
        kinds |= KIND_WORDS["mptcp"]
    if args.packet:
        kinds |= KIND_WORDS["packet"]
    if args.query:
        for word in args.query.split(","):
            found = KIND_WORDS.get(word.strip().lower())
            if found is None:
                raise UsageError(f"-A: unknown socket kind {word!r}; one of {', '.join(KIND_WORDS)}")
            kinds |= found
    return frozenset(kinds) or KIND_WORDS["inet"] | KIND_WORDS["unix"]


def selected_families(args: argparse.Namespace) -> frozenset[Family]:
    """Give the families -4/-6 allow (both allow inet and inet6; neither allows every family)."""
    if args.ipv4 or args.ipv6:
        return frozenset(({Family.INET} if args.ipv4 else set()) | ({Family.INET6} if args.ipv6 else set()))
    return frozenset(Family)


def run(args: argparse.Namespace, env: Environment) -> int:
    """List sockets as asked; exit 0."""
    from .. import services
    from ..inventory import Query, state_mask, take

    kinds = selected_kinds(args)
    tcp_names = services.by_port("tcp")
    udp_names = services.by_port("udp")
    parsed = None
    if args.filter:
        from ..inventory.filters import compile_filter

        by_name = {name: port for port, name in sorted(tcp_names.items(), reverse=True)}  # lowest port wins
        parsed = compile_filter(args.filter, by_name.get)
    if parsed is not None and parsed.states is not None:
        states = state_mask(parsed.states)
    elif args.all:
        states = ALL_STATES_MASK
    elif args.listening:
        states = state_mask(LISTENING_STATES)
    else:
        states = state_mask(DEFAULT_STATES)
    needs_owners = args.processes or bool(parsed and parsed.needs_owners)
    query = Query(
        netids=kinds,
        states=states,
        families=selected_families(args),
        owners=needs_owners,
        source=args.source,
        netns=args.netns,
        where=parsed.predicate if parsed else None,
    )
    inventory = take(query)
    for note in inventory.notes:
        env.note(note)
    write(args, env, inventory.sockets, kinds, tcp_names, udp_names)
    return ExitCode.OK


def write(args: argparse.Namespace, env: Environment, sockets: list[Any], kinds: frozenset[NetId], tcp: dict[int, str], udp: dict[int, str]) -> None:
    """Render sockets in the format the flags ask for."""
    from . import render

    if args.json or args.jsonl or args.csv:
        service = render.service_of(tcp, udp)
        if args.json:
            render.json_array(env.stdout, sockets, service)
        elif args.jsonl:
            render.json_lines(env.stdout, sockets, service)
        else:
            render.csv_rows(env.stdout, sockets, service)
        return
    texts = render.EndpointText(None if args.numeric else tcp, None if args.numeric else udp)
    render.table(
        env.stdout,
        sockets,
        texts,
        netid=len(kinds) > 1 or bool(args.query),
        extended=args.extended,
        processes=args.processes,
        netns=args.netns is not None,
        header=not args.no_header,
    )

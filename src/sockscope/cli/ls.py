"""`sockscope ls`: the socket inventory, with the flags and filters of `ss`."""

from __future__ import annotations

from ..errors import ExitCode, UsageError
from ..model import ALL_STATES_MASK, Family, NetId, State
from . import leave_behind
from .environment import Environment

TYPE_CHECKING = False  # importing `typing` costs a tenth of `sockscope -tlnp` on a small host
if TYPE_CHECKING:
    import argparse
    from typing import Any

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


# ss's flags that sockscope does not have yet: (flags, what they show in ss). Each is accepted
# by the parser (so `-tlnpi` is one clear line, not "unrecognized arguments") and refused in run.
NOT_YET: tuple[tuple[tuple[str, ...], str], ...] = (
    (("-r", "--resolve"), "host names instead of addresses"),
    (("-T", "--threads"), "the threads using each socket"),
    (("--tipcinfo",), "TIPC internals"),
    (("--tos",), "TOS and priority"),
    (("-b", "--bpf"), "socket BPF filters"),
    (("-E", "--events"), "sockets as they close"),
    (("-Z", "--context"), "SELinux contexts of processes"),
    (("-z", "--contexts"), "SELinux contexts of processes and sockets"),
    (("-S", "--sctp"), "SCTP sockets"),
    (("-d", "--dccp"), "DCCP sockets"),
    (("--tipc",), "TIPC sockets"),
    (("--xdp",), "XDP sockets"),
    (("--inet-sockopt",), "inet socket options"),
    (("-D", "--diag"), "a raw dump of TCP sockets to a file"),
)
# ss -f FAMILY: (socket kinds, address families) it narrows to; None leaves that side open.
FAMILY_WORDS: dict[str, tuple[frozenset[NetId] | None, frozenset[Family] | None]] = {
    "inet": (None, frozenset({Family.INET})),
    "inet6": (None, frozenset({Family.INET6})),
    "unix": (KIND_WORDS["unix"], None),
    "link": (KIND_WORDS["packet"], None),
    "netlink": (KIND_WORDS["netlink"], None),
    "vsock": (KIND_WORDS["vsock"], None),
}


def add_parser(commands: Any) -> None:
    """Add `ls` to the command parsers."""
    import argparse

    p = commands.add_parser(
        "ls",
        help="list sockets (like ss): -t -u -w -x -A, -l -a, -4 -6, -n -p -e, filters, --json",
        description="List sockets, like ss. Without -l or -a: connected sockets only, as ss shows.",
        epilog="Filter examples: 'state listening', 'dport = :443', 'src 10.0.0.0/8', ':8080', "
        "'( sport = :ssh or dport = :ssh )', 'pid=123', 'proc=nginx', 'user=www-data'. "
        "lsof's '-p PID' alone lists the sockets of that process (the filter pid=PID, every state).",
    )
    kinds = p.add_argument_group("socket kinds (default: tcp, udp, raw and unix)")
    kinds.add_argument("-t", "--tcp", action="store_true", help="TCP sockets")
    kinds.add_argument("-u", "--udp", action="store_true", help="UDP sockets")
    kinds.add_argument("-w", "--raw", action="store_true", help="raw sockets")
    kinds.add_argument("-x", "--unix", action="store_true", help="unix domain sockets")
    kinds.add_argument("-M", "--mptcp", action="store_true", help="MPTCP sockets")
    kinds.add_argument("-0", "--packet", action="store_true", help="packet sockets")
    kinds.add_argument("--vsock", action="store_true", help="vsock sockets")
    kinds.add_argument("-A", "--query", "--socket", metavar="KINDS", help=f"comma-separated kinds: {','.join(KIND_WORDS)}")
    kinds.add_argument("-f", "--family", action="append", metavar="FAMILY", help=f"sockets of a family, as in ss: {', '.join(FAMILY_WORDS)}")
    states = p.add_argument_group("states")
    states.add_argument("-l", "--listening", action="store_true", help="listening (and unconnected) sockets only")
    states.add_argument("-a", "--all", action="store_true", help="sockets in every state")
    p.add_argument("-4", "--ipv4", action="store_true", help="IPv4 sockets only")
    p.add_argument("-6", "--ipv6", action="store_true", help="IPv6 sockets only")
    p.add_argument("-n", "--numeric", action="store_true", help="port numbers, not service names")
    p.add_argument("-p", "--processes", action="store_true", help="show the processes that hold each socket")
    p.add_argument("-e", "--extended", action="store_true", help="show uid, inode and socket cookie (ss's sk:)")
    inside = p.add_argument_group("internals (from netlink sock_diag; each on a second line, as ss draws them)")
    inside.add_argument("-i", "--info", action="store_true", help="TCP internals: congestion control, rtt, rto, cwnd, bytes, rates, ...")
    inside.add_argument("-m", "--memory", action="store_true", help="socket memory (skmem)")
    inside.add_argument("-o", "--options", action="store_true", help="timers: on, keepalive, timewait, persist")
    inside.add_argument("--cgroup", action="store_true", help="the cgroup (v2) of each socket, and its container when one is known")
    p.add_argument("-H", "--no-header", action="store_true", help="no header line")
    p.add_argument("-O", "--oneline", action="store_true", help="one line a socket (always so; accepted for ss's sake)")
    p.add_argument("-s", "--summary", action="store_true", help="counts by kind and TCP state instead (as ss -s; 'sockscope summary')")
    p.add_argument("-K", "--kill", action="store_true", help="close the TCP/UDP sockets the filter matches, as ss -K ('sockscope close')")
    p.add_argument("-y", "--yes", action="store_true", help="with -K: really close them")
    p.add_argument("-F", "--filter-file", metavar="FILE", help="read the filter from FILE ('-': standard input), as ss does")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="a JSON array of sockets")
    output.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    output.add_argument("--csv", action="store_true", help="CSV with a header")
    p.add_argument(
        "--source", choices=("auto", "netlink", "proc"), default="auto", help="netlink sock_diag or /proc/net (default: netlink, /proc where missing)"
    )
    p.add_argument("-N", "--netns", "--net", metavar="NAME|PID|all", help="list the sockets of another network namespace (or all)")
    # no default (SUPPRESS): the quick parser and argparse give the same options when it is not asked for
    p.add_argument("--explain", action="store_true", default=argparse.SUPPRESS, help="one short sentence under each socket: what it is, who holds it")
    p.add_argument("filter", nargs="*", metavar="FILTER", help="ss-style filter words")
    for flags, _what in NOT_YET:
        p.add_argument(*flags, action="store_true", dest=not_yet_dest(flags), help=argparse.SUPPRESS)


def refuse_missing(args: argparse.Namespace) -> None:
    """Raise UsageError naming the first flag of ss that sockscope does not have yet, if one was given."""
    for flags, what in NOT_YET:
        if getattr(args, not_yet_dest(flags), False):
            shows, _sep, hint = what.partition("; ")
            raise UsageError(f"{'/'.join(flags)} (in ss: {shows}) is not in sockscope yet" + (f"; {hint}" if hint else ""))


# The flags of the common invocations (`-tlnp`, `-tan --json`), parsed without argparse: building
# the parser costs more than listing the sockets of a small host. Anything else goes to argparse.
_QUICK_SHORT = {
    "t": "tcp", "u": "udp", "w": "raw", "x": "unix", "M": "mptcp", "0": "packet", "l": "listening", "a": "all",
    "4": "ipv4", "6": "ipv6", "n": "numeric", "p": "processes", "e": "extended", "H": "no_header", "O": "oneline",
    "i": "info", "m": "memory", "o": "options",
}  # fmt: skip
_QUICK_LONG = {
    "--json": "json", "--jsonl": "jsonl", "--csv": "csv", "--numeric": "numeric", "--processes": "processes",
    "--info": "info", "--memory": "memory", "--options": "options", "--cgroup": "cgroup",
}  # fmt: skip
_DEFAULTS: dict[str, object] = {
    "command": "ls", "tcp": False, "udp": False, "raw": False, "unix": False, "mptcp": False, "packet": False,
    "vsock": False, "query": None, "family": None, "listening": False, "all": False, "ipv4": False, "ipv6": False,
    "numeric": False, "processes": False, "extended": False, "no_header": False, "oneline": False, "summary": False,
    "kill": False, "yes": False, "filter_file": None, "json": False, "jsonl": False, "csv": False, "source": "auto",
    "netns": None, "filter": [], "info": False, "memory": False, "options": False, "cgroup": False,
}  # fmt: skip


def not_yet_dest(flags: tuple[str, ...]) -> str:
    """Give the attribute name under which the parser records a flag of NOT_YET."""
    return "not_yet_" + flags[-1].lstrip("-").replace("-", "_")


def quick_options(words: list[str]) -> argparse.Namespace | None:
    """Give what argparse would give for `ls WORDS` when they are common flags and filter words; else None."""
    values = dict(_DEFAULTS, filter=[])
    values.update((not_yet_dest(flags), False) for flags, _what in NOT_YET)
    filters: list[str] = []
    after_filter = False
    for word in words:
        if word[:1] != "-" or word == "-":
            if after_filter:
                return None  # a second run of filter words: argparse refuses it, and says why
            filters.append(word)
            continue
        after_filter = bool(filters)
        if word[:2] == "--":
            if word not in _QUICK_LONG:
                return None
            values[_QUICK_LONG[word]] = True
            continue
        for char in word[1:]:
            if char not in _QUICK_SHORT:
                return None
            values[_QUICK_SHORT[char]] = True
    if values["json"] + values["jsonl"] + values["csv"] > 1:  # type: ignore[operator]
        return None
    values["filter"] = filters
    from types import SimpleNamespace

    options: argparse.Namespace = SimpleNamespace(**values)  # type: ignore[assignment]  # read the same way
    return options


def lsof_habits(words: list[str]) -> tuple[list[str], str | None]:
    """Give the `ls` arguments with lsof's `-p PID[,PID...]` read as the filter `pid=PID`, and a note saying so.

    ss's -p takes no value, so `-p 1234` would otherwise filter on an address "1234" and show
    nothing. lsof's `-i :8080` raises UsageError naming the `who` command that answers it.
    """
    out: list[str] = []
    note = None
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if word == "-i":
            _lsof_inet(f"-i {following}", following)
        elif word.startswith("-i") and ":" in word:
            _lsof_inet(word, word[2:])
        pids = word.split(",")
        if out and out[-1] in ("-p", "--processes") and all(pid.isdigit() for pid in pids) and note is None:
            tests = [f"pid={int(pid)}" for pid in pids]
            which = f"pid {int(pids[0])}" if len(pids) == 1 else f"pids {', '.join(str(int(pid)) for pid in pids)}"
            note = f"'{out[-1]} {word}' read as lsof's: the sockets of {which} (filter: {' or '.join(tests)})"
            out += tests if len(tests) == 1 else ["(", " or ".join(tests), ")"]
            continue
        out.append(word)
    if note is not None and not _states_chosen(out):
        out.append("-a")  # lsof shows every socket of the process, listening ones too
    return out, note


def _lsof_inet(given: str, spec: str) -> None:
    """Raise UsageError pointing to `who` when `spec` is lsof's -i address ([46][tcp|udp][@host][:port])."""
    import re

    found = re.fullmatch(r"([46]?)(tcp|udp)?(@[^:]*)?(?::(\d+))?", spec, re.IGNORECASE)
    if found is None or not (found[2] or found[4]):
        return  # not lsof's -i: ss's -i, which run() refuses with its own line
    port, proto = found[4], (found[2] or "").lower()
    suggestion = f"sockscope who {port}" + ("/udp" if proto == "udp" else "") if port else f"sockscope ls -ap{'u' if proto == 'udp' else 't'}"
    raise UsageError(f"'{given}' is lsof's way to ask; here it is '{suggestion}' (-i alone is ss's --info: TCP internals)")


def _states_chosen(words: list[str]) -> bool:
    """Tell whether the words pick states themselves (-l, -a in a bundle, a `state` filter)."""
    for word in words:
        if word in ("--listening", "--all", "state", "exclude"):
            return True
        if word[:1] == "-" and word[1:2] != "-" and ("l" in word or "a" in word):
            return True
    return False


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
    if args.vsock:
        kinds |= KIND_WORDS["vsock"]
    if args.query:
        for word in args.query.split(","):
            found = KIND_WORDS.get(word.strip().lower())
            if found is None:
                raise UsageError(f"-A: unknown socket kind {word!r}; one of {', '.join(KIND_WORDS)}")
            kinds |= found
    for word in args.family or ():
        kinds |= _family(word)[0] or set()  # -f inet narrows the families, not the kinds
    return frozenset(kinds) or KIND_WORDS["inet"] | KIND_WORDS["unix"]


def _family(word: str) -> tuple[frozenset[NetId] | None, frozenset[Family] | None]:
    found = FAMILY_WORDS.get(word.lower())
    if found is None:
        raise UsageError(f"-f: unknown family {word!r}; one of {', '.join(FAMILY_WORDS)}")
    return found


def filter_file_words(path: str | None) -> list[str]:
    """Give the words of a filter file (ss -F; `-` is standard input), or none without one."""
    if path is None:
        return []
    import sys

    try:
        if path == "-":
            return sys.stdin.read().split()
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read(1 << 20).split()
    except OSError as error:
        raise UsageError(f"-F {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError("-F -: standard input is not text") from None


def selected_families(args: argparse.Namespace) -> frozenset[Family]:
    """Give the families -4/-6 and -f allow (both allow inet and inet6; none allows every family)."""
    families: set[Family] = set()
    for word in args.family or ():
        named = _family(word)[1]
        families |= named or set()
    if args.ipv4:
        families.add(Family.INET)
    if args.ipv6:
        families.add(Family.INET6)
    if families and any(_family(word)[1] is None for word in args.family or ()):
        families |= set(Family) - {Family.INET, Family.INET6}  # -f unix -4: unix sockets and IPv4 ones
    return frozenset(families) or frozenset(Family)


def run(args: argparse.Namespace, env: Environment) -> int:
    """List sockets as asked (or count them, -s; or close them, -K); exit 0."""
    refuse_missing(args)
    words = list(args.filter) + filter_file_words(args.filter_file)
    if args.summary:
        from . import summary

        return summary.run(summary.options(json=args.json, netns=args.netns), env)
    kinds = selected_kinds(args)
    if args.kill:
        from . import close

        netids = kinds & close.CLOSABLE
        if not netids:
            raise UsageError("-K closes TCP and UDP sockets only (add -t or -u)")
        return close.close_matching(env, words, netids, listening=args.listening or args.all, yes=args.yes, dry_run=False)
    from ..inventory import Query, state_mask, take

    tcp_names: dict[int, str] = {}
    udp_names: dict[int, str] = {}
    if words or not args.numeric or args.json or args.jsonl or args.csv:  # else no name is shown or read
        from .. import services

        tcp_names, udp_names = services.by_port("tcp"), services.by_port("udp")
    parsed = None
    if words:
        from ..inventory.filters import compile_filter

        by_name = {name: port for port, name in sorted(tcp_names.items(), reverse=True)}  # lowest port wins
        parsed = compile_filter(words, by_name.get)
    if parsed is not None and parsed.states is not None:
        states = state_mask(parsed.states)
    elif args.all:
        states = ALL_STATES_MASK
    elif args.listening:
        states = state_mask(LISTENING_STATES)
    else:
        states = state_mask(DEFAULT_STATES)
    needs_owners = args.processes or bool(parsed and parsed.needs_owners)
    internals = asked_internals(args)
    query = Query(
        netids=kinds,
        states=states,
        families=selected_families(args),
        owners=needs_owners,
        source=args.source,
        netns=args.netns,
        where=parsed.predicate if parsed else None,
        internals=internals,
    )
    inventory = take(query)
    leave_behind(inventory)
    for note in inventory.notes:
        env.note(note)
    write(args, env, inventory.sockets, kinds, tcp_names, udp_names)
    return ExitCode.OK


def asked_internals(args: argparse.Namespace) -> frozenset[str]:
    """Give the groups of internals the flags ask for (-i info, -m memory, -o timers, --cgroup).

    Raises UsageError with --source proc: /proc/net has none of them (sock_diag gives them).
    """
    flags = (("info", "-i"), ("memory", "-m"), ("timers", "-o"), ("cgroup", "--cgroup"))
    asked = [(group, flag) for (group, flag), given in zip(flags, (args.info, args.memory, args.options, args.cgroup), strict=True) if given]
    if asked and args.source == "proc":
        raise UsageError(f"{'/'.join(flag for _group, flag in asked)}: internals come from netlink sock_diag, not /proc/net; drop --source proc")
    return frozenset(group for group, _flag in asked)


def write(args: argparse.Namespace, env: Environment, sockets: list[Any], kinds: frozenset[NetId], tcp: dict[int, str], udp: dict[int, str]) -> None:
    """Render sockets in the format the flags ask for."""
    from . import render

    if getattr(args, "explain", False):  # the quick parser leaves it out: only argparse sets it
        from .explain import ls_rows

        ls_rows(args, env, sockets, kinds, tcp, udp)
        return
    if args.json or args.jsonl or args.csv:
        service = render.service_of(tcp, udp)
        internals = asked_internals(args)
        if args.json:
            render.json_array(env.stdout, sockets, service, internals, args.extended)
        elif args.jsonl:
            render.json_lines(env.stdout, sockets, service, internals, args.extended)
        else:
            render.csv_rows(env.stdout, sockets, service, internals, args.extended)
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
        internals=asked_internals(args),
        numeric=args.numeric,
    )

"""`sockscope events [FILTER]`: every TCP and UDP connection as it opens and closes, with its process."""

from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING, Any

from ..errors import ExitCode, UsageError
from ..model import Endpoint, Family, NetId
from . import seconds
from .environment import Environment

if TYPE_CHECKING:
    from ..live.event import Event

_TITLES = ("TIME", "EVENT", "PID", "PROCESS", "USER", "DIR", "NETID", "LOCAL", "PEER", "TX", "RX", "DURATION", "NOTE")
_LINE = "{:<12} {:<5} {:>7} {:<15} {:<10} {:<6} {:<5} {:<27} {:<27} {:>9} {:>9} {:>9} {}\n"


def add_parser(commands: Any) -> None:
    """Add `events` to the command parsers."""
    p = commands.add_parser(
        "events",
        help="every TCP/UDP connection as it opens and closes, with its process and bytes (like tcplife)",
        description="Log connections as they open (seen in dumps every --interval) and close (told by the kernel, with "
        "the bytes each way), with the process behind each. Runs until Ctrl-C (exit 130), --count or --duration.",
        epilog="Filters as for 'ls': ':8080', 'dport = :443', 'src 127.0.0.1', 'proc=curl', 'user=www-data'. "
        "PID ending in '?' is a guess (the socket was never seen open); NOTE says why a process is unknown. As root, a TCP "
        "connection too short for any dump is named after the process that connect()ed it, as the kernel saw it (eBPF).",
    )
    p.add_argument("-t", "--tcp", action="store_true", help="TCP only")
    p.add_argument("-u", "--udp", action="store_true", help="UDP only")
    p.add_argument("-4", "--ipv4", action="store_true", help="IPv4 only")
    p.add_argument("-6", "--ipv6", action="store_true", help="IPv6 only")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per event and line (as --jsonl)")
    output.add_argument("--jsonl", action="store_true", help="one JSON object per event and line, flushed at once")
    p.add_argument("-i", "--interval", type=seconds, default=1.0, metavar="S", help="seconds between dumps that find new connections (default 1)")
    p.add_argument("-c", "--count", type=_count, metavar="N", help="stop after N events")
    p.add_argument("-d", "--duration", type=seconds, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--no-bpf",
        action="store_true",
        help="do not ask the kernel (eBPF, root) which process connected each TCP socket: connections closed between dumps may go unnamed",
    )
    p.add_argument("filter", nargs="*", metavar="FILTER", help="ss-style filter words, as for 'ls'")


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of events (1 or more)")
    return int(text)


def run(args: argparse.Namespace, env: Environment) -> int:
    """Watch and write events until stopped; exit 0 (130 on Ctrl-C)."""
    if not 0.01 <= args.interval < math.inf:
        raise UsageError("--interval takes a number of seconds, at least 0.01")
    if args.duration is not None and not 0 <= args.duration < math.inf:
        raise UsageError("--duration takes a number of seconds, 0 or more")
    netids = frozenset({NetId.TCP} if args.tcp else set()) | frozenset({NetId.UDP} if args.udp else set())
    families = frozenset({Family.INET} if args.ipv4 else set()) | frozenset({Family.INET6} if args.ipv6 else set())
    where = None
    if args.filter:
        from .. import services
        from ..inventory.filters import compile_filter

        by_name = {name: port for port, name in sorted(services.by_port("tcp").items(), reverse=True)}
        where = compile_filter(args.filter, by_name.get).predicate
    from ..live.events import Watcher

    watcher = Watcher(
        netids or frozenset({NetId.TCP, NetId.UDP}), families or frozenset({Family.INET, Family.INET6}), args.interval, where, use_bpf=not args.no_bpf
    )
    until = None if args.duration is None else time.monotonic() + args.duration
    as_json = args.json or args.jsonl
    out = env.stdout
    shown = 0
    kinds = " and ".join(sorted(n.value.upper() for n in watcher.netids))
    env.note(f"watching {kinds} sockets: opens every {args.interval:g}s, closes as they happen ({watcher.subscription.buffer_bytes} bytes of buffer)")
    if NetId.TCP in watcher.netids and watcher.connectors is None and not args.no_bpf:
        env.note(
            f"TCP connections that close before a dump sees them may go unnamed: the kernel cannot be asked who made them "
            f"({watcher.bpf_unavailable}); their process is guessed from earlier connections, or not given"
        )
    env.stderr.flush()
    try:
        if not as_json:
            out.write(_LINE.format(*_TITLES))
            out.flush()
        for event in watcher.events(until):
            out.write(event_json(event) + "\n" if as_json else event_line(event))
            out.flush()
            if event.kind != "lost":
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    except KeyboardInterrupt:
        _summary(env, watcher)
        raise
    finally:
        watcher.close()
    _summary(env, watcher)
    return ExitCode.OK


def _summary(env: Environment, watcher: Any) -> None:
    lost = f", {watcher.lost} close messages lost (the kernel's buffer overflowed)" if watcher.lost else ", none lost"
    env.note(f"{watcher.opened} opened, {watcher.closed} closed{lost}")


def _clock(stamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1000):03d}"


def _end(end: object) -> str:
    if not isinstance(end, Endpoint):
        return "?"
    return f"[{end.address}]:{end.port}" if ":" in end.address else f"{end.address}:{end.port}"


def _duration(event: Event) -> str:
    if event.duration is None:
        return ""
    mark = {"at least": ">=", "at most": "<"}.get(event.duration_bound or "", "")
    value = event.duration
    return f"{mark}{value:.3f}s" if value < 10 else f"{mark}{value:.0f}s"


def event_line(event: Event) -> str:
    """Give one table line for an event."""
    from .render import escape

    if event.kind == "lost":
        return _LINE.format(_clock(event.time), "LOST", "", "", "", "", "", "", "", "", "", "", f"{event.lost} close messages dropped by the kernel")
    sock = event.socket
    assert sock is not None
    process = event.process
    pid = "-" if process is None else f"{process.pid}?" if event.process_how == "guessed" else str(process.pid)
    note = event.reason
    if process is None and event.process_how != event.reason:
        note += f"; process unknown: {event.process_how}"
    if event.kind == "close" and not event.rx_exact:
        note += "; RX may count the peer's FIN"
    return _LINE.format(
        _clock(event.time),
        event.kind,
        pid,
        escape(process.name) if process else "?",
        escape(process.user) if process else "?",
        event.direction,
        sock.netid.value,
        _end(sock.local),
        _end(sock.peer),
        "" if event.tx_bytes is None else event.tx_bytes,
        "" if event.rx_bytes is None else event.rx_bytes,
        _duration(event),
        note,
    )


def event_dict(event: Event) -> dict[str, Any]:
    """Give the JSON object of an event (the contract in ARCHITECTURE.md)."""
    from .render import endpoint_json, escape_undecodable

    if event.kind == "lost":
        return {"time": round(event.time, 6), "kind": "lost", "count": event.lost, "reason": event.reason}
    sock = event.socket
    assert sock is not None
    process = event.process
    return {
        "time": round(event.time, 6),
        "kind": event.kind,
        "direction": event.direction,
        "netid": sock.netid.value,
        "family": sock.family.value,
        "state": sock.state.value,
        "local": endpoint_json(sock.local, False),
        "peer": endpoint_json(sock.peer, True),
        "cookie": sock.cookie,
        "process": None
        if process is None
        else {"pid": process.pid, "name": escape_undecodable(process.name), "user": escape_undecodable(process.user), "how": event.process_how},
        "process_unknown": event.process_how if process is None else None,
        "tx_bytes": event.tx_bytes,
        "rx_bytes": event.rx_bytes,
        "rx_exact": event.rx_exact,
        "retransmits": event.retransmits,
        "duration_s": None if event.duration is None else round(event.duration, 6),
        "duration_bound": event.duration_bound,
        "reason": event.reason,
    }


def event_json(event: Event) -> str:
    """Give the JSON text (one line) of an event."""
    import json

    return json.dumps(event_dict(event), ensure_ascii=False)

"""`sockscope scan TARGETS`: which ports are open (TCP connect or SYN scan, UDP scan, banners)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from ..errors import ExitCode, SockscopeError, UsageError
from . import seconds
from .environment import Environment

# nmap's -T templates, as their names and as Timing changes (rate in probes per second)
TEMPLATES = ("paranoid", "sneaky", "polite", "normal", "aggressive", "insane")
_TEMPLATE_TIMING: dict[str, dict[str, Any]] = {
    "paranoid": {"rate": 1 / 300, "concurrency": 1},
    "sneaky": {"rate": 1 / 15, "concurrency": 1},
    "polite": {"rate": 2.5, "concurrency": 1},
    "normal": {},
    "aggressive": {"initial_timeout": 0.5, "max_timeout": 1.25},
    "insane": {"initial_timeout": 0.25, "min_timeout": 0.05, "max_timeout": 0.3},
}


def add_parser(commands: Any) -> None:
    """Add `scan` to the command parsers."""
    p = commands.add_parser(
        "scan",
        help="which ports are open on hosts (like nmap -sT, -sS, -sU)",
        description="Scan ports of hosts. TCP: non-blocking connects (default, no privilege needed; open ports are "
        "closed with a reset, so no TIME-WAIT is left behind) or --syn half-open probes on raw sockets (root). "
        "UDP (--udp): a request in the service's protocol for well-known ports, an empty datagram otherwise; ICMP port "
        "unreachable means closed, silence open|filtered. Only open (and open|filtered) ports are listed unless --all.",
        epilog="Targets: 127.0.0.1, ::1, example.org, 10.0.0.0/24, 10.0.0.1-20, -iL FILE. Ports: -p 22,80,8000-8100, -p- "
        "(all), -p http,ssh, -p U:53,T:22 (both protocols); default: the 1000 most often open of each protocol scanned "
        "(--top-ports N). Ctrl-C prints what was found and exits 130.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="addresses, host names, CIDR blocks, ranges")
    p.add_argument("-iL", "--input-list", metavar="FILE", help="read targets from FILE ('-': standard input)")
    p.add_argument("--exclude", action="append", default=[], metavar="TARGETS", help="leave these out (comma-separated)")
    p.add_argument("-p", "--ports", metavar="SPEC", help="ports: 22,80,8000-8100, - for all, T:/U: prefixes")
    p.add_argument("--top-ports", type=int, metavar="N", help="the N most often open ports (default 1000)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("-sT", "--connect", dest="syn", action="store_false", help="TCP connect scan (the default)")
    kind.add_argument("-sS", "--syn", dest="syn", action="store_true", help="TCP SYN scan on raw sockets (root)")
    p.add_argument("-sU", "--udp", action="store_true", help="scan UDP ports (with TCP too when -sT or -sS is given)")
    p.add_argument("--banner", "-sV", action="store_true", help="read what open TCP ports say first (or answer to GET /) and name them")
    p.add_argument("--banner-timeout", type=seconds, default=2.0, metavar="S", help="longest wait for a banner (default 2)")
    p.add_argument("--all", action="store_true", help="list closed and filtered ports too")
    p.add_argument("--open", dest="all", action="store_false", help="list only open (and open|filtered) ports: the default, as in nmap")
    p.add_argument("-F", "--fast", action="store_true", help="the 100 most often open ports (as --top-ports 100)")
    p.add_argument("-T", dest="template", choices=[*TEMPLATES, *map(str, range(6))], metavar="0-5", help="nmap's timing templates, -T0 to -T5")
    p.add_argument("-6", dest="ipv6", action="store_true", help="scan the IPv6 addresses of host names (and refuse IPv4 targets)")
    p.add_argument("-v", "--verbose", action="store_true", help="show why each port is in its state (a REASON column)")
    p.add_argument("-Pn", dest="no_ping", action="store_true", help="accepted for nmap's sake: hosts are never pinged first")
    p.add_argument("-n", dest="no_dns", action="store_true", help="accepted for nmap's sake: addresses are never looked up by name")
    p.add_argument("-oX", dest="xml_out", metavar="FILE", help="also write nmap's XML format to FILE ('-': standard output instead of the table)")
    p.add_argument("-oG", dest="grep_out", metavar="FILE", help="also write nmap's grepable format to FILE ('-': standard output)")
    p.add_argument("--timeout", type=seconds, metavar="S", help="longest wait for one connect (default: adaptive, 0.1-10 s)")
    p.add_argument("--retries", type=int, default=1, metavar="N", help="tries again after no answer (default 1)")
    p.add_argument("--rate", type=float, metavar="N", help="at most N connects per second")
    p.add_argument("--concurrency", type=int, default=2048, metavar="N", help="connects in flight at once (default 2048)")
    p.add_argument("--workers", type=int, metavar="N", help="processes sharing the work (default: one per core for large scans)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON document (the contract in ARCHITECTURE.md)")
    out.add_argument("--jsonl", action="store_true", help="JSON Lines, one per port as found")
    out.add_argument("--csv", action="store_true", help="CSV: host,port,proto,state,reason,service,banner")
    p.set_defaults(syn=None)


def _progress(env: Environment) -> Any:
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        elapsed = max(1e-6, time.monotonic() - started)
        rate = done / elapsed
        eta = (total - done) / rate if rate else 0.0
        sys.stderr.write(f"\r{done}/{total} ports  {rate:,.0f}/s  ETA {eta:.1f}s   ")
        if done == total:
            sys.stderr.write("\r" + " " * 60 + "\r")
        sys.stderr.flush()

    return show


def run(args: argparse.Namespace, env: Environment) -> int:
    """Scan and print."""
    from ..scan import Timing, hosts, parse_ports, scan, top_ports
    from ..scan.targets import read_list

    targets = list(args.targets) + (read_list(args.input_list) if args.input_list else [])
    if not targets:
        raise UsageError("no targets: give addresses, names, CIDR blocks or -iL FILE")
    if sum((bool(args.ports), args.top_ports is not None, args.fast)) > 1:
        raise UsageError("-p, --top-ports and -F exclude each other")
    if args.fast:
        args.top_ports = 100
    protos = (("tcp",) if args.syn is not None or not args.udp else ()) + (("udp",) if args.udp else ())
    if args.ports:
        ports = parse_ports(args.ports, protos)
    else:
        ports = [pair for proto in protos for pair in top_ports(1000 if args.top_ports is None else args.top_ports, proto)]
    if args.banner_timeout <= 0:
        raise UsageError("--banner-timeout must be more than 0")
    for name in ("retries", "concurrency"):
        if getattr(args, name) < (0 if name == "retries" else 1):
            raise UsageError(f"--{name} is too small")
    if (args.timeout is not None and not args.timeout > 0) or (args.rate is not None and not args.rate > 0):
        raise UsageError("--timeout and --rate must be more than 0")
    timing = Timing(concurrency=args.concurrency, retries=args.retries, rate=args.rate)
    if args.template is not None:
        name = TEMPLATES[int(args.template)] if args.template.isdigit() else args.template
        timing = timing._replace(**{key: value for key, value in _TEMPLATE_TIMING[name].items() if key != "rate" or args.rate is None})
    if args.timeout:
        timing = timing._replace(initial_timeout=args.timeout, max_timeout=args.timeout, min_timeout=min(timing.min_timeout, args.timeout))
    missed: list[str] = []
    try:
        found_hosts = hosts(targets, args.exclude, unresolved=lambda exc: missed.append(exc.message), ipv6=args.ipv6)
    except UsageError:
        if missed:  # nothing left to scan: the names that failed are the news
            raise UsageError("; ".join(missed)) from None
        raise
    for message in missed:
        env.error(f"{message}; scanning the other hosts")
    on_port = None
    if args.jsonl:
        import json

        def on_port(host: Any, state: Any) -> None:
            if args.all or state.state in ("open", "open|filtered"):
                record = {"address": host.address, "name": host.name, **state._asdict(), "process": _process_record(state.process)}
                env.stdout.write(json.dumps(record) + "\n")

    progress = _progress(env) if env.is_tty and sys.stderr.isatty() and not (args.json or args.jsonl or args.csv) else None
    kind = "syn" if args.syn else "connect"
    report = scan(
        found_hosts, ports, timing, kind=kind, workers=args.workers, banners=args.banner, banner_timeout=args.banner_timeout,
        on_port=on_port, progress=progress,
    )  # fmt: skip
    if progress is not None:
        sys.stderr.write("\r" + " " * 60 + "\r")
    for note in report.notes:
        env.note(note)
    to_stdout = _nmap_files(args, report, env)
    if to_stdout:
        pass
    elif args.json:
        env.stdout.write(_json(report, args.all) + "\n")
    elif args.csv:
        env.stdout.write(_csv(report, args.all))
    elif not args.jsonl:
        env.stdout.write(_table(report, args.all, args.verbose))
    if report.interrupted:
        env.error("interrupted: the ports above are what was found so far")
        return ExitCode.INTERRUPTED
    if missed:  # the same status as when that name is the only target
        return ExitCode.USAGE
    return ExitCode.OK


def _listed(ports: list[Any], everything: bool) -> list[Any]:
    return [p for p in ports if everything or p.state in ("open", "open|filtered")]


def _not_shown(ports: list[Any], everything: bool) -> dict[str, int]:
    if everything:
        return {}
    return dict(Counter(p.state for p in ports if p.state not in ("open", "open|filtered")))


def _process_record(process: Any) -> dict[str, Any] | None:
    return None if process is None else {"pid": process.pid, "name": process.name, "user": process.user}


def _port_record(p: Any) -> dict[str, Any]:
    return {
        "port": p.port, "proto": p.proto, "state": p.state, "reason": p.reason, "service": p.service, "banner": p.banner,
        "process": _process_record(p.process),
    }  # fmt: skip


def _process_text(process: Any) -> str:
    return "" if process is None else f"{process.name} (pid {process.pid})"


def _json(report: Any, everything: bool) -> str:
    import json

    document = {
        "scan": {
            "kind": report.kind,
            "ports": report.ports,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.started)),
            "seconds": round(report.seconds, 3),
            "interrupted": report.interrupted,
            "notes": list(report.notes),
        },
        "hosts": [
            {
                "address": host.address,
                "name": host.name,
                "ports": [_port_record(p) for p in _listed(host.ports, everything)],
                "not_shown": _not_shown(host.ports, everything),
            }
            for host in report.hosts
        ],
    }
    return json.dumps(document)


def _csv(report: Any, everything: bool) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["host", "port", "proto", "state", "reason", "service", "banner"])
    for host in report.hosts:
        for p in _listed(host.ports, everything):
            writer.writerow([host.address, p.port, p.proto, p.state, p.reason, p.service or "", p.banner or ""])
    return buffer.getvalue()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _footer(report: Any) -> str:
    """Give the last line of the table: what was scanned, or how far an interrupted scan got."""
    hosts = _plural(len(report.hosts), "host")
    if report.interrupted:
        answered = sum(len(host.ports) for host in report.hosts)
        total = len(report.hosts) * report.ports
        return f"Interrupted after {report.seconds:.2f}s: {answered} of {total} ports of {hosts} probed ({report.kind})"
    return f"Scanned {hosts}, {_plural(report.ports, 'port')} each ({report.kind}), in {report.seconds:.2f}s"


def _nmap_files(args: argparse.Namespace, report: Any, env: Environment) -> bool:
    """Write the -oX and -oG files; give True when one of them went to standard output instead of the table."""
    if args.xml_out is None and args.grep_out is None:
        return False  # and the XML modules stay unimported
    import shlex

    from .. import __version__
    from ..scan.formats import grepable, nmap_xml

    command = shlex.join(["sockscope", "scan", *sys.argv[2:]]) if len(sys.argv) > 1 and sys.argv[1] == "scan" else "sockscope scan"
    to_stdout = False
    for path, make in ((args.xml_out, nmap_xml), (args.grep_out, grepable)):
        if path is None:
            continue
        text = make(report, command, __version__)
        if path == "-":
            env.stdout.write(text)
            to_stdout = True
            continue
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise SockscopeError(f"cannot write {path!r}: {exc.strerror}") from None
    return to_stdout


def _table(report: Any, everything: bool, with_reasons: bool = False) -> str:
    lines = []
    for host in report.hosts:
        shown = f"{host.name} ({host.address})" if host.name else host.address
        lines.append(f"sockscope scan report for {shown}")
        hidden = 0
        for proto in ("tcp", "udp"):
            mine = [p for p in host.ports if p.proto == proto]
            for state, count in sorted(_not_shown(mine, everything).items(), key=lambda item: -item[1]):
                reasons = Counter(p.reason for p in mine if p.state == state)
                reason_text = ", ".join(r if len(reasons) == 1 else f"{n} {r}" for r, n in reasons.most_common())
                lines.append(f"Not shown: {count} {state} {proto} port{'s' if count != 1 else ''} ({reason_text})")
                hidden += count
        listed = _listed(host.ports, everything)
        if listed:
            width = max(9, *(len(f"{p.port}/{p.proto}") for p in listed)) + 1
            service_width = max(8, *(len(p.service or "") for p in listed)) + 1
            banners = any(p.banner for p in listed)
            processes = [_process_text(p.process) for p in listed]
            process_width = max(len(text) for text in processes) + 1 if any(processes) else 0
            reason_width = max(len(p.reason) for p in listed) + 1 if with_reasons else 0
            header = f"{'PORT':<{width}} {'STATE':<14} {'REASON' if with_reasons else '':<{reason_width}}{'SERVICE':<{service_width}} "
            header += f"{'PROCESS' if process_width else '':<{process_width}}"
            lines.append((header + (" BANNER" if banners else "")).rstrip())
            for p, process in zip(listed, processes, strict=True):
                reason = p.reason if with_reasons else ""
                line = f"{f'{p.port}/{p.proto}':<{width}} {p.state:<14} {reason:<{reason_width}}{p.service or '':<{service_width}} "
                line += f"{process:<{process_width}} {p.banner or ''}"
                lines.append(line.rstrip())
        elif not hidden:
            lines.append("no ports answered")
        lines.append("")
    lines.append(_footer(report))
    return "\n".join(lines) + "\n"

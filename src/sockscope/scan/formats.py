"""A scan report as nmap writes it: XML (`-oX`, valid against nmap's DTD) and grepable (`-oG`).

Pure: a ScanReport in, text out, so ndiff, nmap's parsers and the tools that ingest nmap's
files read our scans. Like nmap, a state with more than 25 ports (other than open) is counted,
not listed, and services carry nmap's names (from nmap-services when installed). The DTD
knows one scanner, "nmap": the file says so in `scanner` (the format) and
names sockscope in `args` and `version`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from .portspec import nmap_names

if TYPE_CHECKING:
    from . import HostReport, PortState, ScanReport

MAX_LISTED = 25  # nmap's max_per_state: more ports than this in one state are summed up
_XML_KIND = {"connect": "connect", "syn": "syn", "udp": "udp"}


def ignored_states(ports: Sequence[PortState]) -> Counter[str]:
    """Give the states nmap would count rather than list, with their counts."""
    counts = Counter(port.state for port in ports)
    return Counter({state: count for state, count in counts.items() if state != "open" and count > MAX_LISTED})


def _ranges(numbers: Sequence[int]) -> str:
    """Give nmap's compact list of port numbers: 1-3,5."""
    out: list[str] = []
    ordered = sorted(set(numbers))
    start = previous = ordered[0] if ordered else 0
    for number in [*ordered[1:], -1]:
        if number != previous + 1:
            out.append(str(start) if start == previous else f"{start}-{previous}")
            start = number
        previous = number
    return ",".join(out)


def _kinds(report: ScanReport) -> list[tuple[str, str]]:
    """Give (nmap scan type, protocol) for each protocol of the scan."""
    return [(_XML_KIND[part], "udp" if part == "udp" else "tcp") for part in report.kind.split("+")]


def nmap_xml(report: ScanReport, args: str, version: str) -> str:
    """Give the report as an nmap XML document."""
    started = int(report.started)
    ended = int(report.started + report.seconds)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!DOCTYPE nmaprun>",
        f'<nmaprun scanner="nmap" args={quoteattr(args)} start="{started}" startstr={quoteattr(time.ctime(started))} '
        f'version={quoteattr(version)} xmloutputversion="1.05">',
    ]
    for kind, proto in _kinds(report):
        numbers = sorted({p.port for host in report.hosts for p in host.ports if p.proto == proto})
        lines.append(f'<scaninfo type="{kind}" protocol="{proto}" numservices="{len(numbers)}" services="{_ranges(numbers)}"/>')
    lines += ['<verbose level="0"/>', '<debugging level="0"/>']
    names = {proto: nmap_names(proto) for proto in ("tcp", "udp")}
    for host in report.hosts:
        lines += _xml_host(host, started, ended, names)
    summary = f"done at {time.ctime(ended)}; {_counted(report)} scanned in {report.seconds:.2f} seconds"
    up = len(report.hosts)
    lines += [
        f'<runstats><finished time="{ended}" timestr={quoteattr(time.ctime(ended))} elapsed="{report.seconds:.2f}" '
        f'summary={quoteattr(summary)} exit="{"error" if report.interrupted else "success"}"/>',
        f'<hosts up="{up}" down="0" total="{up}"/>',
        "</runstats>",
        "</nmaprun>",
    ]
    return "\n".join(lines) + "\n"


def _xml_host(host: HostReport, started: int, ended: int, names: dict[str, dict[int, str]]) -> list[str]:
    family = "ipv6" if ":" in host.address else "ipv4"
    lines = [
        f'<host starttime="{started}" endtime="{ended}"><status state="up" reason="user-set" reason_ttl="0"/>',
        f'<address addr="{host.address}" addrtype="{family}"/>',
        f'<hostnames><hostname name={quoteattr(host.name)} type="user"/></hostnames>' if host.name else "<hostnames></hostnames>",
        "<ports>",
    ]
    ignored = ignored_states(host.ports)
    for state, count in ignored.most_common():
        reasons = Counter((p.reason, p.proto) for p in host.ports if p.state == state)
        extra = "".join(f'<extrareasons reason="{reason}" count="{n}" proto="{proto}"/>' for (reason, proto), n in reasons.most_common())
        lines.append(f'<extraports state="{state}" count="{count}">{extra}</extraports>')
    for p in host.ports:
        if p.state in ignored:
            continue
        owner = f"<owner name={quoteattr(p.process.name)}/>" if p.process is not None else ""
        # nmap's own name for the port, so nmap's tools see the same service; ours when nmap has none
        named = names[p.proto].get(p.port) or p.service
        service = f'<service name={quoteattr(named)} method="table" conf="3"/>' if named else ""
        lines.append(f'<port protocol="{p.proto}" portid="{p.port}"><state state="{p.state}" reason="{p.reason}" reason_ttl="0"/>{owner}{service}</port>')
    lines += ["</ports>", "</host>"]
    return lines


def grepable(report: ScanReport, args: str, version: str) -> str:
    """Give the report in nmap's grepable format (one `Host:` line with its ports per host)."""
    started, ended = report.started, report.started + report.seconds
    lines = [f"# sockscope {version} scan initiated {time.ctime(started)} as: {args}"]
    for host in report.hosts:
        name = host.name or ""
        lines.append(f"Host: {host.address} ({name})\tStatus: Up")
        ignored = ignored_states(host.ports)
        items = []
        for p in host.ports:
            if p.state not in ignored:
                owner = (p.process.name if p.process is not None else "").replace("/", "|")
                items.append(f"{p.port}/{p.state}/{p.proto}/{owner}/{p.service or ''}///")
        fields = [f"Host: {host.address} ({name})", f"Ports: {', '.join(items)}"]
        if ignored:
            state, count = ignored.most_common(1)[0]
            fields.append(f"Ignored State: {state} ({count})")
        lines.append("\t".join(fields))
    lines.append(f"# sockscope done at {time.ctime(ended)} -- {_counted(report)} scanned in {report.seconds:.2f} seconds")
    return "\n".join(lines) + "\n"


def _counted(report: ScanReport) -> str:
    up = len(report.hosts)
    return f"{up} IP address{'es' if up != 1 else ''} ({up} host{'s' if up != 1 else ''} up)"

"""Port specifications: `-p 22,80,8000-8100`, `-p-`, `-p U:53,T:22`, and the top ports by frequency.

Pure: text in, `[(proto, port)]` out. The frequency ranking comes from nmap's `nmap-services`
file when it is installed (read at run time, like /etc/services), else from the order of a
short built-in list followed by the named ports of /etc/services.
"""

from __future__ import annotations

import os
import re

from ..errors import UsageError
from ..services import by_port

NMAP_SERVICES = os.environ.get("SOCKSCOPE_NMAP_SERVICES", "/usr/share/nmap/nmap-services")

# Used only without nmap-services: commonly open TCP ports, most common first.
COMMON_TCP = (
    80, 23, 443, 21, 22, 25, 3389, 110, 445, 139, 143, 53, 135, 3306, 8080, 1723, 111, 995, 993, 5900,
    1025, 587, 8888, 199, 1720, 465, 548, 113, 81, 6001, 10000, 514, 5060, 179, 1026, 2000, 8443, 8000,
    32768, 554, 26, 1433, 49152, 2001, 515, 8008, 49154, 1027, 5666, 646, 5000, 5631, 631, 49153, 8081,
    2049, 88, 79, 5800, 106, 2121, 1110, 49155, 6000, 513, 990, 5357, 427, 49156, 543, 544, 5101, 144,
    7, 389, 5432, 6379, 27017, 9200, 11211, 9090, 3000, 5672, 9092, 2375, 6443, 8086, 9000, 1521,
)  # fmt: skip
_RANGE = re.compile(r"(\d*)-(\d*)")

COMMON_UDP = (53, 123, 161, 137, 138, 67, 68, 69, 500, 514, 520, 1900, 5353, 4500, 162, 111, 2049, 1434, 5060, 11211)


def _port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise UsageError(f"-p {whole!r}: {text!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"-p {whole!r}: port {port} is out of range (1-65535)")
    return port


def parse_ports(text: str, default_proto: str | tuple[str, ...] = "tcp") -> list[tuple[str, int]]:
    """Give the (proto, port) pairs of a spec, in order, without repeats.

    Items are separated by commas: `N`, `A-B`, `-B` (from 1), `A-` (to 65535), `-` (all), or a
    service name; `T:` and `U:` switch the protocol for the items after them. Items before any
    prefix belong to `default_proto` (one protocol, or several: each port once per protocol).
    """
    spec = text.strip()
    if not spec:
        raise UsageError("-p needs ports: 22,80,8000-8100 or - for all")
    protos = (default_proto,) if isinstance(default_proto, str) else default_proto
    seen: dict[tuple[str, int], None] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if item[:2].upper() in ("T:", "U:"):
            protos = ("tcp",) if item[0].upper() == "T" else ("udp",)
            item = item[2:].strip()
        if not item:
            raise UsageError(f"-p {text!r}: an empty item")
        named_somewhere = False
        # a range is digits around one dash; anything else with a dash is a service name (http-alt)
        is_range = _RANGE.fullmatch(item) is not None
        for proto in protos:
            if is_range:
                low_text, _dash, high_text = item.partition("-")
                low = _port(low_text, text) if low_text else 1
                high = _port(high_text, text) if high_text else 65535
                if low > high:
                    raise UsageError(f"-p {text!r}: range {item!r} runs backwards (write LOW-HIGH)")
                for port in range(low, high + 1):
                    seen[(proto, port)] = None
            elif item.isdigit():
                seen[(proto, _port(item, text))] = None
            else:
                named = [port for port, name in by_port(proto).items() if name == item.lower()]
                named_somewhere |= bool(named)
                for port in named:
                    seen[(proto, port)] = None
        if not (named_somewhere or is_range or item.isdigit()):
            raise UsageError(f"-p {text!r}: {item!r} is neither a port nor a {'/'.join(protos)} service name")
    return list(seen)


def ranked(proto: str, path: str = NMAP_SERVICES) -> list[int]:
    """Give the ports of `proto`, most frequently open first."""
    found: list[tuple[float, int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("#"):
                    continue
                fields = line.split()
                if len(fields) < 3 or "/" not in fields[1]:
                    continue
                number, _slash, its_proto = fields[1].partition("/")
                if its_proto == proto and number.isdigit():
                    try:
                        found.append((-float(fields[2]), int(number)))
                    except ValueError:
                        continue
    except OSError:
        found = []
    if found:
        found.sort()
        return list(dict.fromkeys(port for _freq, port in found))
    base = COMMON_TCP if proto == "tcp" else COMMON_UDP
    return list(dict.fromkeys([*base, *sorted(by_port(proto))]))


def top_ports(count: int, proto: str = "tcp") -> list[tuple[str, int]]:
    """Give the `count` most frequently open ports of `proto`."""
    if count < 1:
        raise UsageError("--top-ports needs a number of at least 1")
    return [(proto, port) for port in ranked(proto)[:count]]


def nmap_names(proto: str, path: str = NMAP_SERVICES) -> dict[int, str]:
    """Give nmap's service name of each port of `proto` (empty without nmap-services), most frequent name first."""
    names: dict[int, tuple[float, str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 3 or line.startswith("#") or not fields[1].endswith("/" + proto):
                    continue
                number = fields[1].partition("/")[0]
                try:
                    frequency = float(fields[2])
                except ValueError:
                    continue
                if number.isdigit() and frequency >= names.get(int(number), (-1.0, ""))[0]:
                    names[int(number)] = (frequency, fields[0])
    except OSError:
        return {}
    return {port: name for port, (_frequency, name) in names.items()}

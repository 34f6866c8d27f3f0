"""Look up services and ports: by number, `number/proto`, name, glob or range."""

from __future__ import annotations

import fnmatch

from .. import services
from ..address import parse_port, parse_range
from ..errors import UsageError
from ..records import NamedTuple
from .free import ephemeral_range, unprivileged_port_start


class PortFacts(NamedTuple):
    """A port as `services` shows it: its service (if any), its IANA class, and what binding it takes here."""

    port: int
    proto: str
    name: str | None
    aliases: tuple[str, ...]
    port_class: str  # well-known, registered, dynamic
    privileged: bool  # binding needs root or CAP_NET_BIND_SERVICE on this host
    ephemeral: bool  # inside this host's ephemeral range (clients' source ports come from there)


def facts(port: int, proto: str, entry: services.Service | None) -> PortFacts:
    low, high = ephemeral_range()
    return PortFacts(
        port,
        proto,
        entry.name if entry else None,
        entry.aliases if entry else (),
        services.port_class(port),
        port < unprivileged_port_start(),
        low <= port <= high,
    )


def lookup(query: str, path: str | None = None) -> list[PortFacts]:
    """Give the ports a query names: `22`, `5432/tcp`, `ssh`, `postgres*`, `8000-8100` (named ports only)."""
    text = query.strip()
    if not text:
        raise UsageError("give a port, a service name, a glob or a range")
    spec, sep, proto = text.partition("/")
    proto = proto.lower()
    if sep and proto not in ("tcp", "udp", "sctp", "dccp"):
        raise UsageError(f"{query!r}: unknown protocol {proto!r} (tcp, udp, sctp or dccp)")
    if spec.startswith(":"):  # `:8080`, as other commands take a port
        spec = spec[1:]
        if not spec[:1].isdigit():
            raise UsageError(f"{query!r} is not a port: ports are 1-65535")
    if spec.startswith("-"):  # a negative number, or a flag given as a query
        raise UsageError(f"{query!r} is not a port: ports are 1-65535")
    table = [e for e in services.entries(path) if not proto or e.proto == proto]
    if spec.isdigit() or (spec[:1].isdigit() and "-" in spec):
        low, high = parse_range(spec) if "-" in spec else (parse_port(spec), parse_port(spec))
        named = [e for e in table if low <= e.port <= high]
        if low == high and not named:  # a single port with no service still has facts
            return [facts(low, p, None) for p in ([proto] if proto else ["tcp", "udp"])]
        return [facts(e.port, e.proto, e) for e in sorted(named, key=lambda e: (e.port, e.proto))]
    pattern = spec.lower()
    matches = [e for e in table if any(fnmatch.fnmatchcase(n.lower(), pattern) for n in (e.name, *e.aliases))]
    return [facts(e.port, e.proto, e) for e in sorted(matches, key=lambda e: (e.port, e.proto))]

"""Scan targets: addresses, host names, CIDR blocks, octet ranges (`10.0.0.1-20`), lists from a file.

Pure parsing (`expand`) apart from name resolution (`resolve_name`), which is one thin function.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections.abc import Callable, Iterable

from ..errors import UsageError
from ..records import NamedTuple

MAX_HOSTS = 1 << 20


class UnresolvedHost(UsageError):
    """A host name that has no address (the rest of a scan can go on without it)."""


class Host(NamedTuple):
    """One address to scan, and the name it was given by (None for literal addresses)."""

    address: str
    family: int
    name: str | None = None


def _octets(text: str) -> list[list[int]] | None:
    parts = text.split(".")
    if len(parts) != 4 or not all(parts):
        return None
    out = []
    for part in parts:
        low_text, dash, high_text = part.partition("-")
        if not low_text.isdigit() or (dash and not high_text.isdigit()):
            return None
        low, high = int(low_text), int(high_text) if dash else int(low_text)
        if low > 255 or high > 255:
            raise UsageError(f"{text!r}: each of the four numbers of an IPv4 address is 0-255")
        if low > high:
            raise UsageError(f"{text!r}: range {part!r} runs backwards")
        out.append(list(range(low, high + 1)))
    return out


def resolve_name(name: str, ipv6: bool = False) -> list[Host]:
    """Give the address of a host name, IPv4 first unless `ipv6` (UnresolvedHost when it has none)."""
    try:
        found = socket.getaddrinfo(name, None, socket.AF_INET6 if ipv6 else 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvedHost(f"cannot resolve host {name!r}: {getattr(exc, 'strerror', None) or exc}") from None
    # one address per name, IPv4 first, as scanners do unless asked for IPv6
    ordered = sorted(found, key=lambda f: f[0] != socket.AF_INET)
    family, _t, _p, _c, sockaddr = ordered[0]
    return [Host(str(sockaddr[0]), int(family), name)]


def expand(text: str, ipv6: bool = False) -> list[Host]:
    """Give the hosts one target names: an address, a CIDR block, an octet range or a host name (only IPv6 ones with `ipv6`)."""
    found = _expand(text, ipv6)
    if ipv6 and any(host.family != socket.AF_INET6 for host in found):
        raise UsageError(f"{text.strip()!r} is IPv4, and -6 asks for IPv6 targets")
    return found


def _expand(text: str, ipv6: bool) -> list[Host]:
    spec = text.strip()
    if not spec:
        raise UsageError("an empty target")
    if "/" in spec:
        try:
            network = ipaddress.ip_network(spec, strict=False)
        except ValueError:
            raise UsageError(f"{spec!r} is not a CIDR block (write 10.0.0.0/24 or fd00::/120)") from None
        if network.num_addresses > MAX_HOSTS:
            raise UsageError(f"{spec!r} holds {network.num_addresses} addresses; at most {MAX_HOSTS} per scan")
        family = socket.AF_INET if network.version == 4 else socket.AF_INET6
        hosts = network.hosts() if network.num_addresses > 2 else iter(network)
        return [Host(str(address), family) for address in hosts]
    try:
        address = ipaddress.ip_address(spec.strip("[]"))
    except ValueError:
        pass
    else:
        return [Host(str(address), socket.AF_INET if address.version == 4 else socket.AF_INET6)]
    octets = _octets(spec)
    if octets is not None:
        total = 1
        for values in octets:
            total *= len(values)
        if total > MAX_HOSTS:
            raise UsageError(f"{spec!r} holds {total} addresses; at most {MAX_HOSTS} per scan")
        return [Host(".".join(map(str, combo)), socket.AF_INET) for combo in itertools.product(*octets)]
    if spec.replace(".", "").replace("-", "").isdigit():
        raise UsageError(f"{spec!r} is not an IPv4 address or range")
    if ":" in spec:
        raise UsageError(f"{spec!r} is not an IPv6 address")
    return resolve_name(spec, ipv6)


def read_list(path: str) -> list[str]:
    """Give the targets listed in a file (`-iL`): whitespace-separated, `#` starts a comment; `-` is stdin."""
    try:
        if path == "-":
            import sys

            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read the target list {path!r}: {exc.strerror}") from None
    return [word for line in text.splitlines() for word in line.partition("#")[0].split()]


def hosts(targets: Iterable[str], exclude: Iterable[str] = (), unresolved: Callable[[UnresolvedHost], None] | None = None, *, ipv6: bool = False) -> list[Host]:
    """Give every host of the targets, in order, without repeats, minus the excluded ones.

    A name that does not resolve raises UnresolvedHost, or, with `unresolved`, is handed to it and
    left out, so one bad name among many does not stop the scan of the others.
    """
    excluded = {h.address for text in exclude for part in text.split(",") if part.strip() for h in expand(part)}
    seen: dict[str, Host] = {}
    for text in targets:
        try:
            found = expand(text, ipv6)
        except UnresolvedHost as exc:
            if unresolved is None:
                raise
            unresolved(exc)
            continue
        for host in found:
            if host.address not in excluded and host.address not in seen:
                seen[host.address] = host
                if len(seen) > MAX_HOSTS:
                    raise UsageError(f"more than {MAX_HOSTS} hosts in one scan")
    if not seen:
        raise UsageError("no hosts left to scan")
    return list(seen.values())

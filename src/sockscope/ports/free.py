"""Ports that are free to bind right now, proved by binding them."""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Iterable

from ..errors import NothingFound, UsageError


def sysctl_numbers(name: str, proc_root: str = "/proc") -> list[int] | None:
    """Give the numbers in /proc/sys/<name> (dots or slashes), or None when it cannot be read."""
    try:
        with open(f"{proc_root}/sys/{name.replace('.', '/')}", encoding="ascii") as handle:
            return [int(word) for word in handle.read().split()]
    except (OSError, ValueError):
        return None


def ephemeral_range(proc_root: str = "/proc") -> tuple[int, int]:
    """Give the kernel's ephemeral port range (net.ipv4.ip_local_port_range)."""
    found = sysctl_numbers("net.ipv4.ip_local_port_range", proc_root)
    return (found[0], found[1]) if found and len(found) == 2 else (32768, 60999)


def unprivileged_port_start(proc_root: str = "/proc") -> int:
    """Give the lowest port an unprivileged process may bind (net.ipv4.ip_unprivileged_port_start)."""
    found = sysctl_numbers("net.ipv4.ip_unprivileged_port_start", proc_root)
    return found[0] if found else 1024


def _hosts(host: str | None) -> list[tuple[int, str]]:
    if host is not None:
        try:
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise UsageError(f"--host {host!r} is not an IP address") from None
        return [(int(infos[0][0]), host)]
    hosts = [(int(socket.AF_INET), "0.0.0.0")]
    if socket.has_ipv6:
        hosts.append((int(socket.AF_INET6), "::"))
    return hosts


def bindable(port: int, udp: bool = False, host: str | None = None) -> bool:
    """Tell whether `port` can be bound right now on `host` (default: every IPv4 and IPv6 address).

    No SO_REUSEADDR: a port that only a server setting it could take is not called free.
    """
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    for family, address in _hosts(host):
        try:
            probe = socket.socket(family, kind)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT and host is None:
                continue  # no IPv6 on this host: IPv4 decides
            raise
        with probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    if host is None and family == socket.AF_INET6:
                        continue  # IPv6 is off: IPv4 decides
                    raise UsageError(f"cannot bind to {address}: it is not an address of this host") from None
                return False
    return True


def candidates(low: int, high: int, skip: tuple[int, int] | None) -> Iterable[int]:
    """Give the ports of a range in random order (so that callers at the same time differ), minus `skip`."""
    ports = [p for p in range(low, high + 1) if skip is None or not skip[0] <= p <= skip[1]]
    random.shuffle(ports)
    return ports


def free_ports(count: int = 1, *, udp: bool = False, port_range: tuple[int, int] | None = None, host: str | None = None) -> list[int]:
    """Give `count` ports free to bind now, outside the ephemeral range unless `port_range` is given.

    Without a range: 1024-65535 minus the ephemeral range. Raises NothingFound when fewer are free.
    """
    if count < 1:
        raise UsageError(f"-n {count}: ask for at least one port")
    low, high = port_range or (1024, 65535)
    skip = None if port_range else ephemeral_range()
    found: list[int] = []
    for port in candidates(low, high, skip):
        if bindable(port, udp, host):
            found.append(port)
            if len(found) == count:
                return sorted(found)
    where = f"{low}-{high}" + ("" if skip is None else f" outside the ephemeral range {skip[0]}-{skip[1]}")
    raise NothingFound(f"only {len(found)} of {count} ports are free in {where}")

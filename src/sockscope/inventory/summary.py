"""Counts over the inventory, like `ss -s`, plus sockets per process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..model import Family, NetId, Socket


@dataclass
class Summary:
    """Socket counts: by kind, by TCP state, by kind and IP version, and by owning process."""

    total: int = 0
    by_netid: Counter[str] = field(default_factory=Counter)
    tcp_states: Counter[str] = field(default_factory=Counter)
    by_transport: dict[str, dict[str, int]] = field(default_factory=dict)
    by_process: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    orphaned: int | None = None
    unowned: int = 0


def summarize(sockets: Iterable[Socket], orphaned: int | None = None) -> Summary:
    """Give the Summary of some sockets (owners are counted when they were asked for)."""
    result = Summary(orphaned=orphaned)
    transports = {name: {"total": 0, "ip": 0, "ipv6": 0} for name in ("raw", "udp", "tcp", "inet")}
    for sock in sockets:
        result.total += 1
        result.by_netid[sock.netid.value] += 1
        if sock.netid is NetId.TCP:
            result.tcp_states[sock.state.value] += 1
        if sock.family in (Family.INET, Family.INET6):
            version = "ip" if sock.family is Family.INET else "ipv6"
            for name in (sock.netid.value, "inet"):
                if name in transports:
                    transports[name]["total"] += 1
                    transports[name][version] += 1
        if sock.owners:
            for pid, name, _fd, user in {(o.pid, o.name, 0, o.user) for o in sock.owners}:
                result.by_process[(pid, name, user)] += 1
        elif sock.owners is not None:
            result.unowned += 1
    result.by_transport = transports
    return result


def orphaned_count(sockstat_text: str) -> int | None:
    """Give the `orphan` count of a /proc/net/sockstat text (None when absent)."""
    for line in sockstat_text.splitlines():
        if line.startswith("TCP:"):
            words = line.split()
            if "orphan" in words:
                value = words[words.index("orphan") + 1]
                return int(value) if value.isdigit() else None
    return None

"""Who holds a port or a unix socket path: the sockets, and the processes behind them."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..address import parse_port
from ..errors import UsageError
from ..inventory import Query, proc_root, state_mask, take
from ..inventory.owners import find_holders, scan
from ..inventory.processes import ProcessInfo, describe
from ..model import Endpoint, NetId, Socket, State, UnixEndpoint
from ..records import NamedTuple

UNIX_NETIDS = frozenset({NetId.UNIX_STREAM, NetId.UNIX_DGRAM, NetId.UNIX_SEQPACKET})
# Every state in which a process holds the socket (TIME-WAIT sockets belong to no process).
HELD_STATES = frozenset(State) - {State.UNKNOWN, State.TIME_WAIT}
LISTENING = frozenset({State.LISTEN, State.UNCONN})


class Target(NamedTuple):
    """What the user asked about: a port, or a unix socket name (`@name` for abstract ones).

    `proto` is the protocol the text named (`53/udp`), or None to follow the caller's choice.
    """

    text: str
    port: int | None = None
    path: str | None = None
    proto: str | None = None

    def is_udp(self, udp: bool) -> bool:
        """Tell whether this port target means UDP, given the caller's default."""
        return self.proto == "udp" if self.proto else udp


def parse_port_target(text: str) -> Target:
    """Give the Target of a port as people write it: `8080`, `:8080`, `8080/tcp`, `53/udp` (fuser's form)."""
    spec, slash, proto = text.partition("/")
    proto = proto.lower()
    if slash and proto not in ("tcp", "udp"):
        raise UsageError(f"{text!r}: unknown protocol {proto!r} (write PORT, PORT/tcp or PORT/udp)")
    digits = spec.removeprefix(":")
    if not digits.isdigit():
        raise UsageError(f"{text!r} is not a port: write a number 1-65535, :PORT, PORT/tcp or PORT/udp")
    return Target(text, port=parse_port(digits), proto=proto or None)


def parse_target(text: str) -> Target:
    """Give the Target of `8080`, `:8080`, `8080/tcp`, `53/udp`, `/run/x.sock`, `./x.sock`, `@abstract` or `unix:PATH`."""
    spec = text.removeprefix("unix:")
    if spec.startswith(("/", "./", "../", "@")) or spec != text:
        if spec in ("", "@"):
            raise UsageError(f"{text!r}: the unix socket path is empty")
        if "\0" in spec:
            raise UsageError(f"{text!r}: a unix socket path cannot hold a NUL byte")
        return Target(text, path=spec if spec.startswith("@") else os.path.abspath(spec))
    if spec.removeprefix(":").partition("/")[0].isdigit():
        return parse_port_target(spec)
    raise UsageError(f"{text!r} is neither a port (1-65535, PORT/tcp, PORT/udp) nor a unix socket path (/path, ./path, @name)")


class Holder(NamedTuple):
    """One process holding the target: what it is, where it listens, how many connections it has."""

    process: ProcessInfo
    listening: tuple[str, ...]
    connections: int


class Holding(NamedTuple):
    """The answer for one Target: its sockets (owners filled in) and the processes holding them."""

    target: Target
    sockets: list[Socket]
    holders: list[Holder]
    denied: int  # processes we could not look into (other users', without root)

    @property
    def held(self) -> bool:
        return bool(self.sockets)


def endpoint_text(end: object) -> str:
    """Give `127.0.0.1:80`, `[::]:80` or a unix path for an endpoint."""
    if isinstance(end, Endpoint):
        return f"[{end.address}]:{end.port}" if ":" in end.address else f"{end.address}:{end.port}"
    if isinstance(end, UnixEndpoint):
        return end.path or "*"
    return str(end)


def sockets_of(target: Target, udp: bool = False, root: str | None = None, listening_only: bool = False) -> list[Socket]:
    """Give the sockets bound to a target (without owners)."""
    states = state_mask(LISTENING if listening_only else HELD_STATES)
    if target.port is not None:
        udp = target.is_udp(udp)
        netids = frozenset({NetId.UDP if udp else NetId.TCP})
        found = take(Query(netids=netids, states=states, owners=False, local_port=target.port, proc_root=root)).sockets
        if udp and listening_only:  # a UDP socket "listens" when it is bound but not connected
            found = [s for s in found if s.state is State.UNCONN]
        return found
    found = take(Query(netids=UNIX_NETIDS, states=states, owners=False, proc_root=root)).sockets
    return [s for s in found if isinstance(s.local, UnixEndpoint) and s.local.path == target.path]


def who(targets: Sequence[Target], udp: bool = False, *, root: str | None = None, thorough: bool = False, listening_only: bool = False) -> list[Holding]:
    """Give, for each target, the sockets bound to it and every process holding them.

    Processes are read until all holders are found (see owners.find_holders); `thorough`
    reads every process instead, which also finds sockets passed between unrelated processes.
    """
    root = root or proc_root()
    per_target = [sockets_of(t, udp, root, listening_only) for t in targets]
    wanted = {s.inode for found in per_target for s in found if s.inode}
    if not wanted:
        return [Holding(t, found, [], 0) for t, found in zip(targets, per_target, strict=True)]
    if thorough:
        owners = scan(root, wanted)
    else:
        owners = find_holders(wanted, root, {s.uid for found in per_target for s in found if s.uid is not None})
    answers = []
    for target, found in zip(targets, per_target, strict=True):
        found = [s._replace(owners=owners.owners(s.inode)) for s in found]
        answers.append(Holding(target, found, _holders(found, root), owners.denied))
    return answers


def _holders(sockets: list[Socket], root: str) -> list[Holder]:
    listening: dict[int, list[str]] = {}
    connections: dict[int, int] = {}
    for sock in sockets:
        for owner in sock.owners or ():
            listening.setdefault(owner.pid, [])
            connections.setdefault(owner.pid, 0)
            if sock.state in LISTENING:
                text = endpoint_text(sock.local)
                if text not in listening[owner.pid]:
                    listening[owner.pid].append(text)
            else:
                connections[owner.pid] += 1
    return [Holder(describe(pid, root), tuple(listening[pid]), connections[pid]) for pid in sorted(listening)]

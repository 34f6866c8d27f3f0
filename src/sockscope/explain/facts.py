"""The facts `explain` states, measured on this host: sockets, holders, ports, queues, other ends."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

from ..errors import NothingFound, PermissionDenied
from ..inventory import Query, proc_root, take
from ..inventory.owners import process_name, process_user, scan, user_name
from ..model import Endpoint, Family, NetId, Socket, State, UnixEndpoint
from ..ports.services import PortFacts
from ..records import NamedTuple
from .files import NameCheck, check_name, file_key, socket_files
from .target import Target

INET_NETIDS = frozenset({NetId.TCP, NetId.UDP})
UNIX_NETIDS = frozenset({NetId.UNIX_STREAM, NetId.UNIX_DGRAM, NetId.UNIX_SEQPACKET})
WILDCARDS = frozenset({"0.0.0.0", "::", "*"})
CAP_NET_BIND_SERVICE = 10


class Host(NamedTuple):
    """What this host and this user allow: who runs us, the privileged ports, the ephemeral range."""

    uid: int
    user: str
    may_bind_privileged: bool  # root, or CAP_NET_BIND_SERVICE in the effective set
    unprivileged_port_start: int  # net.ipv4.ip_unprivileged_port_start
    ephemeral: tuple[int, int]  # net.ipv4.ip_local_port_range
    somaxconn: int | None = None  # net.core.somaxconn: the most any listen() backlog gets


class Link(NamedTuple):
    """A connection seen from one end, with the socket at its other end when that is on this host."""

    socket: Socket
    other: Socket | None


class SocketFacts(NamedTuple):
    """One socket and what surrounds it: its port, its connections (a listener) or its other end."""

    socket: Socket
    port: PortFacts | None  # the local port of a tcp/udp socket
    other: Socket | None  # a connection's other end, when it is on this host
    connections: tuple[Link, ...]  # a listener's connections, accepted or waiting in its queue
    listener: Socket | None = None  # a connection's listener, when it came in through one here
    shared: int = 0  # a listener's connections that came in through it or a listener alike (SO_REUSEPORT)
    listeners: tuple[Socket, ...] = ()  # a connection's possible listeners, when several are alike
    receivers: tuple[Socket, ...] = ()  # a connected UDP socket's possible other ends, when several are alike
    name: NameCheck | None = None  # where a unix socket's filesystem name leads now


class Explanation(NamedTuple):
    """Everything measured for one target."""

    target: Target
    host: Host
    sockets: list[SocketFacts]
    port: PortFacts | None  # a port or address target's port, even when no socket uses it
    denied: int  # processes of other users whose descriptors could not be read
    process: str | None  # a pid target: `name (user)`


def host_facts(root: str = "/proc") -> Host:
    """Give the Host facts of this process on this host."""
    from ..ports.free import ephemeral_range, unprivileged_port_start

    uid = os.geteuid()
    may_bind = uid == 0 or _has_capability(CAP_NET_BIND_SERVICE)
    return Host(uid, user_name(uid), may_bind, unprivileged_port_start(root), ephemeral_range(root), _somaxconn(root))


def _somaxconn(root: str) -> int | None:
    try:
        with open(f"{root}/sys/net/core/somaxconn", encoding="ascii") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def _has_capability(number: int) -> bool:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> number & 1)
    except (OSError, ValueError):
        pass
    return False


@functools.lru_cache(maxsize=4096)  # a pid may hold thousands of sockets on a few ports
def port_facts(port: int, proto: str) -> PortFacts:
    """Give the facts of a port: its service name, IANA class, privilege and ephemeral range here."""
    from .. import services
    from ..ports.services import facts

    entry = next((e for e in services.entries() if e.port == port and e.proto == proto), None)
    return facts(port, proto, entry)


def plain_address(address: str) -> str:
    """Give an address without the IPv4-mapped prefix (`::ffff:127.0.0.1` is 127.0.0.1 on the wire)."""
    return address[7:] if address.startswith("::ffff:") and "." in address else address


def _same_end(a: object, b: object) -> bool:
    if isinstance(a, Endpoint) and isinstance(b, Endpoint):
        return a.port == b.port and plain_address(a.address) == plain_address(b.address)
    return False


def _listens(sock: Socket) -> bool:
    return sock.state is State.LISTEN or (sock.state is State.UNCONN and sock.netid is not NetId.TCP)


def _child_of(sock: Socket, listener: Socket) -> bool:
    """Tell whether `sock` is a connection accepted through (or waiting in) `listener`."""
    if sock is listener or sock.netid is not listener.netid or _listens(sock) or sock.state is State.TIME_WAIT:
        return False
    if sock.family is not listener.family:  # an accepted socket has its listener's family (::ffff:a.b.c.d on inet6)
        return False
    if isinstance(listener.local, UnixEndpoint):
        return isinstance(sock.local, UnixEndpoint) and sock.local.path is not None and sock.local.path == listener.local.path
    if not (isinstance(sock.local, Endpoint) and isinstance(listener.local, Endpoint)) or listener.netid is not NetId.TCP:
        return False
    if sock.local.port != listener.local.port:
        return False
    return listener.local.address in WILDCARDS or plain_address(sock.local.address) == plain_address(listener.local.address)


def _key(end: Endpoint) -> tuple[str, int]:
    return plain_address(end.address), end.port


class Index:
    """The sockets of this host looked up by inode, by both ends, and by local port or unix name.

    A listener may have thousands of connections among tens of thousands of sockets: each
    lookup is a dictionary's, never a pass over every socket.
    """

    def __init__(self, everything: Iterable[Socket]) -> None:
        self.by_inode: dict[int, Socket] = {}
        self.by_ends: dict[tuple[NetId, tuple[str, int], tuple[str, int]], Socket] = {}
        self.by_local: dict[tuple[NetId, object], list[Socket]] = {}
        self.listening: dict[tuple[NetId, object], list[Socket]] = {}  # listeners alone: a port may have thousands of connections
        for sock in everything:
            if sock.inode:
                self.by_inode[sock.inode] = sock
            local, peer = sock.local, sock.peer
            if isinstance(local, Endpoint) and isinstance(peer, Endpoint):
                self.by_ends[(sock.netid, _key(local), _key(peer))] = sock
                self.by_local.setdefault((sock.netid, local.port), []).append(sock)
            elif isinstance(local, UnixEndpoint) and local.path:
                self.by_local.setdefault((sock.netid, local.path), []).append(sock)
            if sock.state is State.LISTEN and isinstance(local, Endpoint | UnixEndpoint):
                where = local.port if isinstance(local, Endpoint) else local.path
                self.listening.setdefault((sock.netid, where), []).append(sock)

    def other_end(self, sock: Socket) -> Socket | None:
        """Give the socket at the other end of a connection when it is on this host (and visible here)."""
        peer, local = sock.peer, sock.local
        if isinstance(peer, UnixEndpoint):
            return self.by_inode.get(peer.inode) if peer.inode else None
        if not isinstance(peer, Endpoint) or not isinstance(local, Endpoint) or peer.port == 0:
            return None
        found = self.by_ends.get((sock.netid, _key(peer), _key(local)))
        if found is None and sock.netid is NetId.UDP:
            return self._receiver(sock, peer)
        return found if found is not sock else None

    def _receiver(self, sock: Socket, peer: Endpoint) -> Socket | None:
        """Give the unconnected UDP socket a connected one sends to, when exactly one takes that address here."""
        found = self.receivers(sock)
        return found[0] if len(found) == 1 else None

    def receivers(self, sock: Socket) -> list[Socket]:
        """Give the unconnected UDP sockets that may take a connected UDP socket's datagrams (several: SO_REUSEPORT)."""
        peer = sock.peer
        if sock.netid is not NetId.UDP or not isinstance(peer, Endpoint):
            return []
        address = (plain_address(peer.address),)
        bound = self.by_local.get((NetId.UDP, peer.port), ())
        found = [s for s in bound if s is not sock and s.state is State.UNCONN and _covers(s, address)]
        exact = [s for s in found if isinstance(s.local, Endpoint) and s.local.address not in WILDCARDS]
        return exact or found

    def listeners_of(self, sock: Socket) -> list[Socket]:
        """Give the listeners a connection may have come in through: one when that is certain, several when not.

        The kernel looks a listener up by the exact local address before the wildcard, so a
        listener on 127.0.0.1:80 takes what comes to 127.0.0.1:80 before one on 0.0.0.0:80. Among
        listeners alike (SO_REUSEPORT) it picks by a hash of the client's address and tells no one.
        """
        local = sock.local
        where = local.port if isinstance(local, Endpoint) else local.path if isinstance(local, UnixEndpoint) else None
        found = [s for s in self.listening.get((sock.netid, where), ()) if _child_of(sock, s)]
        if len(found) > 1:
            exact = [s for s in found if isinstance(s.local, Endpoint) and s.local.address not in WILDCARDS]
            found = exact or found
        return found

    def listener_of(self, sock: Socket) -> Socket | None:
        """Give the listener a connection came in through, when it is on this host and there is no doubt which."""
        found = self.listeners_of(sock)
        return found[0] if len(found) == 1 else None

    def children(self, listener: Socket) -> tuple[list[Socket], list[Socket]]:
        """Give the connections accepted through (or waiting in) a listener, and those that came through it or a listener alike."""
        local = listener.local
        where = local.port if isinstance(local, Endpoint) else local.path if isinstance(local, UnixEndpoint) else None
        mine: list[Socket] = []
        shared: list[Socket] = []
        for sock in self.by_local.get((listener.netid, where), ()):
            if _child_of(sock, listener):
                found = self.listeners_of(sock)
                if found == [listener]:
                    mine.append(sock)
                elif any(s is listener for s in found):
                    shared.append(sock)
        return mine, shared


def _covers(sock: Socket, addresses: tuple[str, ...]) -> bool:
    """Tell whether a socket's local address takes connections to one of `addresses`."""
    local = sock.local
    assert isinstance(local, Endpoint)
    if local.address == "::":  # every IPv6 address, and every IPv4 one too unless IPV6_V6ONLY
        return any(":" in a or sock.v6only is False for a in addresses)
    if local.address in WILDCARDS:
        return any(":" not in a for a in addresses)
    return plain_address(local.address) in addresses


def select(target: Target, everything: list[Socket]) -> list[Socket]:
    """Give the sockets a target names (before listeners take in their connections)."""
    kind = target.kind
    if kind == "inode":
        return [s for s in everything if s.inode == target.number]
    if kind == "pid":
        return [s for s in everything if any(o.pid == target.number for o in s.owners or ())]
    if kind == "path":
        return [s for s in everything if isinstance(s.local, UnixEndpoint) and s.local.path == target.path]
    found = []
    for sock in everything:
        if not isinstance(sock.local, Endpoint) or sock.netid not in INET_NETIDS or sock.local.port != target.port:
            continue
        if target.proto is not None and sock.netid.value != target.proto:
            continue
        if kind == "address" and not _covers(sock, target.addresses):
            continue
        found.append(sock)
    return found


def gather(target: Target, root: str | None = None) -> Explanation:
    """Give the Explanation of a target; NothingFound when nothing matches, PermissionDenied for a pid we may not read."""
    root = root or proc_root()
    if target.kind == "pid" and target.number is not None:
        # a thread's id opens /proc/TID too, but descriptors belong to its process (the thread group)
        target = target._replace(number=_thread_group(target.number, root))
    process = _process(target.number, root) if target.kind == "pid" and target.number is not None else None
    netids = {"port": INET_NETIDS, "address": INET_NETIDS, "path": UNIX_NETIDS}.get(target.kind, INET_NETIDS | UNIX_NETIDS)
    everything = take(Query(netids=netids, proc_root=root, internals=frozenset({"timers"}))).sockets
    owned = scan(root)
    everything = [s._replace(owners=owned.owners(s.inode)) for s in everything]
    chosen = select(target, everything)
    files = socket_files() if any(_filesystem_name(s) for s in chosen) or target.kind == "path" else {}
    if target.kind == "path" and target.path and (key := file_key(target.path)) is not None:
        # the file the path leads to (through symbolic links too) is the socket's, whatever name it was bound with
        chosen += [s for s in everything if files.get(s.inode) == key and s not in chosen]
    port = None
    if target.port is not None:
        port = port_facts(target.port, target.proto or "tcp")
    if not chosen:
        raise NothingFound(_nothing(target, process, port, root))
    index = Index(everything)
    listeners = [s for s in chosen if _listens(s)]
    taken: set[int] = set()
    facts = []
    for sock in listeners:
        mine, shared = index.children(sock)
        children = tuple(Link(c, index.other_end(c)) for c in mine)
        taken.update(id(link.socket) for link in children)
        facts.append(SocketFacts(sock, _port_of(sock), None, children, shared=len(shared)))
    for sock in chosen:
        if not _listens(sock) and id(sock) not in taken:
            found = index.listeners_of(sock)
            listener, alike = (found[0], ()) if len(found) == 1 else (None, tuple(found))
            other = index.other_end(sock)
            receivers = tuple(index.receivers(sock)) if other is None else ()
            facts.append(SocketFacts(sock, _port_of(sock), other, (), listener, listeners=alike, receivers=receivers))
    facts = [f._replace(name=_name_check(f.socket, files, root)) if _filesystem_name(f.socket) else f for f in facts]
    return Explanation(target, host_facts(root), facts, port, owned.denied, process)


def _filesystem_name(sock: Socket) -> bool:
    return isinstance(sock.local, UnixEndpoint) and bool(sock.local.path) and not (sock.local.path or "").startswith("@")


def _name_check(sock: Socket, files: dict[int, tuple[int, int, int]], root: str) -> NameCheck | None:
    assert isinstance(sock.local, UnixEndpoint) and sock.local.path is not None
    return check_name(sock.local.path, sock.inode, files, sorted({o.pid for o in sock.owners or ()}), root)


def _port_of(sock: Socket) -> PortFacts | None:
    if isinstance(sock.local, Endpoint) and sock.netid in INET_NETIDS and sock.family in (Family.INET, Family.INET6):
        return port_facts(sock.local.port, sock.netid.value)
    return None


def _process(pid: int, root: str) -> str:
    """Give `name (user)` of a process whose descriptors we may read; NothingFound or PermissionDenied otherwise."""
    if not os.path.isdir(f"{root}/{pid}"):
        raise NothingFound(f"no process with pid {pid} on this host")
    try:
        os.listdir(f"{root}/{pid}/fd")
    except PermissionError:
        user = process_user(root, pid)
        readers = "root" if user == "root" else f"{user} or root"
        raise PermissionDenied(f"pid {pid} ({process_name(root, pid)}) runs as {user}: its descriptors can be read only by {readers} (run with sudo)") from None
    except OSError:
        raise NothingFound(f"no process with pid {pid} on this host (it has gone)") from None
    return f"{process_name(root, pid)} (user {process_user(root, pid)})"


def _nothing(target: Target, process: str | None, port: PortFacts | None, root: str = "/proc") -> str:
    """Give the one line for a target that matches no socket (only this network namespace was looked in)."""
    where, others = _where(root)
    if target.kind == "pid" and not os.path.isdir(f"{root}/{target.number}"):
        return f"pid {target.number}, {process}, exited while its sockets were being looked at"
    if target.kind == "pid" and _zombie(target.number or 0, root):
        return f"pid {target.number}, {process}, has exited (a zombie its parent has not reaped): it holds no socket"
    if target.kind == "pid":
        elsewhere = _held_elsewhere(target.number or 0, root)
        if elsewhere:
            return f"pid {target.number}, {process}, holds no tcp, udp or unix socket in this network namespace; {elsewhere}"
        return f"pid {target.number}, {process}, holds no tcp, udp or unix socket"
    if target.kind == "inode":
        return f"no tcp, udp or unix socket has inode {target.number} {where}{others}"
    if target.kind == "path":
        from ..net.hub import printable_text  # a name may hold a newline or bytes that are not UTF-8

        return f"no unix socket is bound to {printable_text(target.path or '')} {where}{others}"
    from .sentences import port_sentence

    named = f"{target.text}" if target.kind == "address" else f"port {target.port}"
    assert port is not None
    said = port_sentence(port, host_facts(), both=target.proto is None)
    return f"no socket uses {named} {where}; {said[0].lower()}{said[1:-1]}{others}."


def _where(root: str) -> tuple[str, str]:
    """Give where was looked (`on this host` when it has one network namespace) and a note on the others."""
    from ..inventory import netns

    try:
        others = len(netns.discover(root)) - 1
    except OSError:
        others = 0
    if others <= 0:
        return "on this host", ""
    spaces = plural_text(others, "other network namespace")
    return "in this network namespace", f" ({spaces} not looked in: `sockscope ls -ap --netns all` lists their sockets)"


def plural_text(count: int, thing: str) -> str:
    """Give `1 thing`, `2 things`."""
    return f"{count} {thing}{'' if count == 1 else 's'}"


def _thread_group(pid: int, root: str) -> int:
    """Give the process a thread id belongs to (Tgid in /proc/PID/status); the id itself for a process."""
    try:
        with open(f"{root}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return pid


def _zombie(pid: int, root: str) -> bool:
    """Tell whether a process has exited and waits for its parent to reap it (state Z in /proc/PID/stat)."""
    try:
        with open(f"{root}/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[:1] == [b"Z"]  # the name may hold ")" and spaces
    except OSError:
        return False


def _held_elsewhere(pid: int, root: str) -> str:
    """Give what a process holds in another network namespace than ours ('' when it lives in ours)."""
    from ..inventory import netns

    try:
        theirs = os.stat(f"{root}/{pid}/ns/net").st_ino
        links = [os.readlink(f"{root}/{pid}/fd/{fd}") for fd in os.listdir(f"{root}/{pid}/fd")]
    except OSError:
        return ""
    if theirs == netns.current(root):
        return ""
    count = sum(link.startswith("socket:[") for link in links)
    return (
        f"it lives in another network namespace (net:[{theirs}]) and holds {plural_text(count, 'socket')}: "
        f"`sockscope ls -ap --netns {pid}` lists the sockets of that namespace"
    )

"""What sockets exist on this host, and who owns them: the inventory behind `ls`, `who`, `summary`.

Netlink sock_diag is asked first, one dump per family and protocol; a protocol whose diag
module is missing falls back to its /proc/net file. The dumps run in a helper thread so the
kernel's work overlaps our decoding and the /proc/<pid>/fd scan.
"""

from __future__ import annotations

import _socket as socket  # socket.py adds ~2 ms of start-up (enum conversions) and nothing used here
import _thread
import gc
import os
import sys
from _queue import SimpleQueue  # what queue.SimpleQueue is, without queue.py's start-up
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import compress, repeat
from operator import add, itemgetter
from types import ModuleType

from ..errors import PermissionDenied, SockscopeError, SourceUnavailable, UsageError
from ..model import ALL_STATES_MASK, STATE_NUMBERS, Family, Internals, NetId, Socket, State, UnixEndpoint
from ..records import NamedTuple
from . import diag, netlink, owners

TYPE_CHECKING = False  # importing `typing` costs a tenth of `sockscope -tlnp` on a small host
if TYPE_CHECKING:
    from typing import Literal

    Source = Literal["auto", "netlink", "proc"]

INET_NETIDS = frozenset({NetId.TCP, NetId.UDP, NetId.RAW, NetId.MPTCP})
UNIX_NETIDS = frozenset({NetId.UNIX_STREAM, NetId.UNIX_DGRAM, NetId.UNIX_SEQPACKET})
PACKET_NETIDS = frozenset({NetId.PACKET_RAW, NetId.PACKET_DGRAM})
VSOCK_NETIDS = frozenset({NetId.VSOCK_STREAM, NetId.VSOCK_DGRAM, NetId.VSOCK_SEQPACKET})
ALL_NETIDS = frozenset(NetId)
ALL_FAMILIES = frozenset(Family)

_PROTOCOLS = {NetId.TCP: socket.IPPROTO_TCP, NetId.UDP: socket.IPPROTO_UDP, NetId.RAW: socket.IPPROTO_RAW, NetId.MPTCP: diag.IPPROTO_MPTCP}
_PROC_FILES = {NetId.TCP: "tcp", NetId.UDP: "udp", NetId.RAW: "raw"}


def proc_root() -> str:
    """Give the proc root: $SOCKSCOPE_PROC when set (tests point it at fixtures), else /proc."""
    return os.environ.get("SOCKSCOPE_PROC", "/proc")


def state_mask(states: Iterable[State]) -> int:
    """Give the kernel state bitmask (bit n is TCP state n) of some states."""
    mask = 0
    for state in states:
        mask |= 1 << STATE_NUMBERS[state]
    return mask


class Query(NamedTuple):
    """What to list: which kinds, states (kernel bitmask), families, and whether to find owners."""

    netids: frozenset[NetId] = ALL_NETIDS
    states: int = ALL_STATES_MASK
    families: frozenset[Family] = ALL_FAMILIES
    owners: bool = False
    source: Source = "auto"
    netns: str | None = None
    proc_root: str | None = None  # None: $SOCKSCOPE_PROC or /proc
    where: Callable[[Socket], bool] | None = None
    local_port: int | None = None  # only inet sockets bound to this port (filtered in the kernel)
    internals: frozenset[str] = frozenset()  # of INTERNALS: what `ls -i -m -o --cgroup` add
    cgroup_root: str | None = None  # None: $SOCKSCOPE_CGROUP, else the cgroup2 mount


#: The groups of Socket.internals a Query may ask for (inet sockets from sock_diag).
INTERNALS = frozenset({"info", "memory", "timers", "cgroup"})


class Inventory(NamedTuple):
    """Sockets found, plus notes a command should show once (why owners are missing, ...)."""

    sockets: list[Socket]
    notes: list[str]


def list_sockets(
    netids: Collection[NetId] | None = None,
    states: Collection[State] | None = None,
    families: Collection[Family] | None = None,
    *,
    owners: bool = False,
    source: Source = "auto",
    netns: str | None = None,
    where: Callable[[Socket], bool] | None = None,
) -> list[Socket]:
    """Give the sockets on this host (or in a network namespace) matching the arguments.

    `netns` is a name from `ip netns`, a pid or "all"; rows then carry the namespace label.
    Owners are found by scanning /proc, which sees only this user's processes without root.
    """
    query = Query(
        frozenset(netids) if netids is not None else ALL_NETIDS,
        state_mask(states) if states is not None else ALL_STATES_MASK,
        frozenset(families) if families is not None else ALL_FAMILIES,
        owners,
        source,
        netns,
        None,
        where,
    )
    return take(query).sockets


def take(query: Query) -> Inventory:
    """Give the Inventory for a Query (the work behind list_sockets).

    Raises UsageError for internals the inventory does not know (see INTERNALS).
    """
    if unknown := set(query.internals) - INTERNALS:
        raise UsageError(f"unknown internals {', '.join(sorted(unknown))}: the groups are {', '.join(sorted(INTERNALS))}")
    # Tens of thousands of new tuples would set off the cyclic garbage collector again and
    # again (a third of the run time at 50,000 sockets); records hold no cycles, so pause it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _take(query)
    finally:
        if collecting:
            gc.enable()


def _take(query: Query) -> Inventory:
    notes: list[str] = []
    root = query.proc_root or proc_root()
    scanner = owners.Scanner(root) if query.owners else None  # runs beside the dumps
    if query.netns is None:
        found = _namespace_sockets(query, root, None, False, notes)
    else:
        found = _namespaces_sockets(query, root, notes)
    if scanner is not None:
        scanned = scanner.finish()
        found = _attach_owners(found, scanned)
        if denied := scanned.denied:
            notes.append(
                f"owners of some sockets are not shown: {denied} processes of other users cannot be inspected without root (run with sudo to see them)"
            )
    if query.internals and (note := _without_internals(found, query.internals)):
        notes.append(note)
    if "cgroup" in query.internals:
        from . import cgroups  # only --cgroup walks the cgroup tree

        found = _name_cgroups(found, query.cgroup_root or cgroups.find_root(root))
    if query.where is not None:
        found = [sock for sock in found if query.where(sock)]
    return Inventory(found, notes)


def _name_cgroups(found: list[Socket], cgroup_root: str) -> list[Socket]:
    """Give the sockets with the path (and container) of each cgroup id filled in."""
    from . import cgroups

    named = {number: (path, cgroups.container(path)) for number, path in cgroups.paths(cgroup_root).items()}
    unknown = (None, None)
    out = []
    for sock in found:
        extra = sock.internals
        if extra is not None and extra.cgroup_id is not None:
            # built as tuples (not _replace): this runs for every socket of the listing
            extra = tuple.__new__(Internals, (*extra[:5], *named.get(extra.cgroup_id, unknown)))
            sock = tuple.__new__(Socket, (*sock[:14], extra))
        out.append(sock)
    return out


def _without_internals(found: list[Socket], asked: frozenset[str]) -> str | None:
    """Give a note when some sockets that could carry the asked internals came from /proc (which has none)."""
    kinds = INET_NETIDS | (UNIX_NETIDS if "memory" in asked else frozenset())
    missing = sum(1 for sock in found if sock.internals is None and sock.netid in kinds)
    if not missing:
        return None
    return f"{_count(missing, 'socket')} read from /proc/net have no internals (-i, -m, -o, --cgroup need netlink sock_diag)"


def _namespaces_sockets(query: Query, root: str, notes: list[str]) -> list[Socket]:
    """Give the sockets of every namespace `--netns` names; with `all`, the namespaces this user
    may not enter are left out and named in a note rather than failing the whole listing."""
    from . import netns

    own = netns.current(root)
    found: list[Socket] = []
    closed: list[str] = []
    for space in netns.resolve(query.netns or "all", root):
        if space.inode == own:  # no setns() needed (nor allowed without root) to stay home
            found += _namespace_sockets(query, root, space.label, False, notes)
            continue
        inside = False
        try:
            with netns.entered(space):
                inside = True
                found += _namespace_sockets(query, root, space.label, True, notes)
        except PermissionDenied:
            if inside or query.netns != "all":
                raise
            closed.append(space.label)
    if closed:
        notes.append(f"{_count(len(closed), 'network namespace')} could not be entered (needs root): {', '.join(closed)}")
    return found


def _namespace_sockets(query: Query, root: str, label: str | None, entered: bool, notes: list[str]) -> list[Socket]:
    netids = query.netids
    inet_families = [(fam, af) for fam, af in ((Family.INET, socket.AF_INET), (Family.INET6, socket.AF_INET6)) if fam in query.families]
    plan: list[_Job] = []
    for netid in (NetId.TCP, NetId.UDP, NetId.RAW, NetId.MPTCP):
        if netid in netids:
            plan += [_inet_job(netid, af, query.states, label, query.local_port, query.internals) for _fam, af in inet_families]
    if netids & UNIX_NETIDS and Family.UNIX in query.families:
        plan.append(_unix_job(query.states, label, "memory" in query.internals))
    if NetId.NETLINK in netids and Family.NETLINK in query.families:
        plan.append(_netlink_job(label))
    if netids & PACKET_NETIDS and Family.PACKET in query.families:
        plan.append(_packet_job(label))
    if netids & VSOCK_NETIDS and Family.VSOCK in query.families:
        plan.append(_vsock_job(query.states, label))
    net_dir = f"{root}/thread-self/net" if entered else f"{root}/net"
    found = _run(plan, query.source, net_dir, notes)
    # The kernel filtered states already (where it could); check again, at C speed.
    allowed = {state for state, number in STATE_NUMBERS.items() if query.states >> number & 1}
    found = list(compress(found, map(allowed.__contains__, map(itemgetter(2), found))))
    found = list(compress(found, map(netids.__contains__, map(itemgetter(0), found))))
    if query.local_port is not None:  # the /proc fallback cannot filter: check every source here
        port = query.local_port
        found = [s for s in found if s.netid not in _PROTOCOLS or (s.netid is not NetId.RAW and s.local.port == port)]  # type: ignore[union-attr]
    return found


def _same(found: list[Socket]) -> list[Socket]:
    return found


class _Job(NamedTuple):
    source: str
    request: bytes
    decode: Callable[[bytes, list[diag.Span]], list[Socket]]
    fallback: Callable[[str, list[str]], list[Socket]] | None
    finish: Callable[[list[Socket]], list[Socket]] = _same


Parse = Callable[[str, str, list[str]], list[Socket]]


def _proc_file(name: str, parse: Parse) -> Callable[[str, list[str]], list[Socket]]:
    """Give a fallback that reads /proc/net/NAME (under a net directory) with `parse(text, path,
    skipped)`; lines it cannot read are skipped and counted in one note for the file."""

    def fallback(net_dir: str, notes: list[str]) -> list[Socket]:
        from . import procnet  # the fallback alone reads /proc/net: most runs never need it

        text, path = procnet.read(net_dir, name)
        skipped: list[str] = []
        found = parse(text, path, skipped)
        if skipped:
            notes.append(f"{path}: skipped {_count(len(skipped), 'line')} that do not read as sockets (first: {skipped[0]})")
        return found

    return fallback


def _procnet() -> ModuleType:
    from . import procnet

    return procnet


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


def _no_proc_file(_net_dir: str, _notes: list[str]) -> list[Socket]:
    return []


def _inet_job(netid: NetId, af: int, states: int, label: str | None, local_port: int | None, internals: frozenset[str] = frozenset()) -> _Job:
    protocol = _PROTOCOLS[netid]
    addresses = diag.AddressText()
    devices = diag.Devices(interface_name)
    kind = _PROC_FILES.get(netid, netid.value)
    name = kind + ("6" if af == socket.AF_INET6 else "")
    port = None if netid is NetId.RAW else local_port  # a raw socket's "port" is its protocol
    ext = (diag.EXT_INFO | diag.EXT_CONG if "info" in internals else 0) | (diag.EXT_SKMEMINFO if "memory" in internals else 0)
    return _Job(
        f"netlink inet_diag {name}",
        diag.inet_request(af, protocol, states, ext=ext, local_port=port),
        lambda chunk, spans: diag.decode_inet(chunk, spans, protocol, addresses, label, devices, internals),
        # the kernel has no /proc/net file for MPTCP: without its diag module there is nothing to read
        _proc_file(name, lambda text, path, skipped: _procnet().parse_inet(text, kind, path, label, skipped)) if netid in _PROC_FILES else _no_proc_file,
    )


def _unix_job(states: int, label: str | None, memory: bool = False) -> _Job:
    return _Job(
        "netlink unix_diag",
        diag.unix_request(states, memory),
        lambda chunk, spans: diag.decode_unix(chunk, spans, label, memory),
        _proc_file("unix", lambda text, path, skipped: _procnet().parse_unix(text, path, label, skipped)),
        fill_unix_peers,
    )


def _netlink_job(label: str | None) -> _Job:
    return _Job(
        "netlink netlink_diag",
        diag.netlink_request(),
        lambda c, s: diag.decode_netlink(c, s, label),
        _proc_file("netlink", lambda text, path, skipped: _procnet().parse_netlink(text, path, label, skipped)),
    )


def interface_name(index: int) -> str:
    """Give an interface's name by index (`*` for 0, the number when it is unknown)."""
    if index == 0:
        return "*"
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


def _packet_job(label: str | None) -> _Job:
    return _Job(
        "netlink packet_diag",
        diag.packet_request(),
        lambda c, s: diag.decode_packet(c, s, interface_name, label),
        _proc_file("packet", lambda text, path, skipped: _procnet().parse_packet(text, path, interface_name, label, skipped)),
    )


def _vsock_job(states: int, label: str | None) -> _Job:
    # The kernel has no /proc file for vsock: without vsock_diag there is nothing to read.
    return _Job("netlink vsock_diag", diag.vsock_request(states), lambda c, s: diag.decode_vsock(c, s, label), _no_proc_file)


def fill_unix_peers(found: list[Socket]) -> list[Socket]:
    """Give unix sockets with each peer's path filled in from the peer socket's own name."""
    paths = {s.inode: s.local.path for s in found if isinstance(s.local, UnixEndpoint) and s.local.path}
    out = []
    for s in found:
        peer = s.peer
        if isinstance(peer, UnixEndpoint) and peer.inode and peer.inode in paths:
            s = s._replace(peer=UnixEndpoint(paths[peer.inode], peer.inode))
        out.append(s)
    return out


_END = object()


def _run(plan: list[_Job], source: Source, net_dir: str, notes: list[str]) -> list[Socket]:
    """Run the jobs: netlink dumps in a helper thread (decoded here as chunks arrive), or /proc."""
    if source == "proc":
        return [sock for job in plan for sock in job.finish(_from_proc(job, net_dir, notes))]
    chunks: SimpleQueue[object] = SimpleQueue()
    # _thread, the documented low-level API, rather than threading: that module's import alone
    # costs a small listing more than the thread does
    finished = _thread.allocate_lock()
    finished.acquire()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # let the reader take the GIL back quickly after each recv()
    _thread.start_new_thread(_dump_all, (plan, chunks, finished))
    found: list[Socket] = []
    try:
        for job in plan:
            part: list[Socket] = []
            for item in _until_end(chunks):
                if isinstance(item, SourceUnavailable):
                    if source == "netlink" or job.fallback is None:
                        raise item
                    part = _from_proc(job, net_dir, notes)
                    break
                if isinstance(item, BaseException):
                    raise item
                pair: tuple[bytes, list[diag.Span]] = item  # type: ignore[assignment]  # the reader puts (chunk, spans) pairs
                part += job.decode(*pair)
            found += job.finish(part)
    finally:
        finished.acquire()
        sys.setswitchinterval(previous)
    return found


def _until_end(chunks: SimpleQueue[object]) -> Iterator[object]:
    while (item := chunks.get()) is not _END:
        if isinstance(item, BaseException):
            # the reader puts the job's end marker right after an error: take it before the
            # caller stops listening, so the next job starts at its own first chunk
            while chunks.get() is not _END:
                pass
            yield item
            return
        yield item


def _dump_all(plan: list[_Job], chunks: SimpleQueue[object], finished: _thread.LockType) -> None:
    try:
        for job in plan:
            try:
                for item in netlink.dump(job.request, job.source):
                    chunks.put(item)
            except (SockscopeError, OSError) as exc:
                chunks.put(exc)
            chunks.put(_END)
    finally:
        finished.release()


def _from_proc(job: _Job, net_dir: str, notes: list[str]) -> list[Socket]:
    if job.fallback is None:
        return []
    try:
        return job.fallback(net_dir, notes)
    except SourceUnavailable:
        return []


def _attach_owners(found: list[Socket], result: owners.OwnerScan) -> list[Socket]:
    """Give the sockets with every holding process filled in (C-level: this runs per socket)."""
    got = map(result.holders.get, map(itemgetter(7), found), repeat(()))
    # owners (10) sits before device, v6only, cookie and internals (11 on): take those along
    before = map(add, map(itemgetter(slice(None, 10)), found), zip(got))
    return list(map(tuple.__new__, repeat(Socket), map(add, before, map(itemgetter(slice(11, None)), found))))

"""Drawing sockets for people and for programs: aligned tables, JSON, JSON Lines and CSV.

`ls` may print tens of thousands of rows and must keep pace with `ss`: the table is built
column by column, by the C accelerator (`_native.c`) when it is there, else with C-level
`map`/`str.format` in Python (same text either way).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from .. import native
from ..model import AnyEndpoint, Endpoint, NetlinkEndpoint, Owner, PacketEndpoint, Socket, UnixEndpoint, VsockEndpoint

if TYPE_CHECKING:
    import json

PortNames = dict[int, str]


def inet_texts(ends: Iterable[Endpoint], hosts: dict[str, str], names: PortNames, is_peer: bool) -> list[str]:
    """Give `address:port` for a column of inet endpoints (uniques formatted once each).

    `hosts` caches the `address:` part across calls; ports get their service name from `names`.
    """
    ends = list(ends)
    for address in set(map(itemgetter(0), ends)).difference(hosts):
        hosts[address] = f"[{address}]:" if ":" in address else f"{address}:"
    ports = {port: names.get(port) or str(port) for port in set(map(itemgetter(1), ends))}
    if is_peer and 0 in ports:
        ports[0] = "*"
    return list(map(str.__add__, map(hosts.__getitem__, map(itemgetter(0), ends)), map(ports.__getitem__, map(itemgetter(1), ends))))


class InetCells(NamedTuple):
    """A table column of inet endpoints, drawn straight from the sockets (no text per cell made
    in advance when the C accelerator draws the table)."""

    sockets: list[Socket]
    position: int  # in the Socket: 5 local, 6 peer
    hosts: dict[str, str]
    names: PortNames
    is_peer: bool

    def texts(self) -> list[str]:
        return inet_texts(map(itemgetter(self.position), self.sockets), self.hosts, self.names, self.is_peer)


class OwnerCells(NamedTuple):
    """The Process column: each socket's owners (drawn by the C accelerator when it is there)."""

    owners: list[tuple[Owner, ...] | None]

    def texts(self) -> list[str]:
        return list(map(OwnersText(), self.owners))


class EndpointText:
    """Endpoint -> text as a person reads it: `10.0.0.1:ssh`, `[::1]:8080`, `0.0.0.0:*`, `/run/x.sock 1234`."""

    def __init__(self, tcp_names: PortNames | None, udp_names: PortNames | None) -> None:
        self.names = {"tcp": tcp_names or {}, "udp": udp_names or {}, "raw": {}}
        self.hosts: dict[str, str] = {}

    def one(self, end: AnyEndpoint, netid: str, inode: int, is_peer: bool) -> str:
        """Give the text of one endpoint of any family."""
        if isinstance(end, Endpoint):
            return inet_texts([end], self.hosts, self.names.get(netid, {}), is_peer)[0]
        if isinstance(end, UnixEndpoint):
            return f"{end.path or '*'} {end.inode if is_peer else inode}"
        if isinstance(end, NetlinkEndpoint):
            port = "kernel" if end.portid == 0 else str(end.portid)
            return f"{end.protocol}:{port}" if not is_peer else "*"
        if isinstance(end, PacketEndpoint):
            return f"{end.protocol}:{end.interface}" if not is_peer else "*"
        if isinstance(end, VsockEndpoint):
            return f"{end.cid}:{end.port}"
        return str(end)

    def column(self, sockets: Sequence[Socket], is_peer: bool) -> list[str] | InetCells:
        """Give the local (or peer) endpoint column: InetCells when every row is inet of one kind."""
        index = 6 if is_peer else 5
        netids = set(map(itemgetter(0), sockets))
        if len(netids) == 1 and set(map(type, map(itemgetter(index), sockets))) <= {Endpoint}:
            return InetCells(list(sockets), index, self.hosts, self.names.get(next(iter(netids)), {}), is_peer)
        return [self.one(end, s.netid, s.inode, is_peer) for s, end in zip(sockets, map(itemgetter(index), sockets), strict=True)]


class OwnersText:
    """Owners -> the Process column: `name(pid=N,fd=F,user=U)` for each holder, comma separated."""

    def __init__(self) -> None:
        self.heads: dict[tuple[int, str], str] = {}
        self.tails: dict[str, str] = {}

    def __call__(self, owners: tuple[Owner, ...] | None) -> str:
        if not owners:
            return ""
        parts = []
        for pid, name, fd, user in owners:
            head = self.heads.get((pid, name))
            if head is None:
                head = self.heads[(pid, name)] = f"{name}(pid={pid},fd="
            tail = self.tails.get(user)
            if tail is None:
                tail = self.tails[user] = f",user={user})"
            parts.append(f"{head}{fd}{tail}")
        return ",".join(parts)


def table(
    out: IO[str],
    sockets: Sequence[Socket],
    texts: EndpointText,
    *,
    netid: bool,
    extended: bool,
    processes: bool,
    netns: bool,
    header: bool = True,
) -> None:
    """Write the `ls` table: aligned columns, numbers right-aligned, the Process column last."""
    columns: list[tuple[str, list[Any] | InetCells | OwnerCells, bool]] = []  # title, cells (str, StrEnum or int), right-aligned
    if netns:
        columns.append(("Netns", [s.netns or "-" for s in sockets], False))
    if netid:
        columns.append(("Netid", list(map(itemgetter(0), sockets)), False))
    columns += [
        ("State", list(map(itemgetter(2), sockets)), False),
        ("Recv-Q", list(map(itemgetter(3), sockets)), True),
        ("Send-Q", list(map(itemgetter(4), sockets)), True),
        ("Local Address:Port", texts.column(sockets, False), False),
        ("Peer Address:Port", texts.column(sockets, True), False),
    ]
    if extended:
        columns.append(("UID", ["-" if uid is None else uid for uid in map(itemgetter(8), sockets)], True))
        columns.append(("Inode", list(map(itemgetter(7), sockets)), True))
    if processes:
        columns.append(("Process", OwnerCells(list(map(itemgetter(10), sockets))), False))
    titles, cells, rights = zip(*columns, strict=True)
    fast = native.accel
    text = fast.table_text(titles, cells, rights, header) if fast is not None else None
    out.write(text if text is not None else table_text(titles, cells, rights, header))


def table_text(titles: Sequence[str], columns: Sequence[list[Any] | InetCells | OwnerCells], right: Sequence[bool], header: bool) -> str:
    """Give the aligned table as text: one space between columns, the last left-aligned one unpadded."""
    columns = [cells.texts() if isinstance(cells, InetCells | OwnerCells) else list(map(str, cells)) for cells in columns]
    widths = [max(len(title), max(map(len, cells), default=0)) for title, cells in zip(titles, columns, strict=True)]
    parts = [f"{{:{'>' if r else '<'}{width}}}" for r, width in zip(right, widths, strict=True)]
    if not right[-1]:
        parts[-1] = "{}"  # no trailing blanks after the last column
    template = " ".join(parts)
    lines = [template.format(*titles).rstrip(" ")] if header else []
    lines += map(template.format, *columns)
    return "".join(line + "\n" for line in lines)


def endpoint_json(end: AnyEndpoint, is_peer: bool) -> dict[str, Any]:
    """Give the JSON object of an endpoint (the contract in ARCHITECTURE.md)."""
    if isinstance(end, UnixEndpoint):
        return {"path": end.path, "inode": end.inode} if is_peer else {"path": end.path}
    return end._asdict()


def socket_json(sock: Socket, service: str | None) -> dict[str, Any]:
    """Give the JSON object of one socket."""
    local, peer = sock.local, sock.peer
    return {
        "netid": sock.netid.value,
        "family": sock.family.value,
        "state": sock.state.value,
        "recv_q": sock.recv_q,
        "send_q": sock.send_q,
        "local": {"address": local.address, "port": local.port} if type(local) is Endpoint else endpoint_json(local, False),
        "peer": {"address": peer.address, "port": peer.port} if type(peer) is Endpoint else endpoint_json(peer, True),
        "inode": sock.inode,
        "uid": sock.uid,
        "netns": sock.netns,
        "owners": None if sock.owners is None else [{"pid": o.pid, "name": o.name, "fd": o.fd, "user": o.user} for o in sock.owners],
        "service": service,
    }


def service_of(tcp: PortNames, udp: PortNames) -> Callable[[Socket], str | None]:
    """Give a function naming a socket's service: its local port's name, else its peer port's."""
    tables = {"tcp": tcp, "udp": udp}

    def name(sock: Socket) -> str | None:
        names = tables.get(sock.netid.value)
        if names is None or not isinstance(sock.local, Endpoint):
            return None
        return names.get(sock.local.port) or names.get(sock.peer.port)  # type: ignore[union-attr]

    return name


@functools.cache
def _encoder() -> json.JSONEncoder:
    import json  # only the commands that write JSON pay for it

    return json.JSONEncoder(ensure_ascii=False)


def _dumps(value: object) -> str:
    return _encoder().encode(value)


_SOCKET = (
    '{"netid": "%s", "family": "%s", "state": "%s", "recv_q": %d, "send_q": %d, "local": %s, "peer": %s, '
    '"inode": %d, "uid": %s, "netns": %s, "owners": %s, "service": %s}'
)


class JsonText:
    """Socket -> its JSON text, equal to `json.dumps(socket_json(...))` but several times faster.

    Only the fields that can hold arbitrary text (paths, process and user names, labels) go
    through the JSON encoder; the rest are numbers and fixed words.
    """

    def __init__(self, service: Callable[[Socket], str | None]) -> None:
        self.service = service
        self.people: dict[tuple[int, str, str], str] = {}
        self.words: dict[str | None, str] = {None: "null"}

    def word(self, text: str | None) -> str:
        found = self.words.get(text)
        if found is None:
            found = self.words[text] = _dumps(text)
        return found

    def owners(self, owners: tuple[Owner, ...] | None) -> str:
        if owners is None:
            return "null"
        parts = []
        for pid, name, fd, user in owners:
            key = (pid, name, user)
            head = self.people.get(key)
            if head is None:
                head = self.people[key] = f'{{"pid": {pid}, "name": {_dumps(name)}, "fd": '
                self.words[f"user:{user}"] = f', "user": {_dumps(user)}}}'
            parts.append(f"{head}{fd}{self.words[f'user:{user}']}")
        return f"[{', '.join(parts)}]"

    def __call__(self, s: Socket) -> str:
        local, peer = s.local, s.peer
        return _SOCKET % (
            s.netid.value,
            s.family.value,
            s.state.value,
            s.recv_q,
            s.send_q,
            f'{{"address": "{local.address}", "port": {local.port}}}' if type(local) is Endpoint else _dumps(endpoint_json(local, False)),
            f'{{"address": "{peer.address}", "port": {peer.port}}}' if type(peer) is Endpoint else _dumps(endpoint_json(peer, True)),
            s.inode,
            "null" if s.uid is None else s.uid,
            self.word(s.netns),
            self.owners(s.owners),
            self.word(self.service(s)),
        )


def json_array(out: IO[str], sockets: Sequence[Socket], service: Callable[[Socket], str | None]) -> None:
    """Write a JSON array of sockets, one object per line for readability and streaming tools."""
    if not sockets:
        out.write("[]\n")
        return
    out.write("[\n")
    out.write(",\n".join(map(JsonText(service), sockets)))
    out.write("\n]\n")


def json_lines(out: IO[str], sockets: Sequence[Socket], service: Callable[[Socket], str | None]) -> None:
    """Write one JSON object per line."""
    if sockets:
        out.write("\n".join(map(JsonText(service), sockets)))
        out.write("\n")


CSV_FIELDS = (
    "netid",
    "family",
    "state",
    "recv_q",
    "send_q",
    "local_address",
    "local_port",
    "peer_address",
    "peer_port",
    "inode",
    "uid",
    "netns",
    "owners",
    "service",
)


def _csv_end(end: AnyEndpoint, inode: int, is_peer: bool) -> tuple[object, object]:
    if isinstance(end, Endpoint):
        return end.address, end.port
    if isinstance(end, UnixEndpoint):
        return end.path or "", end.inode if is_peer else inode
    return tuple(end)  # type: ignore[return-value]


def csv_rows(out: IO[str], sockets: Iterable[Socket], service: Callable[[Socket], str | None]) -> None:
    """Write CSV with a header; owners are `pid/name/fd/user` joined by `;`."""
    import csv

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for s in sockets:
        owners = "" if s.owners is None else ";".join(f"{o.pid}/{o.name}/{o.fd}/{o.user}" for o in s.owners)
        writer.writerow(
            (
                s.netid.value,
                s.family.value,
                s.state.value,
                s.recv_q,
                s.send_q,
                *_csv_end(s.local, s.inode, False),
                *_csv_end(s.peer, s.inode, True),
                s.inode,
                "" if s.uid is None else s.uid,
                s.netns or "",
                owners,
                service(s) or "",
            )
        )

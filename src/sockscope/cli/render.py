"""Drawing sockets for people and for programs: aligned tables, JSON, JSON Lines and CSV.

`ls` may print tens of thousands of rows and must keep pace with `ss`: the table is built
column by column, by the C accelerator (`_native.c`) when it is there, else with C-level
`map`/`str.format` in Python (same text either way).

Names come from users (unix socket paths, process and namespace names) and may hold any byte
but NUL: the output stays valid in its format whatever they hold. The table and CSV show a
byte that is not UTF-8 as `\xff` and a control character escaped (`\n`, `\x1b`); JSON gives
the name with the same `\xff` escapes and, only when it is not clean UTF-8, its exact bytes in
base64 beside it (`path_b64`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from operator import itemgetter

from .. import native
from ..model import AnyEndpoint, Endpoint, NetlinkEndpoint, Owner, PacketEndpoint, Socket, State, UnixEndpoint, VsockEndpoint
from ..records import NamedTuple

TYPE_CHECKING = False  # importing `typing` costs a tenth of `sockscope -tlnp` on a small host
if TYPE_CHECKING:
    import json
    from typing import IO, Any

PortNames = dict[int, str]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (decoded with surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char.isprintable():
        return char
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """Give text safe to print on one line: bytes that were not UTF-8 as `\\xNN`, control and
    other unprintable characters escaped (`\\n`, `\\x1b`); printable text unchanged."""
    if text.isprintable():
        return text
    return "".join(map(_escape_char, text))


def clean_bytes(text: str) -> bool:
    """Tell whether a name came from clean UTF-8 (no byte was smuggled in by surrogateescape)."""
    return text.isascii() or not any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def escape_undecodable(text: str) -> str:
    """Give text with only the bytes that were not UTF-8 written as `\\xNN` (for JSON strings)."""
    if clean_bytes(text):
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else "\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def host_text(address: str, device: str | None, v6only: bool | None, is_peer: bool) -> str:
    """Give the `address:` part of an inet endpoint as `ss` draws it.

    An inet6 socket on `::` that takes IPv4 too (v6only False) is `*`; a socket bound to a
    device shows it after its local address (`0.0.0.0%lo:`).
    """
    host = "*" if v6only is False and address == "::" else f"[{address}]" if ":" in address else address
    if device is not None and not is_peer:
        host += f"%{escape(device)}"
    return host + ":"


def special_hosts(sockets: Sequence[Socket], is_peer: bool) -> dict[int, str]:
    """Give row -> `address:` text for the rows `host_text` draws differently from the plain
    address: bound to a device, or dual-stack on `::` (C-level scan; the rows are few)."""
    bound = not is_peer and any(map(itemgetter(11), sockets))
    if not bound and False not in map(itemgetter(12), sockets):
        return {}
    position = 6 if is_peer else 5
    special = {}
    for row, (device, flag) in enumerate(zip(map(itemgetter(11), sockets), map(itemgetter(12), sockets), strict=True)):
        if (device is not None and not is_peer) or flag is False:
            special[row] = host_text(sockets[row][position].address, device, flag, is_peer)  # type: ignore[union-attr]
    return special


def inet_texts(ends: Iterable[Endpoint], hosts: dict[str, str], names: PortNames, is_peer: bool, special: dict[int, str] | None = None) -> list[str]:
    """Give `address:port` for a column of inet endpoints (uniques formatted once each).

    `hosts` caches the `address:` part across calls; ports get their service name from `names`;
    `special` gives the `address:` part of some rows instead (see special_hosts).
    """
    ends = list(ends)
    for address in set(map(itemgetter(0), ends)).difference(hosts):
        hosts[address] = f"[{address}]:" if ":" in address else f"{address}:"
    ports = {port: names.get(port) or str(port) for port in set(map(itemgetter(1), ends))}
    if is_peer and 0 in ports:
        ports[0] = "*"
    heads = list(map(hosts.__getitem__, map(itemgetter(0), ends)))
    for row, head in (special or {}).items():
        heads[row] = head
    return list(map(str.__add__, heads, map(ports.__getitem__, map(itemgetter(1), ends))))


class InetCells(NamedTuple):
    """A table column of inet endpoints, drawn straight from the sockets (no text per cell made
    in advance when the C accelerator draws the table)."""

    sockets: list[Socket]
    position: int  # in the Socket: 5 local, 6 peer
    hosts: dict[str, str]
    names: PortNames
    is_peer: bool
    special: dict[int, str]  # row -> its `address:` text, where it is not the plain address

    def texts(self) -> list[str]:
        return inet_texts(map(itemgetter(self.position), self.sockets), self.hosts, self.names, self.is_peer, self.special)


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
            return f"{escape(end.path or '*')} {end.inode if is_peer else inode}"
        if isinstance(end, NetlinkEndpoint):
            if is_peer:  # as ss: the destination group and port of a connected socket
                return f"{end.group}:{end.portid}" if end.protocol else "*"
            port = "kernel" if end.portid == 0 else str(end.portid)
            return f"{end.protocol}:{port}"
        if isinstance(end, PacketEndpoint):
            protocol = "*" if end.protocol == "ALL" else end.protocol  # ss: `*` for every protocol
            return f"{protocol}:{escape(end.interface)}" if not is_peer else "*"
        if isinstance(end, VsockEndpoint):
            return f"{end.cid}:{end.port}"
        return str(end)

    def column(self, sockets: Sequence[Socket], is_peer: bool) -> list[str] | InetCells:
        """Give the local (or peer) endpoint column: InetCells when every row is inet of one kind."""
        index = 6 if is_peer else 5
        netids = set(map(itemgetter(0), sockets))
        special = special_hosts(sockets, is_peer)
        if len(netids) == 1 and set(map(type, map(itemgetter(index), sockets))) <= {Endpoint}:
            return InetCells(list(sockets), index, self.hosts, self.names.get(next(iter(netids)), {}), is_peer, special)
        cells = [self.one(end, s.netid, s.inode, is_peer) for s, end in zip(sockets, map(itemgetter(index), sockets), strict=True)]
        for row, head in special.items():
            end: Endpoint = sockets[row][index]  # type: ignore[assignment]  # inet rows hold Endpoints
            cells[row] = inet_texts([end], {end.address: head}, self.names.get(sockets[row].netid, {}), is_peer)[0]
        return cells


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
    internals: frozenset[str] = frozenset(),
    numeric: bool = False,
) -> None:
    """Write the `ls` table: aligned columns, numbers right-aligned, the Process column last.

    With `extended`, the UID, Inode and Cookie (ss's `sk:`, in hex) columns; with `internals`
    (groups of inventory.INTERNALS), each socket that has some gets an indented second line in
    ss's words (`numeric`: rates in digits, as ss -n).
    """
    columns: list[tuple[str, list[Any] | InetCells | OwnerCells, bool]] = []  # title, cells (str, StrEnum or int), right-aligned
    if netns:
        labels = {label: escape(label or "-") for label in set(map(itemgetter(9), sockets))}
        columns.append(("Netns", list(map(labels.__getitem__, map(itemgetter(9), sockets))), False))
    if netid:
        columns.append(("Netid", list(map(itemgetter(0), sockets)), False))
    columns += [
        ("State", list(map(itemgetter(2), sockets)), False),
        ("Recv-Q", list(map(itemgetter(3), sockets)), True),
        ("Send-Q", list(map(itemgetter(4), sockets)), True),
        ("Local Address:Port", texts.column(sockets, False), False),
        ("Peer Address:Port", texts.column(sockets, True), False),
    ]
    if extended:  # Inode stays the last of them: scripts read it there
        columns.append(("Cookie", ["-" if cookie is None else f"{cookie:x}" for cookie in map(itemgetter(13), sockets)], True))
        columns.append(("UID", ["-" if uid is None else uid for uid in map(itemgetter(8), sockets)], True))
        columns.append(("Inode", list(map(itemgetter(7), sockets)), True))
    if processes:
        columns.append(("Process", OwnerCells(printable_owners(list(map(itemgetter(10), sockets)))), False))
    titles, cells, rights = zip(*columns, strict=True)
    fast = native.accel
    if not internals:
        text = fast.table_text(titles, cells, rights, header) if fast is not None else None
        out.write(text if text is not None else table_text(titles, cells, rights, header))
        return
    # each socket's internals on an indented line under its row, as ss draws them
    from . import internals as inside

    listed = list(sockets)
    if fast is not None:  # the lines written straight into the table
        text = fast.table_text(titles, cells, rights, header, (listed, State.LISTEN, numeric, "timers" in internals, "cgroup" in internals))
        if text is not None:
            out.write(text)
            return
    out.write(table_text(titles, cells, rights, header, inside.lines(listed, internals, numeric)))


def printable_owners(column: list[tuple[Owner, ...] | None]) -> list[tuple[Owner, ...] | None]:
    """Give the owners column with unprintable process and user names escaped (rarely any)."""
    every = list(chain.from_iterable(filter(None, column)))
    if all(map(str.isprintable, set(map(itemgetter(1), every)) | set(map(itemgetter(3), every)))):
        return column
    cleaned = {}
    for owners in set(column):
        if owners:
            cleaned[owners] = tuple(o._replace(name=escape(o.name), user=escape(o.user)) for o in owners)
    return [cleaned.get(owners, owners) if owners else owners for owners in column]


def table_text(
    titles: Sequence[str], columns: Sequence[list[Any] | InetCells | OwnerCells], right: Sequence[bool], header: bool, after: list[str] | None = None
) -> str:
    """Give the aligned table as text: one space between columns, the last left-aligned one unpadded.

    `after` gives a line to write under each row ("" for none).
    """
    columns = [cells.texts() if isinstance(cells, InetCells | OwnerCells) else list(map(str, cells)) for cells in columns]
    widths = [max(len(title), max(map(len, cells), default=0)) for title, cells in zip(titles, columns, strict=True)]
    parts = [f"{{:{'>' if r else '<'}{width}}}" for r, width in zip(right, widths, strict=True)]
    if not right[-1]:
        parts[-1] = "{}"  # no trailing blanks after the last column
    template = " ".join(parts)
    lines = [template.format(*titles).rstrip(" ")] if header else []
    rows = map(template.format, *columns)
    if after is None:
        lines += rows
    else:
        for row, under in zip(rows, after, strict=True):
            lines += (row, under) if under else (row,)
    return "".join(line + "\n" for line in lines)


def _unix_json(path: str | None) -> dict[str, Any]:
    if path is None or clean_bytes(path):
        return {"path": path}
    import base64

    return {"path": escape_undecodable(path), "path_b64": base64.b64encode(path.encode("utf-8", "surrogateescape")).decode("ascii")}


def endpoint_json(end: AnyEndpoint, is_peer: bool, device: str | None = None) -> dict[str, Any]:
    """Give the JSON object of an endpoint (the contract in ARCHITECTURE.md).

    A unix name that is not clean UTF-8 has its undecodable bytes written `\\xNN` in "path" and
    its exact bytes (with the `@` of an abstract name) in base64 in "path_b64", only then.
    An inet local end bound to a device has "device", only then.
    """
    if isinstance(end, UnixEndpoint):
        return {**_unix_json(end.path), "inode": end.inode} if is_peer else _unix_json(end.path)
    if isinstance(end, Endpoint):
        found: dict[str, Any] = {"address": end.address, "port": end.port}
        if device is not None and not is_peer:
            found["device"] = escape_undecodable(device)
        return found
    found = {key: escape_undecodable(value) if isinstance(value, str) else value for key, value in end._asdict().items()}
    if isinstance(end, NetlinkEndpoint) and not is_peer:
        del found["group"]  # a destination group belongs to the peer of a connected socket
    return found


def socket_json(sock: Socket, service: str | None, internals: frozenset[str] = frozenset(), cookie: bool = False) -> dict[str, Any]:
    """Give the JSON object of one socket ("v6only" only where the kernel tells it; "cookie" and
    the internals groups only when asked for). JsonText gives the same, faster."""
    found: dict[str, Any] = {
        "netid": sock.netid.value,
        "family": sock.family.value,
        "state": sock.state.value,
        "recv_q": sock.recv_q,
        "send_q": sock.send_q,
        "local": endpoint_json(sock.local, False, sock.device),
        "peer": endpoint_json(sock.peer, True),
        "inode": sock.inode,
        "uid": sock.uid,
        "netns": None if sock.netns is None else escape_undecodable(sock.netns),
        "owners": None
        if sock.owners is None
        else [{"pid": o.pid, "name": escape_undecodable(o.name), "fd": o.fd, "user": escape_undecodable(o.user)} for o in sock.owners],
        "service": service,
    }
    if sock.v6only is not None:
        found["v6only"] = sock.v6only
    if cookie:
        found["cookie"] = sock.cookie
    if internals:
        from . import internals as inside

        found.update(inside.json_value(sock.internals, internals, escape_undecodable))
    return found


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
    return _encoder().encode(escape_undecodable(value) if isinstance(value, str) else value)


_SOCKET = (
    '{"netid": "%s", "family": "%s", "state": "%s", "recv_q": %d, "send_q": %d, "local": %s, "peer": %s, '
    '"inode": %d, "uid": %s, "netns": %s, "owners": %s, "service": %s%s}'
)
_V6ONLY = {None: "", True: ', "v6only": true', False: ', "v6only": false'}


class JsonText:
    """Socket -> its JSON text, equal to `json.dumps(socket_json(...))` but several times faster.

    Only the fields that can hold arbitrary text (paths, process and user names, labels) go
    through the JSON encoder; the rest are numbers and fixed words.
    """

    def __init__(self, service: Callable[[Socket], str | None], internals: frozenset[str] = frozenset(), cookie: bool = False) -> None:
        self.service = service
        self.internals = internals
        self.cookie = cookie
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

    def __call__(self, s: Socket, inside: str | None = None) -> str:
        """Give the JSON text of a socket; `inside`: its internals members, when made already (json_texts)."""
        local, peer = s.local, s.peer
        more = _V6ONLY[s.v6only]
        if self.cookie:
            more += f', "cookie": {"null" if s.cookie is None else s.cookie}'
        if inside is not None:
            more += inside
        elif self.internals:
            from . import internals

            more += internals.json_text(s.internals, self.internals, self.word)
        return _SOCKET % (
            s.netid.value,
            s.family.value,
            s.state.value,
            s.recv_q,
            s.send_q,
            f'{{"address": "{local.address}", "port": {local.port}}}'
            if type(local) is Endpoint and s.device is None
            else _dumps(endpoint_json(local, False, s.device)),
            f'{{"address": "{peer.address}", "port": {peer.port}}}' if type(peer) is Endpoint else _dumps(endpoint_json(peer, True)),
            s.inode,
            "null" if s.uid is None else s.uid,
            self.word(s.netns),
            self.owners(s.owners),
            self.word(self.service(s)),
            more,
        )


def json_array(
    out: IO[str], sockets: Sequence[Socket], service: Callable[[Socket], str | None], internals: frozenset[str] = frozenset(), cookie: bool = False
) -> None:
    """Write a JSON array of sockets, one object per line for readability and streaming tools.

    `internals` (groups of inventory.INTERNALS) and `cookie` add their keys (see JsonText).
    """
    if not sockets:
        out.write("[]\n")
        return
    out.write("[\n")
    out.write(",\n".join(_json_texts(sockets, service, internals, cookie)))
    out.write("\n]\n")


def json_lines(
    out: IO[str], sockets: Sequence[Socket], service: Callable[[Socket], str | None], internals: frozenset[str] = frozenset(), cookie: bool = False
) -> None:
    """Write one JSON object per line."""
    if sockets:
        out.write("\n".join(_json_texts(sockets, service, internals, cookie)))
        out.write("\n")


def _json_texts(sockets: Sequence[Socket], service: Callable[[Socket], str | None], internals: frozenset[str], cookie: bool) -> Iterable[str]:
    text = JsonText(service, internals, cookie)
    if not internals:
        return map(text, sockets)
    from . import internals as inside

    listed = list(sockets)
    return map(text, listed, inside.json_texts(listed, internals, text.word))


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
    "device",
    "v6only",
)


def _csv_end(end: AnyEndpoint, inode: int, is_peer: bool) -> tuple[object, object]:
    if isinstance(end, Endpoint):
        return end.address, end.port
    if isinstance(end, UnixEndpoint):
        return escape(end.path or ""), end.inode if is_peer else inode
    first, second = end[0], end[1]
    return escape(first) if isinstance(first, str) else first, escape(second) if isinstance(second, str) else second


def csv_rows(
    out: IO[str], sockets: Iterable[Socket], service: Callable[[Socket], str | None], internals: frozenset[str] = frozenset(), cookie: bool = False
) -> None:
    """Write CSV with a header; owners are `pid/name/fd/user` joined by `;`.

    `cookie` adds the column "cookie"; `internals` (groups of inventory.INTERNALS) add flat
    columns after the others (see internals.csv_fields).

    Names are escaped as in the table, so every row is one line (the exact bytes of a name are
    in the JSON); a name holding a comma or a quote is quoted as CSV does.
    """
    import csv

    from . import internals as inside

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((*CSV_FIELDS, *(["cookie"] if cookie else []), *inside.csv_fields(internals)))
    people: dict[tuple[str, str], tuple[str, str]] = {}
    for s in sockets:
        owners = ""
        if s.owners is not None:
            parts = []
            for pid, name, fd, user in s.owners:
                shown = people.get((name, user))
                if shown is None:
                    shown = people[(name, user)] = (escape(name), escape(user))
                parts.append(f"{pid}/{shown[0]}/{fd}/{shown[1]}")
            owners = ";".join(parts)
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
                escape(s.netns) if s.netns else "",
                owners,
                service(s) or "",
                escape(s.device) if s.device else "",
                "" if s.v6only is None else str(s.v6only).lower(),
                *([("" if s.cookie is None else s.cookie)] if cookie else []),
                *(inside.csv_cells(s.internals, internals, escape) if internals else []),
            )
        )

"""sock_diag over netlink: build requests, frame replies and decode them into Sockets.

Pure code: bytes in, records out. `netlink.py` does the I/O. The inet decoder is the hot
path of `ls` (tens of thousands of messages a run): replies whose messages all have one
length are decoded column-wise with `struct.iter_unpack` and C-level `map`/`zip`, so no
Python code runs per socket; only irregular replies walk the messages one by one.
"""

from __future__ import annotations

import _socket as socket  # socket.py adds ~2 ms of start-up (enum conversions) and nothing used here
import errno
import os
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat

from .. import native
from ..errors import DecodeError, PermissionDenied, SourceUnavailable
from ..model import (
    KERNEL_STATES,
    Endpoint,
    Family,
    Internals,
    NetId,
    NetlinkEndpoint,
    PacketEndpoint,
    Socket,
    SocketMemory,
    State,
    TcpInfo,
    Timer,
    UnixEndpoint,
    VsockEndpoint,
)

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300

AF_VSOCK = 40

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_ATTR = struct.Struct("=HH")  # nlattr: len, type
_ERRNO = struct.Struct("=i")

# inet_diag_msg after the netlink header: family, state, timer, retrans, sport, dport (big
# endian), src[16], dst[16], ifindex, cookie[8], expires, rqueue, wqueue, uid, inode.
_INET_MSG_SIZE = 72
_INET_FIELDS = "=16xBB6x16s16sIQ4xIIII"  # family, state, src, dst, ifindex, cookie, rqueue, wqueue, uid, inode
_INET_PORTS = ">20xHH"
INET_DIAG_SKV6ONLY = 11
#: Kernel states (TCP_CLOSE, TCP_LISTEN) whose inet6 sockets carry INET_DIAG_SKV6ONLY.
V6ONLY_STATES = frozenset({7, 10})
IPPROTO_MPTCP = 262

Span = tuple[int, int, int]
"""A run of `count` consecutive messages of equal `length` starting at byte `offset`."""


def request(payload: bytes, seq: int = 1) -> bytes:
    """Give a SOCK_DIAG_BY_FAMILY dump request wrapping a family-specific request body."""
    return _HEADER.pack(_HEADER.size + len(payload), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload


INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_REQ_PROTOCOL = 3
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
_BC_OP = struct.Struct("=BBH")  # inet_diag_bc_op: code, yes (bytes to skip on true), no (on false)


def local_port_bytecode(port: int) -> bytes:
    """Give an inet_diag filter program keeping sockets whose local port is `port`.

    Two range tests (S_GE, then S_LE), each followed by the operand op that carries the port
    in its `no` field. A socket matches when the program runs exactly to its end; a failed test
    jumps 4 bytes past the end. (S_GE/S_LE are in every kernel with inet_diag; S_EQ needs 4.16.)
    """
    return _BC_OP.pack(INET_DIAG_BC_S_GE, 8, 16 + 4) + _BC_OP.pack(0, 0, port) + _BC_OP.pack(INET_DIAG_BC_S_LE, 8, 8 + 4) + _BC_OP.pack(0, 0, port)


def inet_request(family: int, protocol: int, states: int, ext: int = 0, local_port: int | None = None) -> bytes:
    """Give an inet_diag_req_v2 dump request for one family and protocol and a state mask.

    For raw sockets the pad byte is `sdiag_raw_protocol`, and only IPPROTO_RAW there means
    "raw sockets of every protocol"; with 0 the kernel matches none. With `local_port`, the
    kernel itself keeps only the sockets bound to that port (a bytecode filter). A protocol
    past 255 (MPTCP, 262) does not fit `sdiag_protocol`: it goes in an INET_DIAG_REQ_PROTOCOL
    attribute, which kernels without it (before 5.10) refuse rather than misread.
    """
    raw_protocol = socket.IPPROTO_RAW if protocol == socket.IPPROTO_RAW else 0
    body = struct.pack("=BBBBI48x", family, protocol & 0xFF, ext, raw_protocol, states)
    if protocol > 0xFF:
        body += _ATTR.pack(_ATTR.size + 4, INET_DIAG_REQ_PROTOCOL) + struct.pack("=I", protocol)
    if local_port is not None:
        program = local_port_bytecode(local_port)
        body += _ATTR.pack(_ATTR.size + len(program), INET_DIAG_REQ_BYTECODE) + program
    return request(body)


SOCK_DESTROY = 21
NLM_F_ACK = 0x4


def inet_ids(chunk: bytes, spans: Iterable[Span]) -> dict[int, tuple[int, int, bytes]]:
    """Give inode -> (family, state, inet_diag_sockid bytes) for inet_diag replies: what
    SOCK_DESTROY needs to name one socket exactly (ports, addresses, interface, cookie)."""
    ids = {}
    for message in messages(chunk, spans):
        if len(message) < _HEADER.size + _INET_MSG_SIZE:
            raise DecodeError(f"netlink inet_diag reply: message of {len(message)} bytes is shorter than inet_diag_msg")
        family, state = message[16], message[17]
        inode = struct.unpack_from("=I", message, _HEADER.size + 68)[0]
        ids[inode] = (family, state, bytes(message[_HEADER.size + 4 : _HEADER.size + 52]))
    return ids


def destroy_request(family: int, protocol: int, state: int, sockid: bytes) -> bytes:
    """Give a SOCK_DESTROY request closing the one socket `sockid` names (like `ss -K`)."""
    body = struct.pack("=BBBBI", family, protocol, 0, 0, 1 << state) + sockid
    return _HEADER.pack(_HEADER.size + len(body), SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body


def ack_error(reply: bytes) -> int:
    """Give the errno of a netlink acknowledgement (0: done); DecodeError when it is not one."""
    if len(reply) < _HEADER.size + 4:
        raise DecodeError(f"netlink acknowledgement: {len(reply)} bytes is too short")
    kind = _HEADER.unpack_from(reply, 0)[1]
    if kind != NLMSG_ERROR:
        raise DecodeError(f"netlink acknowledgement: message type {kind}, not NLMSG_ERROR")
    return -int(_ERRNO.unpack_from(reply, _HEADER.size)[0])


UDIAG_SHOW_MEMINFO = 0x20
UNIX_DIAG_MEMINFO = 5


def unix_request(states: int, memory: bool = False) -> bytes:
    """Give a unix_diag_req asking for names, peers, queues and uids (and memory, with `memory`)."""
    show = 0x01 | 0x04 | 0x10 | 0x40  # UDIAG_SHOW_NAME | PEER | RQLEN | UID
    if memory:
        show |= UDIAG_SHOW_MEMINFO
    return request(struct.pack("=BBHIII8x", socket.AF_UNIX, 0, 0, states, 0, show))


NDIAG_SHOW_MEMINFO = 0x1
NETLINK_DIAG_MEMINFO = 0
NETLINK_CONNECTED = 1
PACKET_SHOW_INFO = 0x01
PACKET_SHOW_MEMINFO = 0x10
PACKET_DIAG_INFO = 0
PACKET_DIAG_UID = 5
PACKET_DIAG_MEMINFO = 6
SK_MEMINFO_RMEM_ALLOC = 0
SK_MEMINFO_WMEM_ALLOC = 2


def netlink_request() -> bytes:
    """Give a netlink_diag_req for every netlink protocol, with memory counters (the queues)."""
    return request(struct.pack("=BBHII8x", socket.AF_NETLINK, 255, 0, 0, NDIAG_SHOW_MEMINFO))


def packet_request() -> bytes:
    """Give a packet_diag_req asking for the interface, uid and memory counters."""
    return request(struct.pack("=BBHII8x", socket.AF_PACKET, 0, 0, 0, PACKET_SHOW_INFO | PACKET_SHOW_MEMINFO))


def vsock_request(states: int) -> bytes:
    """Give a vsock_diag_req for every vsock socket in the state mask."""
    return request(struct.pack("=BBHIII8x", AF_VSOCK, 0, 0, states, 0, 0))


def frame(chunk: bytes, source: str) -> tuple[list[Span], bool]:
    """Give the runs of equal-length SOCK_DIAG messages in one recv() chunk, and whether it ends the dump.

    Raises PermissionDenied or SourceUnavailable for a kernel error reply, DecodeError for a
    malformed chunk.
    """
    size = len(chunk)
    if size >= _HEADER.size and size % 4 == 0:
        length, kind = _HEADER.unpack_from(chunk, 0)[:2]
        if kind == SOCK_DIAG_BY_FAMILY and length >= _HEADER.size and length % 4 == 0 and size % length == 0:
            words = memoryview(chunk).cast("I")
            step = length // 4
            if words[::step].tolist().count(length) == size // length:
                kinds = set(words[1::step].tolist())
                if len(kinds) == 1 and kinds.pop() & 0xFFFF == SOCK_DIAG_BY_FAMILY:
                    return [(0, length, size // length)], False
    return _walk(chunk, source)


def _walk(chunk: bytes, source: str) -> tuple[list[Span], bool]:
    spans: list[Span] = []
    offset, size = 0, len(chunk)
    while offset < size:
        if size - offset < _HEADER.size:
            raise DecodeError(f"{source}: truncated netlink header at byte {offset} of {size}")
        length, kind = _HEADER.unpack_from(chunk, offset)[:2]
        if length < _HEADER.size or offset + length > size:
            raise DecodeError(f"{source}: netlink message at byte {offset} claims {length} bytes, {size - offset} left")
        if kind == NLMSG_DONE:
            # A dump the kernel cannot do (no diag module for it) ends at once with -errno here.
            if length >= 20 and (code := _ERRNO.unpack_from(chunk, offset + 16)[0]) < 0:
                raise kernel_error(-code, source)
            return spans, True
        if kind == NLMSG_ERROR:
            code = -_ERRNO.unpack_from(chunk, offset + 16)[0] if length >= 20 else errno.EIO
            raise kernel_error(code, source)
        if kind == SOCK_DIAG_BY_FAMILY:
            if spans and spans[-1][1] == length and spans[-1][0] + spans[-1][1] * spans[-1][2] == offset:
                start, _, count = spans[-1]
                spans[-1] = (start, length, count + 1)
            else:
                spans.append((offset, length, 1))
        offset += (length + 3) & ~3
    return spans, False


def kernel_error(code: int, source: str) -> Exception:
    """Give the typed error for an errno the kernel answered a diag request with."""
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{source}: the kernel refused ({os.strerror(code)}); run as root")
    if code in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
        return SourceUnavailable(f"{source}: not supported by this kernel ({os.strerror(code)})")
    return DecodeError(f"{source}: the kernel answered with error {code} ({os.strerror(code)})")


def messages(chunk: bytes, spans: Iterable[Span]) -> Iterator[memoryview]:
    """Yield each message of the spans (header included) as a memoryview of the chunk."""
    view = memoryview(chunk)
    for offset, length, count in spans:
        for index in range(count):
            start = offset + index * length
            yield view[start : start + length]


# ---------------------------------------------------------------- inet (tcp, udp, raw)

_INET_NETID = {socket.IPPROTO_TCP: NetId.TCP, socket.IPPROTO_UDP: NetId.UDP, socket.IPPROTO_RAW: NetId.RAW, IPPROTO_MPTCP: NetId.MPTCP}
_struct_cache: dict[tuple[str, int], struct.Struct] = {}


def _struct(fields: str, length: int) -> struct.Struct:
    key = (fields, length)
    compiled = _struct_cache.get(key)
    if compiled is None:
        compiled = _struct_cache[key] = struct.Struct(f"{fields}{length - struct.calcsize(fields)}x")
    return compiled


class AddressText:
    """Turns raw 16-byte kernel addresses into canonical text, remembering each one seen."""

    def __init__(self) -> None:
        self.v4: dict[bytes, str] = {}
        self.v6: dict[bytes, str] = {}

    def column(self, family: int, raw: tuple[bytes, ...]) -> map[str]:
        """Give the text of every address in `raw` (C-level map over a per-run cache)."""
        cache = self.v4 if family == socket.AF_INET else self.v6
        for value in set(raw).difference(cache):
            cache[value] = socket.inet_ntop(family, value[:4] if family == socket.AF_INET else value)
        return map(cache.__getitem__, raw)


def _no_device(index: int) -> str:
    return str(index)


class Devices:
    """Names interfaces by index for one run, asking `name` once per index (0: not bound, None)."""

    def __init__(self, name: Callable[[int], str] = _no_device) -> None:
        self.name = name
        self.known: dict[int, str | None] = {0: None}

    def __call__(self, index: int) -> str | None:
        if index in self.known:
            return self.known[index]
        found = self.known[index] = self.name(index)
        return found


def v6only_flag(message: memoryview) -> bool | None:
    """Give INET_DIAG_SKV6ONLY of one inet_diag message (header included), None when absent."""
    flag = attributes(message, _HEADER.size + _INET_MSG_SIZE, "netlink inet_diag reply").get(INET_DIAG_SKV6ONLY)
    return None if flag is None or len(flag) < 1 else bool(flag[0])


def _v6only_column(body: memoryview, length: int, states: tuple[int, ...]) -> list[bool | None]:
    flags: list[bool | None] = [None] * len(states)
    for index, state in enumerate(states):
        if state in V6ONLY_STATES:
            flags[index] = v6only_flag(body[index * length : (index + 1) * length])
    return flags


def _internals_column(body: memoryview, length: int, count: int, asked: frozenset[str]) -> list[Internals]:
    timers, cgroups = "timers" in asked, "cgroup" in asked
    out = []
    for index in range(count):
        message = body[index * length : (index + 1) * length]
        attrs = attributes(message, _HEADER.size + _INET_MSG_SIZE, "netlink inet_diag reply")
        out.append(internals(message, attrs, timers, cgroups))
    return out


def decode_inet(
    chunk: bytes,
    spans: Iterable[Span],
    protocol: int,
    addresses: AddressText,
    netns: str | None = None,
    devices: Devices | None = None,
    internals: frozenset[str] = frozenset(),
) -> list[Socket]:
    """Give the Sockets of inet_diag replies (one protocol) in the spans of a chunk.

    `devices` names the interface a socket is bound to; without it the index is given as text.
    With `internals` (groups of inventory.INTERNALS), each Socket carries its Internals.
    """
    netid = _INET_NETID[protocol]
    devices = devices or Devices()
    spans = list(spans)
    fast = native.accel
    if fast is not None:  # the whole chunk in one call, or None for anything unusual in it
        inside = None
        if internals:
            want = ("timers" in internals) | ("cgroup" in internals) << 1
            inside = (want, Internals, TcpInfo, SocketMemory, Timer, _TIMERS)
        rows = fast.inet_sockets(chunk, spans, netid, Family.INET, Family.INET6, KERNEL_STATES, Endpoint, Socket, netns, devices, inside)
        if rows is not None:
            return rows  # type: ignore[no-any-return]
    out: list[Socket] = []
    view = memoryview(chunk)
    for offset, length, count in spans:
        if length < _HEADER.size + _INET_MSG_SIZE:
            raise DecodeError(f"netlink inet_diag reply: message of {length} bytes is shorter than inet_diag_msg")
        body = view[offset : offset + length * count]
        rows = list(_struct(_INET_FIELDS, length).iter_unpack(body))
        families, states, src, dst, ifindex, cookies, rqueue, wqueue, uid, inode = zip(*rows, strict=False)
        if sys.byteorder == "big":  # the cookie's two u32 words come low word first
            cookies = tuple((cookie >> 32) | (cookie & 0xFFFFFFFF) << 32 for cookie in cookies)
        ports = zip(*_struct(_INET_PORTS, length).iter_unpack(body), strict=False)
        sport, dport = ports
        family_set = set(families)
        if len(family_set) != 1 or not family_set <= {socket.AF_INET, socket.AF_INET6}:
            raise DecodeError(f"netlink inet_diag reply: unexpected address family {sorted(family_set)}")
        family = family_set.pop()
        if max(states) >= len(KERNEL_STATES):
            raise DecodeError(f"netlink inet_diag reply: unknown socket state {max(states)}")
        local = map(tuple.__new__, repeat(Endpoint), zip(addresses.column(family, src), sport, strict=False))
        peer = map(tuple.__new__, repeat(Endpoint), zip(addresses.column(family, dst), dport, strict=False))
        fam = Family.INET if family == socket.AF_INET else Family.INET6
        bound = map(devices, ifindex) if any(ifindex) else repeat(None)
        v6only = _v6only_column(body, length, states) if family == socket.AF_INET6 and V6ONLY_STATES.intersection(states) else repeat(None)
        extra = _internals_column(body, length, len(rows), internals) if internals else repeat(None)
        out += map(
            tuple.__new__,
            repeat(Socket),
            zip(
                repeat(netid),
                repeat(fam),
                map(KERNEL_STATES.__getitem__, states),
                rqueue,
                wqueue,
                local,
                peer,
                inode,
                uid,
                repeat(netns),
                repeat(None),
                bound,
                v6only,
                cookies,
                extra,
            ),
        )
    return out


# ---------------------------------------------------------------- attributes (everything else)


def attributes(message: memoryview, start: int, source: str) -> dict[int, memoryview]:
    """Give the netlink attributes of one message from byte `start` on, by type (last one wins)."""
    found: dict[int, memoryview] = {}
    offset, size = start, len(message)
    while offset + _ATTR.size <= size:
        length, kind = _ATTR.unpack_from(message, offset)
        if length < _ATTR.size or offset + length > size:
            raise DecodeError(f"{source}: attribute {kind} at byte {offset} claims {length} bytes, {size - offset} left")
        found[kind & 0x3FFF] = message[offset + _ATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


# ---------------------------------------------------------------- internals (ls -i -m -o --cgroup)

INET_DIAG_MEMINFO = 1
INET_DIAG_INFO = 2
INET_DIAG_CONG = 4
INET_DIAG_SKMEMINFO = 7
INET_DIAG_CGROUP_ID = 21
#: idiag_ext bits asking for each attribute (bit n asks for attribute n + 1).
EXT_MEMINFO = 1 << (INET_DIAG_MEMINFO - 1)
EXT_INFO = 1 << (INET_DIAG_INFO - 1)
EXT_CONG = 1 << (INET_DIAG_CONG - 1)
EXT_SKMEMINFO = 1 << (INET_DIAG_SKMEMINFO - 1)

# struct tcp_info, in the order of linux/tcp.h. The first part (to total_retrans, 104 bytes)
# is in every kernel with inet_diag; later kernels appended the rest a few fields at a time
# (pacing rates in 3.15, bytes_acked 4.1, segs 4.2, ... rcv_wnd and rehash 6.2), so a field
# past the length the kernel sent is None.
_TCP_INFO_HEAD = struct.Struct("=8B24I")
_TCP_INFO_TAIL = (
    "Q",  # pacing_rate
    "Q",  # max_pacing_rate
    "Q",  # bytes_acked
    "Q",  # bytes_received
    "I",  # segs_out
    "I",  # segs_in
    "I",  # notsent_bytes
    "I",  # min_rtt
    "I",  # data_segs_in
    "I",  # data_segs_out
    "Q",  # delivery_rate
    "Q",  # busy_time
    "Q",  # rwnd_limited
    "Q",  # sndbuf_limited
    "I",  # delivered
    "I",  # delivered_ce
    "Q",  # bytes_sent
    "Q",  # bytes_retrans
    "I",  # dsack_dups
    "I",  # reord_seen
    "I",  # rcv_ooopack
    "I",  # snd_wnd
    "I",  # rcv_wnd
    "I",  # rehash
)
_TCP_INFO_FULL = struct.Struct("=8B24I" + "".join(_TCP_INFO_TAIL))
_TCP_INFO_PARTS = [struct.Struct("=" + field) for field in _TCP_INFO_TAIL]
_RATE_FIELDS = {0, 1, 10}  # pacing_rate, max_pacing_rate, delivery_rate: bytes/s in the kernel
_TIMERS = ("", "on", "keepalive", "timewait", "persist", "delack")
#: A rate of all ones: the kernel's "no limit" (sk_max_pacing_rate unset), kept as it is.
NO_RATE_LIMIT = (1 << 64) - 1


def tcp_info(raw: bytes | memoryview) -> TcpInfo:
    """Give the TcpInfo of a struct tcp_info as the kernel sent it (any kernel's length).

    Rates become bits per second, as `ss` prints them, except the kernel's "no limit" (all
    ones, NO_RATE_LIMIT), which stays as it is; a field the kernel did not send is None.
    """
    if len(raw) < _TCP_INFO_HEAD.size:
        raise DecodeError(f"tcp_info of {len(raw)} bytes is shorter than the {_TCP_INFO_HEAD.size} every kernel sends")
    head = _TCP_INFO_HEAD.unpack_from(raw)
    wscale, flags = head[6], head[7]
    values = [*head[:6], wscale & 0xF, wscale >> 4, bool(flags & 1), *head[8:]]
    tail: list[int | None]
    if len(raw) >= _TCP_INFO_FULL.size:  # this kernel's or a newer one's: every field at once
        tail = list(_TCP_INFO_FULL.unpack_from(raw)[len(head) :])
    else:
        offset = _TCP_INFO_HEAD.size
        tail = []
        for part in _TCP_INFO_PARTS:
            tail += part.unpack_from(raw, offset) if offset + part.size <= len(raw) else (None,)
            offset += part.size
    for index in _RATE_FIELDS:
        rate = tail[index]
        if rate is not None and rate != NO_RATE_LIMIT:
            tail[index] = rate * 8
    return TcpInfo(*values, *tail)


def socket_memory(raw: bytes | memoryview) -> SocketMemory:
    """Give the SocketMemory of an INET_DIAG_SKMEMINFO (or UNIX_DIAG_MEMINFO) array of u32."""
    count = len(raw) // 4
    if count < 7:
        raise DecodeError(f"socket memory of {len(raw)} bytes is shorter than the 28 every kernel sends")
    fields = struct.unpack_from(f"={min(count, 9)}I", raw)
    return SocketMemory(*fields)


def timer(kind: int, expires_ms: int, retransmits: int) -> Timer | None:
    """Give the pending timer an inet_diag_msg names (idiag_timer, _expires, _retrans), or None."""
    if kind == 0:
        return None
    name = _TIMERS[kind] if kind < len(_TIMERS) else "unknown"
    return Timer(name, expires_ms if expires_ms < 1 << 31 else expires_ms - (1 << 32), retransmits)


_INET_TIMER = struct.Struct("=2xBB48xI")  # idiag_timer, idiag_retrans, idiag_expires


def internals(message: memoryview, attrs: dict[int, memoryview], timers: bool = False, cgroups: bool = False) -> Internals:
    """Give the Internals of one inet_diag message (header included) and its attributes.

    Groups come from what the reply holds (the request's idiag_ext chose it): tcp_info and the
    congestion algorithm, socket memory; the timer from the message itself when `timers`, the
    cgroup id when `cgroups`. The cgroup path is left for the caller (it needs /sys).
    """
    info = attrs.get(INET_DIAG_INFO)
    cong = attrs.get(INET_DIAG_CONG)
    memory = attrs.get(INET_DIAG_SKMEMINFO)
    pending = None
    if timers:
        kind, retrans, expires = _INET_TIMER.unpack_from(message, _HEADER.size)
        pending = timer(kind, expires, retrans)
    cgroup = attrs.get(INET_DIAG_CGROUP_ID) if cgroups else None
    return Internals(
        tcp_info(info) if info is not None and len(info) >= _TCP_INFO_HEAD.size else None,
        bytes(cong).split(b"\0", 1)[0].decode("ascii", "replace") if cong is not None else None,
        socket_memory(memory) if memory is not None else None,
        pending,
        int(struct.unpack_from("=Q", cgroup)[0]) if cgroup is not None and len(cgroup) >= 8 else None,
    )


def _u32(value: memoryview | None, index: int = 0) -> int | None:
    if value is None or len(value) < 4 * (index + 1):
        return None
    return int(struct.unpack_from("=I", value, 4 * index)[0])


_UNIX_NETID = {socket.SOCK_STREAM: NetId.UNIX_STREAM, socket.SOCK_DGRAM: NetId.UNIX_DGRAM, socket.SOCK_SEQPACKET: NetId.UNIX_SEQPACKET}
_UNIX_MSG = struct.Struct("=BBBxIII")  # family, type, state, pad, inode, cookie (low, high word)


def unix_path(raw: bytes) -> str | None:
    """Give a unix socket name as text: `@name` for abstract names, None for unnamed sockets."""
    if not raw:
        return None
    if raw[0] == 0:
        return "@" + raw[1:].decode("utf-8", "surrogateescape")
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def decode_unix(chunk: bytes, spans: Iterable[Span], netns: str | None = None, memory: bool = False) -> list[Socket]:
    """Give the Sockets of unix_diag replies; peers carry the peer's inode (path filled later).

    With `memory`, each Socket carries Internals holding its memory (UNIX_DIAG_MEMINFO).
    """
    source = "netlink unix_diag reply"
    out: list[Socket] = []
    for message in messages(chunk, spans):
        if len(message) < _HEADER.size + _UNIX_MSG.size:
            raise DecodeError(f"{source}: message of {len(message)} bytes is shorter than unix_diag_msg")
        _family, kind, state, inode, cookie_low, cookie_high = _UNIX_MSG.unpack_from(message, _HEADER.size)
        attrs = attributes(message, _HEADER.size + _UNIX_MSG.size, source)
        name = attrs.get(0)
        rqlen = attrs.get(4)
        netid = _UNIX_NETID.get(kind)
        if netid is None or state >= len(KERNEL_STATES):
            raise DecodeError(f"{source}: unknown socket type {kind} or state {state}")
        out.append(
            Socket(
                netid,
                Family.UNIX,
                KERNEL_STATES[state],
                _u32(rqlen, 0) or 0,
                _u32(rqlen, 1) or 0,
                UnixEndpoint(unix_path(bytes(name)) if name is not None else None, 0),
                UnixEndpoint(None, _u32(attrs.get(2)) or 0),
                inode,
                _u32(attrs.get(7)),
                netns,
                cookie=cookie_low | cookie_high << 32,
                internals=_unix_internals(attrs.get(UNIX_DIAG_MEMINFO)) if memory else None,
            )
        )
    return out


def _unix_internals(meminfo: memoryview | None) -> Internals:
    return Internals(memory=socket_memory(meminfo) if meminfo is not None and len(meminfo) >= 28 else None)


NETLINK_PROTOCOLS = {
    0: "rtnl", 1: "unused", 2: "usersock", 3: "fw", 4: "tcpdiag", 5: "nflog", 6: "xfrm",
    7: "selinux", 8: "iscsi", 9: "audit", 10: "fiblookup", 11: "connector", 12: "nft",
    13: "ip6fw", 14: "dec-rt", 15: "uevent", 16: "genl", 18: "scsi-trans", 19: "ecryptfs",
    20: "rdma", 21: "crypto", 22: "smc",
}  # fmt: skip


def netlink_protocol(number: int) -> str:
    """Give the short name `ss` uses for a netlink protocol number."""
    return NETLINK_PROTOCOLS.get(number, str(number))


#: The peer of a netlink socket that is not connected.
NETLINK_UNCONNECTED = NetlinkEndpoint("", 0, 0)
_NETLINK_MSG = struct.Struct("=BBBBIIII8x")  # family, type, protocol, state, portid, dst_portid, dst_group, inode


def decode_netlink(chunk: bytes, spans: Iterable[Span], netns: str | None = None) -> list[Socket]:
    """Give the Sockets of netlink_diag replies; queues come from the memory counters.

    Every netlink socket is UNCONN, as `ss` and /proc/net/netlink have it: "connected" only
    fixes the destination (port id and group) of what the socket sends, which is the peer.
    """
    source = "netlink netlink_diag reply"
    out: list[Socket] = []
    for message in messages(chunk, spans):
        if len(message) < _HEADER.size + _NETLINK_MSG.size:
            raise DecodeError(f"{source}: message of {len(message)} bytes is shorter than netlink_diag_msg")
        _f, _t, protocol, state, portid, dst_portid, dst_group, inode = _NETLINK_MSG.unpack_from(message, _HEADER.size)
        meminfo = attributes(message, _HEADER.size + _NETLINK_MSG.size, source).get(NETLINK_DIAG_MEMINFO)
        name = netlink_protocol(protocol)
        out.append(
            Socket(
                NetId.NETLINK,
                Family.NETLINK,
                State.UNCONN,
                _u32(meminfo, SK_MEMINFO_RMEM_ALLOC) or 0,
                _u32(meminfo, SK_MEMINFO_WMEM_ALLOC) or 0,
                NetlinkEndpoint(name, portid),
                NetlinkEndpoint(name, dst_portid, dst_group) if state == NETLINK_CONNECTED else NETLINK_UNCONNECTED,
                inode,
                None,
                netns,
            )
        )
    return out


ETHER_PROTOCOLS = {0x0003: "ALL", 0x0800: "ip", 0x0806: "arp", 0x86DD: "ipv6", 0x8100: "802.1Q", 0x88CC: "lldp"}


def ether_protocol(number: int) -> str:
    """Give the name `ss` uses for an ethernet protocol number (hex when unknown)."""
    return ETHER_PROTOCOLS.get(number, f"0x{number:04x}")


_PACKET_MSG = struct.Struct("=BBHI8x")  # family, type, num (the kernel gives it in host order), inode
_PACKET_NETID = {socket.SOCK_RAW: NetId.PACKET_RAW, socket.SOCK_DGRAM: NetId.PACKET_DGRAM}


def decode_packet(chunk: bytes, spans: Iterable[Span], interface: Callable[[int], str], netns: str | None = None) -> list[Socket]:
    """Give the Sockets of packet_diag replies; `interface` names an ifindex (0 -> `*`).

    Recv-Q is the memory of queued packets (sk_rmem_alloc), as `ss` and /proc/net/packet give
    it; packet sockets queue nothing to send, so Send-Q is 0 as in `ss`.
    """
    source = "netlink packet_diag reply"
    out: list[Socket] = []
    for message in messages(chunk, spans):
        if len(message) < _HEADER.size + _PACKET_MSG.size:
            raise DecodeError(f"{source}: message of {len(message)} bytes is shorter than packet_diag_msg")
        _f, kind, num, inode = _PACKET_MSG.unpack_from(message, _HEADER.size)
        attrs = attributes(message, _HEADER.size + _PACKET_MSG.size, source)
        meminfo = attrs.get(PACKET_DIAG_MEMINFO)
        local = PacketEndpoint(ether_protocol(num), interface(_u32(attrs.get(PACKET_DIAG_INFO)) or 0))
        out.append(
            Socket(
                _PACKET_NETID.get(kind, NetId.PACKET_RAW),
                Family.PACKET,
                State.UNCONN,
                _u32(meminfo, SK_MEMINFO_RMEM_ALLOC) or 0,
                0,
                local,
                PacketEndpoint("", "*"),
                inode,
                _u32(attrs.get(PACKET_DIAG_UID)),
                netns,
            )
        )
    return out


_VSOCK_MSG = struct.Struct("=BBBBIIIII8x")  # family, type, state, shutdown, src cid/port, dst cid/port, inode
_VSOCK_NETID = {socket.SOCK_STREAM: NetId.VSOCK_STREAM, socket.SOCK_DGRAM: NetId.VSOCK_DGRAM, socket.SOCK_SEQPACKET: NetId.VSOCK_SEQPACKET}


def decode_vsock(chunk: bytes, spans: Iterable[Span], netns: str | None = None) -> list[Socket]:
    """Give the Sockets of vsock_diag replies."""
    source = "netlink vsock_diag reply"
    out: list[Socket] = []
    for message in messages(chunk, spans):
        if len(message) < _HEADER.size + _VSOCK_MSG.size:
            raise DecodeError(f"{source}: message of {len(message)} bytes is shorter than vsock_diag_msg")
        _f, kind, state, _shut, scid, sport, dcid, dport, inode = _VSOCK_MSG.unpack_from(message, _HEADER.size)
        out.append(
            Socket(
                _VSOCK_NETID.get(kind, NetId.VSOCK_STREAM),
                Family.VSOCK,
                # vsock transports keep states of their own beside the TCP ones: show those as UNKNOWN
                KERNEL_STATES[state] if 0 < state < len(KERNEL_STATES) else State.UNKNOWN,
                0,
                0,
                VsockEndpoint(scid, sport),
                VsockEndpoint(dcid, dport),
                inode,
                None,
                netns,
            )
        )
    return out

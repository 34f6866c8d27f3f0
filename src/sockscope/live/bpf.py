"""The process that connected each TCP socket, remembered by the kernel until the socket closes.

A sock_diag close message names no process and no inode, and a connection that lives under a
millisecond is never in a dump: only the kernel saw who made it. A small eBPF program on the
tracepoint sock/inet_sock_set_state (as BCC's tcplife does) notes, when a socket enters
SYN_SENT (in the connect()ing process's context), its pid, uid, command name and the time;
when the socket reaches CLOSE it moves that note to a second map keyed by the connection's
ends as the tracepoint record holds them. `Connectors.take` looks a closed connection up there.

Why bytecode by hand and not bcc (python3-bpfcc): bcc compiles C with LLVM at start-up and wants
the kernel's headers; on a Debian host with kernel 6.18 (BTF, no headers package, no kheaders
module) bcc 0.26 imports in 0.17 s and then cannot compile at all ("Unable to find kernel
headers"). The program is about 50 instructions: built with struct and loaded with bpf(2), it is
ready in about 40 ms and needs nothing beyond the kernel.

Both maps are LRU hashes: entries whose close is never asked for (sockets of other network
namespaces, connections whose process the dumps already named) are pushed out, never piling up.
Nothing is pinned: the program, the maps and the perf event go when their descriptors close.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import socket
import struct
from typing import NamedTuple

from ..errors import PermissionDenied, SourceUnavailable
from ..model import Endpoint, Family, NetId, Socket, State

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
EVENT = "events/sock/inet_sock_set_state"
CONNECTING_ENTRIES = 65536  # sockets between connect() and close at once
CLOSED_ENTRIES = 262144  # closes waiting to be asked for (a few seconds of a very busy host)

# syscall numbers: bpf, perf_event_open
_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241), "riscv64": (280, 241), "ppc64le": (361, 319), "s390x": (351, 331)}
_BPF_MAP_CREATE, _BPF_MAP_LOOKUP_ELEM, _BPF_MAP_UPDATE_ELEM, _BPF_MAP_DELETE_ELEM, _BPF_MAP_GET_NEXT_KEY, _BPF_PROG_LOAD = 0, 1, 2, 3, 4, 5
_BPF_EXIST = 2
_BPF_MAP_TYPE_LRU_HASH = 9
_BPF_PROG_TYPE_TRACEPOINT = 5
_PERF_TYPE_TRACEPOINT = 2
_PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_EVENT_IOC_SET_BPF = 0x40042408
_PERF_FLAG_FD_CLOEXEC = 8
_TCP_SYN_SENT, _TCP_CLOSE = 2, 7
# helpers
_MAP_LOOKUP, _MAP_UPDATE, _MAP_DELETE, _PID_TGID, _UID_GID, _COMM, _BOOT_NS = 1, 2, 3, 14, 15, 16, 125

# the value both maps hold: pid, uid, boot-time ns of the connect, command name, closes under the key
_VALUE = struct.Struct("=IIQ16sI4x")
_COUNT = 32
# the key of a closed connection: sport, dport (host order), family, protocol, saddr_v6, daddr_v6
_KEY = struct.Struct("=HHHH16s16s")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Connector(NamedTuple):
    """The process that connected a socket, as the kernel saw it at connect()."""

    pid: int
    uid: int
    name: str
    connected_ns: int  # CLOCK_BOOTTIME


class _Fields(NamedTuple):
    event_id: int
    offsets: dict[str, int]


def _tracefs() -> str:
    for root in TRACEFS:
        if os.path.isdir(os.path.join(root, "events")):
            return root
    # not mounted: mount it where the kernel documents (root only; fails quietly otherwise)
    libc_mount = _libc.mount
    libc_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    if libc_mount(b"nodev", TRACEFS[0].encode(), b"tracefs", 0, None) == 0:
        return TRACEFS[0]
    code = ctypes.get_errno()
    if code in (errno.EPERM, errno.EACCES):  # mounted but closed to us, or not mounted: either way root's
        raise PermissionDenied(f"eBPF needs root, or CAP_BPF and CAP_PERFMON: {TRACEFS[0]} is not readable here")
    raise SourceUnavailable(f"tracefs is not mounted and cannot be ({os.strerror(code)})")


def read_format(text: str, event_id: str) -> _Fields:
    """Give the tracepoint's id and the offset of each field, from the text of its `format` file.

    Pure. Raises SourceUnavailable when a field the program reads is missing or not where its
    size says it can be read (the program loads whole words, which must be aligned).
    """
    offsets: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("field:"):
            continue
        parts = dict(part.strip().split(":", 1) for part in line.split(";") if ":" in part)
        declaration = parts.get("field", "").split()
        if not declaration or "offset" not in parts or "size" not in parts:
            continue
        name = declaration[-1].split("[", 1)[0].lstrip("*")
        try:
            offsets[name], sizes[name] = int(parts["offset"]), int(parts["size"])
        except ValueError:
            continue
    wanted = {"skaddr": 8, "newstate": 4, "sport": 2, "dport": 2, "family": 2, "protocol": 2, "saddr_v6": 16, "daddr_v6": 16}
    for name, size in wanted.items():
        if sizes.get(name) != size:
            raise SourceUnavailable(f"the tracepoint sock/inet_sock_set_state has no {size}-byte field {name} here")
    # the key is copied in 8-byte words: sport..protocol one word, then the two addresses
    base = offsets["sport"]
    if [offsets[n] - base for n in ("dport", "family", "protocol")] != [2, 4, 6] or base % 8 or offsets["saddr_v6"] % 8:
        raise SourceUnavailable("the tracepoint sock/inet_sock_set_state lays out its fields in a way this program does not read")
    if offsets["daddr_v6"] != offsets["saddr_v6"] + 16 or offsets["skaddr"] % 8 or offsets["newstate"] % 4:
        raise SourceUnavailable("the tracepoint sock/inet_sock_set_state lays out its fields in a way this program does not read")
    try:
        number = int(event_id.strip())
    except ValueError:
        raise SourceUnavailable("the tracepoint sock/inet_sock_set_state has no id") from None
    return _Fields(number, offsets)


# ---------------------------------------------------------------------- instructions


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def _mov(dst: int, src: int) -> bytes:
    return _insn(0xBF, dst, src)


def _mov_imm(dst: int, imm: int) -> bytes:
    return _insn(0xB7, dst, imm=imm)


def _add_imm(dst: int, imm: int) -> bytes:
    return _insn(0x07, dst, imm=imm)


def _load(size: int, dst: int, src: int, off: int) -> bytes:
    return _insn({1: 0x71, 2: 0x69, 4: 0x61, 8: 0x79}[size], dst, src, off)


def _store(size: int, dst: int, src: int, off: int) -> bytes:
    return _insn({4: 0x63, 8: 0x7B}[size], dst, src, off)


def _jump_unless(reg: int, imm: int, skip: int) -> bytes:
    return _insn(0x55, reg, off=skip, imm=imm)  # JNE: jump `skip` instructions when reg != imm


def _jump_if_zero(reg: int, skip: int) -> bytes:
    return _insn(0x15, reg, off=skip, imm=0)


def _call(helper: int) -> bytes:
    return _insn(0x85, imm=helper)


def _map(dst: int, fd: int) -> bytes:
    return _insn(0x18, dst, 1, imm=fd) + _insn(0)  # BPF_LD_IMM64 with BPF_PSEUDO_MAP_FD: two slots


_EXIT = _mov_imm(0, 0) + _insn(0x95)


def program(fields: _Fields, connecting: int, closed: int) -> bytes:
    """Give the program's instructions, reading the record at the given offsets into the given maps."""
    o = fields.offsets
    # r6 = the record; stack: -8 skaddr, -48..-8 the closed key, -80..-40 a value being built
    head = _mov(6, 1) + _load(4, 7, 6, o["newstate"]) + _load(2, 8, 6, o["protocol"])
    head += _insn(0x15, 8, off=1, imm=socket.IPPROTO_TCP) + _mov_imm(7, 0)  # not TCP (SCTP, MPTCP): neither state below
    head += _load(8, 8, 6, o["skaddr"]) + _store(8, 10, 8, -8)
    # SYN_SENT: pidmap[skaddr] = (pid, uid, now, comm, 1 close), in the connecting process
    connect_body = _call(_PID_TGID) + _insn(0x77, 0, imm=32) + _store(4, 10, 0, -80)
    connect_body += _call(_UID_GID) + _store(4, 10, 0, -76)
    connect_body += _call(_BOOT_NS) + _store(8, 10, 0, -72)
    connect_body += _mov(1, 10) + _add_imm(1, -64) + _mov_imm(2, 16) + _call(_COMM)
    connect_body += _insn(0x62, 10, off=-48, imm=1) + _insn(0x62, 10, off=-44, imm=0)
    connect_body += _map(1, connecting) + _mov(2, 10) + _add_imm(2, -8) + _mov(3, 10) + _add_imm(3, -80) + _mov_imm(4, 0) + _call(_MAP_UPDATE)
    connect_body += _EXIT
    connect = _jump_unless(7, _TCP_SYN_SENT, len(connect_body) // 8)
    # CLOSE: closed[key] = pidmap[skaddr], or one more close of the same process under that key
    # (a client port used again before the first close was asked for); delete pidmap[skaddr]
    close_body = _map(1, connecting) + _mov(2, 10) + _add_imm(2, -8) + _call(_MAP_LOOKUP)
    found = _mov(9, 0) + _load(8, 1, 6, o["sport"]) + _store(8, 10, 1, -48)
    for i in range(4):
        found += _load(8, 1, 6, o["saddr_v6"] + 8 * i) + _store(8, 10, 1, -40 + 8 * i)
    found += _map(1, closed) + _mov(2, 10) + _add_imm(2, -48) + _call(_MAP_LOOKUP)
    insert = _map(1, closed) + _mov(2, 10) + _add_imm(2, -48) + _mov(3, 9) + _mov_imm(4, 0) + _call(_MAP_UPDATE)
    again = _mov_imm(1, 1) + _insn(0xC3, 0, 1, off=_COUNT) + _insn(0x05, off=len(insert) // 8)  # atomic add; skip the insert
    same = _load(4, 1, 0, 0) + _load(4, 2, 9, 0) + _insn(0x5D, 1, 2, off=len(again) // 8)  # JNE r1, r2: another process
    found += _jump_if_zero(0, (len(same) + len(again)) // 8) + same + again + insert
    found += _map(1, connecting) + _mov(2, 10) + _add_imm(2, -8) + _call(_MAP_DELETE)
    close_body += _jump_if_zero(0, len(found) // 8) + found
    close = _jump_unless(7, _TCP_CLOSE, len(close_body) // 8)
    return head + connect + connect_body + close + close_body + _EXIT


# ---------------------------------------------------------------------- system calls


def _syscall(number: int, *args: int | ctypes.Array[ctypes.c_char]) -> int:
    result = int(_libc.syscall(number, *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _numbers() -> tuple[int, int]:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise SourceUnavailable(f"eBPF is not set up for {platform.machine()} here")
    return numbers


def _bpf(command: int, attr: bytes) -> int:
    buffer = ctypes.create_string_buffer(attr, 128)
    return _syscall(_numbers()[0], command, buffer, 128)


def _create_map(name: bytes, key_size: int, value_size: int, entries: int) -> int:
    return _bpf(_BPF_MAP_CREATE, struct.pack("=IIIIIII16s", _BPF_MAP_TYPE_LRU_HASH, key_size, value_size, entries, 0, 0, 0, name))


class Connectors:
    """The eBPF program and its maps: `take(sock)` gives who connected a TCP socket that closed.

    Raises PermissionDenied without CAP_BPF and CAP_PERFMON (or root), SourceUnavailable on a
    kernel without the tracepoint or eBPF. `close()` frees every descriptor.
    """

    def __init__(self, closed_entries: int = CLOSED_ENTRIES) -> None:
        root = _tracefs()
        try:
            with open(os.path.join(root, EVENT, "format")) as handle:
                text = handle.read()
            with open(os.path.join(root, EVENT, "id")) as handle:
                event_id = handle.read()
        except OSError as exc:
            raise SourceUnavailable(f"no tracepoint sock/inet_sock_set_state here ({exc.strerror})") from None
        fields = read_format(text, event_id)
        self.fds: list[int] = []
        try:
            self.connecting = self._keep(_create_map(b"ss_connecting", 8, _VALUE.size, CONNECTING_ENTRIES))
            self.closed = self._keep(_create_map(b"ss_closed", _KEY.size, _VALUE.size, closed_entries))
            code = program(fields, self.connecting, self.closed)
            insns = ctypes.create_string_buffer(code, len(code))
            license_text = ctypes.create_string_buffer(b"GPL")
            log = ctypes.create_string_buffer(65536)
            attr = struct.pack(
                "=IIQQIIQII16s",
                _BPF_PROG_TYPE_TRACEPOINT,
                len(code) // 8,
                ctypes.addressof(insns),
                ctypes.addressof(license_text),
                1,
                len(log),
                ctypes.addressof(log),
                0,
                0,
                b"ss_connectors",
            )
            try:
                prog = self._keep(_bpf(_BPF_PROG_LOAD, attr))
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.EACCES):
                    raise
                said = log.value.decode(errors="replace").strip().splitlines()
                raise SourceUnavailable(f"the kernel refused the eBPF program ({exc.strerror}{': ' + said[-1] if said else ''})") from None
            perf_attr = bytearray(128)
            struct.pack_into("=IIQQ", perf_attr, 0, _PERF_TYPE_TRACEPOINT, 128, fields.event_id, 1)
            perf_buffer = ctypes.create_string_buffer(bytes(perf_attr), 128)
            # one event on CPU 0 is enough: a tracepoint runs its programs whichever CPU fires it
            self.perf = self._keep(_syscall(_numbers()[1], perf_buffer, -1, 0, -1, _PERF_FLAG_FD_CLOEXEC))
            _ioctl(self.perf, _PERF_EVENT_IOC_SET_BPF, prog)
            _ioctl(self.perf, _PERF_EVENT_IOC_ENABLE, 0)
        except OSError as exc:
            self.close()
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise PermissionDenied(f"eBPF: the kernel refused ({exc.strerror}); root or CAP_BPF and CAP_PERFMON are needed") from None
            raise SourceUnavailable(f"eBPF: {exc.strerror}") from None
        except BaseException:
            self.close()
            raise
        self._key = ctypes.create_string_buffer(_KEY.size)
        self._value = ctypes.create_string_buffer(_VALUE.size)
        self._lookup = struct.pack("=I4xQQQ", self.closed, ctypes.addressof(self._key), ctypes.addressof(self._value), 0)
        self._delete = struct.pack("=I4xQQQ", self.closed, ctypes.addressof(self._key), 0, 0)
        self._update = struct.pack("=I4xQQQ", self.closed, ctypes.addressof(self._key), ctypes.addressof(self._value), _BPF_EXIST)
        try:
            self._check()
        except BaseException:
            self.close()
            raise

    def _check(self) -> None:
        """Make one loopback connection and see that the program names this process (raise SourceUnavailable if not).

        The kernel gives pids as the first PID namespace numbers them: in a container with a PID
        namespace of its own they would name the wrong processes, so they are not used at all.
        """
        with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname(), timeout=2) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset: CLOSE at once, no TIME_WAIT
            accepted, _peer = listener.accept()
            accepted.close()
            local, peer = client.getsockname(), client.getpeername()
        probe = Socket(NetId.TCP, Family.INET, State.UNCONN, 0, 0, Endpoint(*local), Endpoint(*peer), 0, None)
        told = self.take(probe)
        if told is None:
            raise SourceUnavailable("eBPF: the program loaded but did not see a test connection")
        if told.pid != os.getpid():
            raise SourceUnavailable(f"eBPF: the kernel's pids are not this PID namespace's (it said {told.pid} for {os.getpid()})")

    def _keep(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def take(self, sock: Socket) -> Connector | None:
        """Give (and forget) who connected a closed TCP socket; None when the program did not see it connect."""
        key = key_of(sock)
        if key is None or not self.fds:
            return None
        self._key.raw = key
        try:
            _bpf(_BPF_MAP_LOOKUP_ELEM, self._lookup)
        except OSError:
            return None  # ENOENT: not connected from here while we watched (or pushed out of the map)
        pid, uid, when, comm, count = _VALUE.unpack(self._value.raw)
        with contextlib.suppress(OSError):
            if count > 1:  # the same ends closed again since: leave one fewer for the next close
                self._value.raw = _VALUE.pack(pid, uid, when, comm, count - 1)
                _bpf(_BPF_MAP_UPDATE_ELEM, self._update)
            else:
                _bpf(_BPF_MAP_DELETE_ELEM, self._delete)
        return Connector(pid, uid, comm.split(b"\0", 1)[0].decode(errors="replace"), when)

    def waiting(self, at_most: int = CLOSED_ENTRIES) -> int:
        """Give how many closed connections wait in the map to be asked for (counted up to `at_most`)."""
        key = ctypes.create_string_buffer(_KEY.size)
        following = ctypes.create_string_buffer(_KEY.size)
        attr = struct.pack("=I4xQQQ", self.closed, 0, ctypes.addressof(following), 0)
        count = 0
        while count < at_most:
            try:
                _bpf(_BPF_MAP_GET_NEXT_KEY, attr)
            except OSError:
                break  # ENOENT: no more
            count += 1
            key.raw = following.raw
            attr = struct.pack("=I4xQQQ", self.closed, ctypes.addressof(key), ctypes.addressof(following), 0)
        return count

    def close(self) -> None:
        """Detach the program and free the maps."""
        fds, self.fds = self.fds, []
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Connectors:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _ioctl(fd: int, request: int, arg: int) -> None:
    if _libc.ioctl(fd, ctypes.c_ulong(request), ctypes.c_long(arg)) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _v6(address: str, family: Family) -> bytes | None:
    try:
        if family is Family.INET:
            return b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, address)  # TP_STORE_V4MAPPED
        return socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0])
    except OSError:
        return None


def key_of(sock: Socket) -> bytes | None:
    """Give the key the program files a closed connection under, from the socket's ends (None if it has none)."""
    local, peer = sock.local, sock.peer
    if not isinstance(local, Endpoint) or not isinstance(peer, Endpoint):
        return None
    source, destination = _v6(local.address, sock.family), _v6(peer.address, sock.family)
    if source is None or destination is None:
        return None
    number = socket.AF_INET if sock.family is Family.INET else socket.AF_INET6
    return _KEY.pack(local.port, peer.port, number, socket.IPPROTO_TCP, source, destination)


def process_start(pid: int, proc_root: str = "/proc") -> tuple[int | None, str]:
    """Give when a process started (CLOCK_BOOTTIME ns) and its name, from /proc/PID/stat; (None, "") when it does not run."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as handle:
            text = handle.read()
        head, tail = text.rsplit(b")", 1)
        return int(tail.split()[19]) * 1_000_000_000 // os.sysconf("SC_CLK_TCK"), head.split(b"(", 1)[1].decode(errors="surrogateescape")
    except (OSError, ValueError, IndexError):
        return None, ""

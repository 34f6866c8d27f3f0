"""The SYN scan: half-open probes sent and heard on raw sockets (needs root).

Each worker sends SYNs from one source port that it reserves with a bound (never listening)
TCP socket, so no connection of this host can be given that port while the scan runs. Replies
are read on raw TCP sockets whose classic BPF filter keeps only packets to that port: an RST is
`closed` (reason `reset`), a SYN-ACK is `open` (`syn-ack`) and gets our own RST so the target
forgets the half-open connection at once. ICMP destination-unreachable about our probes is
`filtered` with the ICMP reason; silence after the retries is `filtered` (`no-response`).

The kernel would also answer every SYN-ACK with a reset of its own (it knows no connection
on the source port). `RstGuard` keeps those out of the way with an nftables rule for the scan's
lifetime: resets from the scan's ports are dropped unless they carry the scan's firewall mark,
which our own resets do. Without `nft` the kernel's resets go out too; results do not change.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..errors import PermissionDenied, SockscopeError
from .engine import _SLOW_DOWN, ICMP4_REASONS, ICMP6_REASONS, Found, Job, Pacer, Stop, Stopped, Timing, _Rtt

MARK = 0x50C5
_SO_RCVBUFFORCE = 33
_SO_ATTACH_FILTER = 26
_SO_MARK = getattr(socket, "SO_MARK", 36)
_IPV6_CHECKSUM = getattr(socket, "IPV6_CHECKSUM", 7)
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_HEADER = struct.Struct("!HHIIBBHHH")
_MSS = b"\x02\x04\x05\xb4"  # MSS 1460, as a real SYN carries
_SEND_UNREACHABLE = {errno.EHOSTUNREACH: "host-unreach", errno.ENETUNREACH: "net-unreach", errno.EACCES: "admin-prohibited", errno.EPERM: "admin-prohibited"}


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo(source: bytes, target: bytes, length: int) -> bytes:
    return source + target + struct.pack("!BBH", 0, socket.IPPROTO_TCP, length)


def _filter_to_port(port: int, with_ip_header: bool) -> bytes:
    """A classic BPF program keeping TCP packets whose destination port is `port`."""
    op = struct.Struct("=HBBI")
    program = [op.pack(0xB1, 0, 0, 0)] if with_ip_header else []  # ldxb 4*([0]&0xf): X = IP header length
    program.append(op.pack(0x48 if with_ip_header else 0x28, 0, 0, 2))  # ldh [x+2] or ldh [2]: destination port
    program.append(op.pack(0x15, 0, 1, port))  # jeq #port
    program.append(op.pack(0x06, 0, 0, 0x400))  # ret: keep up to 1 KiB
    program.append(op.pack(0x06, 0, 0, 0))  # ret: drop
    return b"".join(program)


def _attach(sock: socket.socket, program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def reserve_ports(count: int) -> list[socket.socket]:
    """Bind `count` TCP sockets (IPv4 and IPv6 at once) to kernel-chosen ports that the scan then sends from."""
    held = []
    for _ in range(count):
        sock = None
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
        except OSError:  # no IPv6 on this host: IPv4 alone
            if sock is not None:
                sock.close()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("0.0.0.0", 0))
        held.append(sock)
    return held


class RstGuard:
    """While open, the kernel's own resets from `ports` are dropped (nftables); ours pass by their mark."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.table = f"sockscope_scan_{os.getpid()}"
        self.active = False
        self.note: str | None = None

    def __enter__(self) -> RstGuard:
        nft = shutil.which("nft")
        if nft is None:
            self.note = "nft not found: the kernel's resets to answered SYNs were not held back"
            return self
        self._remove_stale(nft)
        ports = ", ".join(map(str, self.ports))
        script = (
            f"table inet {self.table} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n"
            f"  tcp sport {{ {ports} }} tcp dport != {{ {ports} }} tcp flags & rst == rst meta mark != {MARK:#x} drop\n }}\n}}\n"
        )
        result = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=10, check=False)
        self.active = result.returncode == 0
        if not self.active:
            self.note = "nftables refused the rule holding back the kernel's resets: " + (result.stderr.strip().splitlines() or ["?"])[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True, timeout=10, check=False)
            self.active = False

    @staticmethod
    def _remove_stale(nft: str) -> None:
        """Delete guard tables left by scans that were killed (their process is gone)."""
        listed = subprocess.run([nft, "list", "tables", "inet"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in listed.splitlines():
            name = line.split()[-1] if line.startswith("table inet sockscope_scan_") else ""
            pid = name.rpartition("_")[2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                subprocess.run([nft, "delete", "table", "inet", name], capture_output=True, timeout=10, check=False)


def _source_for(family: int, address: str) -> bytes:
    """The local address the kernel would send from toward `address` (no packet is sent)."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect((address, 9))
        return socket.inet_pton(family, probe.getsockname()[0].split("%")[0])
    finally:
        probe.close()


def _raw(family: int, proto: int) -> socket.socket:
    try:
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, proto)
    except PermissionError:
        raise PermissionDenied("the SYN scan needs raw sockets: run as root (or with CAP_NET_RAW), or use the connect scan") from None
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 8 << 20)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, MARK)
    return sock


def check_privilege(families: Sequence[int]) -> None:
    """Raise PermissionDenied now (before any worker starts) when raw sockets are not allowed."""
    for family in set(families):
        _raw(family, socket.IPPROTO_TCP).close()


class _Sender:
    """Builds and sends our SYNs and RSTs for one family."""

    def __init__(self, family: int, port: int, isn: int) -> None:
        self.family = family
        self.port = port
        self.isn = isn
        self.sock = _raw(family, socket.IPPROTO_TCP)
        _attach(self.sock, _filter_to_port(port, family == socket.AF_INET))
        if family == socket.AF_INET6:  # the kernel fills in the checksum
            self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_CHECKSUM, 16)
        self.syn = bytearray(_HEADER.pack(port, 0, isn, 0, 6 << 4, _SYN, 1024, 0, 0) + _MSS)
        self._put = struct.Struct("!H").pack_into
        self._sendto = self.sock.sendto
        self._sources: dict[bytes, bytes] = {}  # target -> the local address packets to it leave from

    def _sum(self, target: bytes, address: str, header: bytes) -> int:
        """The one's-complement sum of a TCP header to `target` and its pseudo-header (IPv4)."""
        source = self._sources.get(target)
        if source is None:
            source = self._sources[target] = _source_for(self.family, address)
        return _sum16(_pseudo(source, target, len(header))) + _sum16(header)

    def checksum_base(self, target: bytes, address: str) -> int:
        """The checksum sum of a SYN to `target` without its port (-1: IPv6, where the kernel sums)."""
        if self.family != socket.AF_INET:
            return -1
        header = bytearray(self.syn)
        header[2:4] = b"\x00\x00"
        return self._sum(target, address, bytes(header))

    def send_syn(self, base: int, address: str, port: int) -> None:
        packet = self.syn
        self._put(packet, 2, port)
        if base >= 0:
            total = base + port
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            self._put(packet, 16, ~total & 0xFFFF)
        self._sendto(packet, (address, 0))

    def send_rst(self, target: bytes, address: str, port: int) -> None:
        header = bytearray(_HEADER.pack(self.port, port, (self.isn + 1) & 0xFFFFFFFF, 0, 5 << 4, _RST, 0, 0, 0))
        if self.family == socket.AF_INET:
            struct.pack_into("!H", header, 16, _fold(self._sum(target, address, bytes(header))))
        with contextlib.suppress(OSError):
            self.sock.sendto(header, (address, 0))


def syn_scan(jobs: Sequence[Job], timing: Timing, report: Callable[[Found], None], stop: Stop | None = None, *, source_port: int) -> None:
    """SYN-probe every job from `source_port`; call `report` once per job. KeyboardInterrupt or `stop()` ends it."""
    isn = random.getrandbits(32)
    expected_ack = (isn + 1) & 0xFFFFFFFF
    families = sorted({job.family for job in jobs})
    senders: dict[int, _Sender] = {}
    listeners: dict[int, tuple[int, socket.socket]] = {}  # fd -> (kind, sock): 4/6 TCP, 14/16 ICMP
    poller = select.epoll()
    try:
        for family in families:
            sender = senders[family] = _Sender(family, source_port, isn)
            listeners[sender.sock.fileno()] = (4 if family == socket.AF_INET else 6, sender.sock)
            icmp = _raw(family, socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6)
            listeners[icmp.fileno()] = (14 if family == socket.AF_INET else 16, icmp)
        for fd in listeners:
            poller.register(fd, select.EPOLLIN)
        _run(jobs, timing, report, stop, senders, listeners, poller, source_port, expected_ack)
    finally:
        poller.close()
        for _kind, sock in listeners.values():
            sock.close()
        for sender in senders.values():
            sender.sock.close()


def _run(
    jobs: Sequence[Job],
    timing: Timing,
    report: Callable[[Found], None],
    stop: Stop | None,
    senders: dict[int, _Sender],
    listeners: dict[int, tuple[int, socket.socket]],
    poller: select.epoll,
    source_port: int,
    expected_ack: int,
) -> None:
    per_target: dict[str, tuple[_Sender, bytes, int]] = {}  # address -> sender, packed address, checksum base
    for job in jobs:
        if job.address not in per_target:
            target = socket.inet_pton(job.family, job.address.split("%")[0])
            sender = senders[job.family]
            per_target[job.address] = (sender, target, sender.checksum_base(target, job.address))
    queue: deque[tuple[Job, int]] = deque((job, 0) for job in jobs)
    inflight: dict[tuple[bytes, int], tuple[Job, int, float]] = {}  # (target, port) -> job, attempt, sent
    sent_order: deque[tuple[float, tuple[bytes, int], int]] = deque()  # (sent, key, attempt) in send order
    rtt = _Rtt(timing)
    window = max(1, timing.concurrency)
    pacer = Pacer(timing.rate)
    clock = time.monotonic
    heard = 0

    def answer(key: tuple[bytes, int], state: str, reason: str) -> Job | None:
        nonlocal heard
        entry = inflight.pop(key, None)
        if entry is None:
            return None  # late or repeated
        job, attempt, sent = entry
        elapsed = clock() - sent
        heard += 1
        if attempt == 0 and heard % 8 == 1:  # a sample now and then keeps the estimate current
            rtt.sample(elapsed)
        report(Found(job.host, job.port, state, reason, elapsed))
        return job

    while queue or inflight:
        if stop is not None and stop():
            raise Stopped
        now = clock()
        while queue and len(inflight) < window and pacer.allow(now):
            job, attempt = queue.popleft()
            sender, target, base = per_target[job.address]
            key = (target, job.port)
            if key in inflight:  # the same port twice in one scan: one probe answers both
                continue
            try:
                sender.send_syn(base, job.address, job.port)
            except OSError as exc:
                if exc.errno in _SLOW_DOWN:
                    queue.appendleft((job, attempt))
                    window = max(1, len(inflight) // 2)
                    break
                if exc.errno in _SEND_UNREACHABLE:
                    report(Found(job.host, job.port, "filtered", _SEND_UNREACHABLE[exc.errno], None))
                    continue
                raise SockscopeError(f"cannot send a SYN to {job.address} port {job.port}: {exc.strerror}") from None
            sent = clock()
            inflight[key] = (job, attempt, sent)
            sent_order.append((sent, key, attempt))
        timeout = rtt.timeout()  # current, so probes sent before any answer came wait no longer than needed
        wait = 0.0
        if not queue or len(inflight) >= window:
            wait = max(0.0, sent_order[0][0] + timeout - clock()) if sent_order else 0.05
        elif pacer.limited:
            wait = pacer.wait(clock())
        for fd, _events in poller.poll(min(wait, 1.0)):
            kind, sock = listeners[fd]
            receive = sock.recvfrom
            while True:
                try:
                    data, source = receive(1024)
                except (BlockingIOError, InterruptedError):
                    break
                if kind == 4:
                    offset = (data[0] & 15) << 2
                    if len(data) < offset + 14:
                        continue
                    target = data[12:16]
                elif kind == 6:
                    offset = 0
                    if len(data) < 14:
                        continue
                    target = socket.inet_pton(socket.AF_INET6, source[0].split("%")[0])
                else:
                    _icmp(kind, data, source_port, answer)
                    continue
                flags = data[offset + 13]
                if not flags & (_RST | _ACK) or int.from_bytes(data[offset + 8 : offset + 12], "big") != expected_ack:
                    continue  # not an answer to our SYN (our own SYN seen on loopback, or someone else's packet)
                port = (data[offset] << 8) | data[offset + 1]
                if flags & _RST:
                    answer((target, port), "closed", "reset")
                elif flags & _SYN:
                    opened = answer((target, port), "open", "syn-ack")
                    if opened is not None:
                        senders[opened.family].send_rst(target, opened.address, port)
        now = clock()
        while sent_order and sent_order[0][0] + timeout <= now:
            _sent, key, attempt = sent_order.popleft()
            entry = inflight.get(key)
            if entry is None or entry[1] != attempt:
                continue
            del inflight[key]
            job = entry[0]
            if attempt < timing.retries:
                queue.append((job, attempt + 1))
            else:
                report(Found(job.host, job.port, "filtered", "no-response", None))
        if window < timing.concurrency:
            window = min(timing.concurrency, window + 8)


def _icmp(kind: int, data: bytes, source_port: int, answer: Callable[[tuple[bytes, int], str, str], object]) -> None:
    """An ICMP destination-unreachable about one of our SYNs makes its port filtered."""
    if kind == 14:
        outer = (data[0] & 15) << 2 if data else 0
        if len(data) < outer + 8 + 20 + 4 or data[outer] != 3:
            return
        inner = data[outer + 8 :]
        if inner[9] != socket.IPPROTO_TCP:
            return
        target, tcp = inner[16:20], inner[(inner[0] & 15) << 2 :]
        reason = ICMP4_REASONS.get(data[outer + 1], "host-unreach")
    else:
        if len(data) < 8 + 40 + 4 or data[0] != 1:
            return
        inner = data[8:]
        if inner[6] != socket.IPPROTO_TCP:
            return
        target, tcp = inner[24:40], inner[40:]
        reason = ICMP6_REASONS.get(data[1], "host-unreach")
    if len(tcp) >= 4 and (tcp[0] << 8 | tcp[1]) == source_port:
        answer((target, tcp[2] << 8 | tcp[3]), "filtered", reason)

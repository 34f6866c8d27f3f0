"""The UDP scan: one connected UDP socket per probe, watched by epoll (no privilege needed).

A connected UDP socket hears the ICMP errors about its own datagrams: port unreachable comes
back as ECONNREFUSED (the port is closed), host/network unreachable and administratively
prohibited as EHOSTUNREACH/ENETUNREACH (filtered); the exact ICMP type and code are read from
the socket's error queue (IP_RECVERR). Any datagram back means open. Silence after the retries
is `open|filtered`: the port may be open and quiet, or a firewall may drop the probe.

A socket that the kernel happened to bind to the very port it probes hears its own datagram:
that is retried from another socket, never "open". Each socket sends exactly one datagram; a socket whose port refused is reconnected to the next
port (the kernel only matches a connected socket's errors and datagrams to its current peer,
so an old answer cannot be taken for a new one). Sockets that timed out or heard data are closed.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..errors import SockscopeError
from .engine import _SLOW_DOWN, ICMP4_REASONS, ICMP6_REASONS, Found, Job, Pacer, Stop, Stopped, Timing, _is_self, _Rtt, expire
from .probes import udp_payload

_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ORIGIN_ICMP, _ORIGIN_ICMP6 = 2, 3

_ERRNO = {
    errno.ECONNREFUSED: "port-unreach",
    errno.EHOSTUNREACH: "host-unreach",
    errno.ENETUNREACH: "net-unreach",
    errno.EACCES: "admin-prohibited",
    errno.EPERM: "admin-prohibited",
}


def _icmp_reason(sock: socket.socket, fallback: int) -> str:
    """Read the error queue for the ICMP type/code behind an error; fall back to the errno."""
    with contextlib.suppress(OSError):
        _data, ancillary, _flags, _addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        for _level, _kind, payload in ancillary:
            if len(payload) >= _EXTENDED_ERR.size:
                _errno, origin, icmp_type, code, _pad, _info, _extra = _EXTENDED_ERR.unpack_from(payload)
                if origin == _ORIGIN_ICMP and icmp_type == 3:
                    return ICMP4_REASONS.get(code, "host-unreach")
                if origin == _ORIGIN_ICMP6 and icmp_type == 1:
                    return ICMP6_REASONS.get(code, "host-unreach")
    return _ERRNO.get(fallback, "host-unreach")


def _classify(reason: str) -> str:
    return "closed" if reason == "port-unreach" else "filtered"


def udp_scan(jobs: Sequence[Job], timing: Timing, report: Callable[[Found], None], stop: Stop | None = None) -> None:
    """Probe every job's UDP port; call `report` once per job. KeyboardInterrupt or `stop()` ends it cleanly."""
    queue: deque[tuple[Job, int]] = deque((job, 0) for job in jobs)
    inflight: dict[int, tuple[socket.socket, Job, int, float]] = {}  # fd -> sock, job, attempt, sent (in send order)
    spare: dict[int, list[socket.socket]] = {socket.AF_INET: [], socket.AF_INET6: []}
    rtt = _Rtt(timing)
    window = max(1, timing.concurrency)
    poller = select.epoll()
    pacer = Pacer(timing.rate)
    try:
        while queue or inflight:
            if stop is not None and stop():
                raise Stopped
            now = time.monotonic()
            while queue and len(inflight) < window and pacer.allow(now):
                job, attempt = queue.popleft()
                sock = spare[job.family].pop() if spare[job.family] else None
                if sock is None:
                    try:
                        sock = socket.socket(job.family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
                    except OSError as exc:
                        if exc.errno in _SLOW_DOWN:
                            queue.appendleft((job, attempt))
                            window = max(1, len(inflight) // 2)
                            break
                        raise SockscopeError(f"cannot make a UDP socket: {exc.strerror}") from None
                    if job.family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                    else:
                        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
                try:
                    sock.connect((job.address, job.port))
                    sock.send(udp_payload(job.port))
                except OSError as exc:
                    sock.close()
                    if exc.errno in _SLOW_DOWN:
                        queue.appendleft((job, attempt))
                        window = max(1, len(inflight) // 2)
                        break
                    if exc.errno in _ERRNO:
                        reason = _ERRNO[exc.errno]
                        report(Found(job.host, job.port, _classify(reason), reason, None))
                        continue
                    raise SockscopeError(f"cannot send to {job.address} port {job.port}: {exc.strerror}") from None
                sent = time.monotonic()
                poller.register(sock.fileno(), select.EPOLLIN)
                inflight[sock.fileno()] = (sock, job, attempt, sent)
            if not inflight:
                if queue:
                    time.sleep(min(0.05, pacer.wait(time.monotonic())) if pacer.limited else 0.005)
                continue
            now = time.monotonic()
            timeout = rtt.timeout()  # current, so probes sent before any answer came wait no longer than needed
            wait = max(0.0, next(iter(inflight.values()))[3] + timeout - now)
            if queue and len(inflight) < window:
                wait = min(wait, pacer.wait(now)) if pacer.limited else 0.0
            for fd, _events in poller.poll(wait, 1024):
                sock, job, attempt, sent = inflight.pop(fd)
                poller.unregister(fd)
                elapsed = time.monotonic() - sent
                try:
                    data = sock.recv(2048)
                except OSError as exc:
                    reason = _icmp_reason(sock, exc.errno or 0)
                    if attempt == 0:
                        rtt.sample(elapsed)
                    report(Found(job.host, job.port, _classify(reason), reason, elapsed))
                    if reason == "port-unreach":
                        spare[job.family].append(sock)
                    else:
                        sock.close()
                    continue
                talked_to_itself = _is_self(sock)
                sock.close()
                if talked_to_itself:  # the kernel gave this socket the target port itself: try again from another
                    queue.append((job, attempt))
                    continue
                if attempt == 0:
                    rtt.sample(elapsed)
                report(Found(job.host, job.port, "open", "udp-response", elapsed, data))
            expire(inflight, poller, time.monotonic() - timeout, timing.retries, queue, report, "open|filtered")
            if window < timing.concurrency:
                window = min(timing.concurrency, window + 8)
    finally:
        for sock, *_rest in inflight.values():
            sock.close()
        for socks in spare.values():
            for sock in socks:
                sock.close()
        poller.close()

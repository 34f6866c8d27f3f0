"""The TCP connect scan: non-blocking connects watched by epoll, many at once.

A connect that the kernel answers at once (loopback, local addresses) is classified on the spot
and its socket reused when refused (a refused socket is reset by one more connect, which fails
with ECONNABORTED and returns it to the unconnected state). Open ports are closed with an RST
(SO_LINGER 0), so no TIME-WAIT is left behind; a connection to itself (the kernel picked the
target port as the source port, possible inside the ephemeral range) is retried, never "open".
Running out of ports or descriptors (EADDRNOTAVAIL, EAGAIN, EMFILE) slows the scan down and
retries the port: it never turns into "closed".
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
from ..records import NamedTuple

RST_LINGER = struct.pack("ii", 1, 0)
_SLOW_DOWN = {errno.EADDRNOTAVAIL, errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_UNREACHABLE = {
    errno.EHOSTUNREACH: "host-unreach",
    errno.ENETUNREACH: "net-unreach",
    errno.EACCES: "admin-prohibited",
    errno.EPERM: "admin-prohibited",
    errno.ETIMEDOUT: "no-response",
}

# ICMP destination unreachable codes -> reasons (ICMPv4 type 3, ICMPv6 type 1)
ICMP4_REASONS = {0: "net-unreach", 1: "host-unreach", 3: "port-unreach", 9: "admin-prohibited", 10: "admin-prohibited", 13: "admin-prohibited"}
ICMP6_REASONS = {0: "net-unreach", 1: "admin-prohibited", 3: "host-unreach", 4: "port-unreach", 5: "admin-prohibited", 6: "admin-prohibited"}


class Job(NamedTuple):
    """One port of one host to try; `host` indexes the scan's host list."""

    host: int
    address: str
    family: int
    port: int


class Found(NamedTuple):
    """The answer for one port."""

    host: int
    port: int
    state: str  # open, closed, filtered
    reason: str  # syn-ack, conn-refused, no-response, host-unreach, net-unreach, admin-prohibited
    rtt: float | None
    data: bytes | None = None  # what a UDP port answered


class Stopped(Exception):
    """The caller asked the scan to stop early (see `scan(stop=...)`)."""


Stop = Callable[[], bool]


class Timing(NamedTuple):
    """How hard and how patiently to scan."""

    concurrency: int = 2048
    initial_timeout: float = 1.0
    min_timeout: float = 0.1
    max_timeout: float = 10.0
    retries: int = 1
    rate: float | None = None  # connects per second


class _Rtt:
    """Smoothed round-trip time and its variation (RFC 6298), giving the timeout of new connects."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.srtt: float | None = None
        self.var = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.var = rtt, rtt / 2
        else:
            self.var = 0.75 * self.var + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def timeout(self) -> float:
        if self.srtt is None:
            return self.timing.initial_timeout
        return min(self.timing.max_timeout, max(self.timing.min_timeout, self.srtt + 4 * self.var))


class Pacer:
    """Spaces probes to at most `rate` per second (no limit without a rate)."""

    def __init__(self, rate: float | None) -> None:
        self.limited = bool(rate)
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    def allow(self, now: float) -> bool:
        """Tell whether a probe may go now (and count it)."""
        if not self.limited:
            return True
        if now < self.next:
            return False
        self.next = max(self.next + self.interval, now - 1.0)
        return True

    def wait(self, now: float) -> float:
        """How long until the next probe may go."""
        return max(0.0, self.next - now) if self.limited else 0.0


def expire(
    inflight: dict[int, tuple[socket.socket, Job, int, float]],
    poller: select.epoll,
    deadline: float,
    retries: int,
    queue: deque[tuple[Job, int]],
    report: Callable[[Found], None],
    silent_state: str,
) -> None:
    """Close the probes sent before `deadline` (the oldest come first): try again, or report silence."""
    while inflight:
        fd, (sock, job, attempt, sent) = next(iter(inflight.items()))
        if sent > deadline:
            break
        del inflight[fd]
        poller.unregister(fd)
        sock.close()
        if attempt < retries:
            queue.append((job, attempt + 1))
        else:
            report(Found(job.host, job.port, silent_state, "no-response", None))


def _rst_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
    sock.close()


def _is_self(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockname()[:2] == sock.getpeername()[:2])
    except OSError:
        return False


def connect_scan(jobs: Sequence[Job], timing: Timing, report: Callable[[Found], None], stop: Stop | None = None) -> None:
    """Try every job; call `report` once per job with its answer. KeyboardInterrupt or `stop()` ends it cleanly."""
    queue: deque[tuple[Job, int]] = deque((job, 0) for job in jobs)
    inflight: dict[int, tuple[socket.socket, Job, int, float]] = {}  # fd -> sock, job, attempt, started (in send order)
    spare: dict[int, socket.socket] = {}
    rtt = _Rtt(timing)
    window = max(1, timing.concurrency)
    poller = select.epoll()
    pacer = Pacer(timing.rate)
    stream = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    sol, so_error = socket.SOL_SOCKET, socket.SO_ERROR
    refused, inprogress, aborted = errno.ECONNREFUSED, errno.EINPROGRESS, errno.ECONNABORTED
    try:
        while queue or inflight:
            if stop is not None and stop():
                raise Stopped
            now = time.monotonic()
            while queue and len(inflight) < window and pacer.allow(now):
                job, attempt = queue.popleft()
                sock = spare.pop(job.family, None)
                if sock is None:
                    try:
                        sock = socket.socket(job.family, stream)
                    except OSError as exc:
                        if exc.errno in _SLOW_DOWN:
                            queue.appendleft((job, attempt))
                            window = max(1, min(window, len(inflight)) // 2)
                            break
                        raise SockscopeError(f"cannot make a socket: {exc.strerror}") from None
                started = time.monotonic()
                result = sock.connect_ex((job.address, job.port))
                if result == inprogress:
                    result = sock.getsockopt(sol, so_error)
                    if result == 0:
                        try:
                            sock.getpeername()
                        except OSError:  # still connecting: watch it
                            poller.register(sock.fileno(), select.EPOLLOUT)
                            inflight[sock.fileno()] = (sock, job, attempt, started)
                            continue
                if result in (refused, 0):  # answered before connect() returned (veth, local): still a round trip
                    rtt.sample(time.monotonic() - started)
                if result == refused:
                    report(Found(job.host, job.port, "closed", "conn-refused", None))
                    if sock.connect_ex((job.address, job.port)) == aborted:  # back to unconnected, ready to reuse
                        spare[job.family] = sock
                    else:
                        sock.close()
                elif result == 0:
                    if _is_self(sock):
                        queue.append((job, attempt))
                    else:
                        report(Found(job.host, job.port, "open", "syn-ack", None))
                    _rst_close(sock)
                else:
                    sock.close()
                    _settle(result, job, attempt, timing, queue, report, None)
                    if result in _SLOW_DOWN:
                        window = max(1, min(window, len(inflight) or 1) // 2)
                        break
            if not inflight:
                if queue and pacer.limited:
                    time.sleep(pacer.wait(time.monotonic()))
                elif queue and len(inflight) >= window:
                    time.sleep(0.005)
                continue
            now = time.monotonic()
            timeout = rtt.timeout()  # current, so connects sent before any answer came wait no longer than needed
            oldest_deadline = next(iter(inflight.values()))[3] + timeout
            wait = max(0.0, min(oldest_deadline - now, pacer.wait(now) if pacer.limited and queue else 1.0))
            if queue and len(inflight) < window and not pacer.limited:
                wait = 0.0
            for fd, _events in poller.poll(wait, 1024):
                entry = inflight.pop(fd, None)
                if entry is None:
                    continue
                sock, job, attempt, started = entry
                poller.unregister(fd)
                result = sock.getsockopt(sol, so_error)
                elapsed = time.monotonic() - started
                if result == 0:
                    if _is_self(sock):
                        queue.append((job, attempt))
                    else:
                        rtt.sample(elapsed)
                        report(Found(job.host, job.port, "open", "syn-ack", elapsed))
                    _rst_close(sock)
                    continue
                sock.close()
                if result == refused:
                    rtt.sample(elapsed)
                    report(Found(job.host, job.port, "closed", "conn-refused", elapsed))
                else:
                    _settle(result, job, attempt, timing, queue, report, elapsed)
            expire(inflight, poller, time.monotonic() - timeout, timing.retries, queue, report, "filtered")
            if window < timing.concurrency and not queue:
                window = timing.concurrency
            elif window < timing.concurrency:
                window = min(timing.concurrency, window + 8)  # recover slowly after running short
    finally:
        for sock, *_rest in inflight.values():
            sock.close()
        for sock in spare.values():
            sock.close()
        poller.close()


def _settle(result: int, job: Job, attempt: int, timing: Timing, queue: deque[tuple[Job, int]], report: Callable[[Found], None], elapsed: float | None) -> None:
    """Classify an error answer: unreachable -> filtered; running short -> try again later."""
    if result in _SLOW_DOWN:
        queue.appendleft((job, attempt))
        return
    if result in _UNREACHABLE:
        reason = _UNREACHABLE[result]
        if reason == "no-response" and attempt < timing.retries:
            queue.append((job, attempt + 1))
            return
        report(Found(job.host, job.port, "filtered", reason, elapsed))
        return
    raise SockscopeError(f"connect to {job.address} port {job.port} failed: {errno.errorcode.get(result, result)} ({result})")


def icmp_refused(address: str, family: int, port: int, timeout: float) -> bool:
    """Tell whether a port that refused a connect did so by rate-limited ICMP (a firewall's reject) rather than a reset.

    A port that gives no answer now is taken as rate-limited: a reset is never rationed.
    """
    level, option = (socket.IPPROTO_IPV6, 25) if family == socket.AF_INET6 else (socket.IPPROTO_IP, 11)  # IPV6_RECVERR, IP_RECVERR
    with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as sock:
        sock.setsockopt(level, option, 1)
        sock.connect_ex((address, port))
        with select.epoll() as poller:
            poller.register(sock.fileno(), select.EPOLLOUT)
            if not poller.poll(timeout):  # silent now though it answered before: its answers are rationed
                return True
        try:
            _data, ancillary, _flags, _peer = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        except OSError:
            return False
    # struct sock_extended_err: errno, origin (2 ICMP, 3 ICMPv6), type, code; port unreachable is 3/3 and 1/4
    return any(len(data) >= 8 and data[4] in (2, 3) and (data[5], data[6]) in ((3, 3), (1, 4)) for _l, _k, data in ancillary)

"""Port scanning: which ports of which hosts are open.

    from sockscope.scan import scan, hosts, parse_ports
    report = scan(hosts(["127.0.0.1"]), parse_ports("1-1024"))
    [p.port for h in report.hosts for p in h.ports if p.state == "open"]

Large scans are split over forked workers, one per core, each with its own epoll loop: the
kernel's per-connect work (allocating the socket and its port, the handshake, the reset) is
most of the cost, and it runs on the core that asks for it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import struct
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..errors import SockscopeError, UsageError
from ..resources import raise_file_limit
from ..services import by_port
from .engine import Found, Job, Timing, connect_scan
from .portspec import parse_ports, top_ports
from .targets import Host, hosts

__all__ = ["Host", "HostReport", "PortState", "ScanReport", "Timing", "hosts", "parse_ports", "scan", "top_ports"]

STATES = ("open", "closed", "filtered", "open|filtered")
REASONS = ("syn-ack", "conn-refused", "no-response", "host-unreach", "net-unreach", "admin-prohibited", "port-unreach", "udp-response", "reset")
_RECORD = struct.Struct("=IHBBd")


class PortState(NamedTuple):
    """One port of one host, as found."""

    port: int
    proto: str
    state: str
    reason: str
    service: str | None = None
    banner: str | None = None
    rtt: float | None = None


class HostReport(NamedTuple):
    address: str
    name: str | None
    ports: list[PortState]


class ScanReport(NamedTuple):
    kind: str
    ports: int
    started: float
    seconds: float
    hosts: list[HostReport]
    interrupted: bool


Progress = Callable[[int, int], None]


def _worker_count(jobs: int, wanted: int | None) -> int:
    if wanted is not None:
        return max(1, wanted)
    cores = len(os.sched_getaffinity(0))
    return min(cores, 4) if jobs >= 4096 else 1


def _run_forked(jobs: list[Job], timing: Timing, workers: int, on_found: Callable[[Found], None]) -> bool:
    """Split the jobs over forked workers; stream their answers to `on_found`. Give True when interrupted."""
    children: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    per = Timing(**{**timing._asdict(), "concurrency": max(1, timing.concurrency // workers)})
    for index in range(workers):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: scan its share, write packed answers to the pipe
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
            buffer = bytearray()

            def report(found: Found, out: bytearray = buffer, fd: int = write_fd) -> None:
                out += _RECORD.pack(found.host, found.port, STATES.index(found.state), REASONS.index(found.reason), -1.0 if found.rtt is None else found.rtt)
                if len(out) >= 1 << 15:
                    os.write(fd, bytes(out))
                    out.clear()

            status = 0
            try:
                connect_scan(jobs[index::workers], per, report)
                while buffer:
                    del buffer[: os.write(write_fd, bytes(buffer))]
            except BaseException:
                status = 5
            os._exit(status)
        os.close(write_fd)
        children[read_fd] = pid
        selector.register(read_fd, selectors.EVENT_READ)
    pending: dict[int, bytes] = dict.fromkeys(children, b"")
    interrupted = False
    try:
        while pending:
            for key, _events in selector.select():
                fd = int(key.fd)
                data = os.read(fd, 1 << 16)
                if not data:
                    selector.unregister(fd)
                    os.close(fd)
                    del pending[fd]
                    continue
                data = pending[fd] + data
                usable = len(data) - len(data) % _RECORD.size
                for host, port, state, reason, rtt in _RECORD.iter_unpack(data[:usable]):
                    on_found(Found(host, port, STATES[state], REASONS[reason], None if rtt < 0 else rtt))
                pending[fd] = data[usable:]
    except KeyboardInterrupt:
        interrupted = True
        for pid in children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for fd in list(pending):
            with contextlib.suppress(OSError):
                os.close(fd)
    finally:
        selector.close()
        failed = False
        for pid in children.values():
            _pid, status = os.waitpid(pid, 0)
            failed |= not interrupted and os.waitstatus_to_exitcode(status) != 0
    if failed:
        raise SockscopeError("a scan worker failed")
    return interrupted


def scan(
    targets: Sequence[Host],
    ports: Sequence[tuple[str, int]],
    timing: Timing | None = None,
    *,
    workers: int | None = None,
    on_port: Callable[[Host, PortState], None] | None = None,
    progress: Progress | None = None,
) -> ScanReport:
    """Scan every (proto, port) of every host with TCP connects; give what was found.

    `on_port` hears each answer as it comes (for streaming output); `progress(done, total)` is
    called along the way. Ctrl-C (KeyboardInterrupt) ends the scan early: the report holds what
    was found so far and says it was interrupted.
    """
    timing = timing or Timing()
    tcp = [port for proto, port in ports if proto == "tcp"]
    if len(tcp) != len(ports):
        raise UsageError("UDP ports need --udp (a UDP scan); this scan is a TCP connect scan")
    if not tcp:
        raise UsageError("no ports to scan")
    limit = raise_file_limit(timing.concurrency + 256)
    if limit < timing.concurrency + 64:
        timing = timing._replace(concurrency=max(16, limit - 64))
    jobs = [Job(index, host.address, host.family, port) for index, host in enumerate(targets) for port in tcp]
    names = by_port("tcp")
    found: list[list[PortState]] = [[] for _ in targets]
    total = len(jobs)
    done = 0
    last_progress = 0.0

    def on_found(answer: Found) -> None:
        nonlocal done, last_progress
        state = PortState(answer.port, "tcp", answer.state, answer.reason, names.get(answer.port), None, answer.rtt)
        found[answer.host].append(state)
        done += 1
        if on_port is not None:
            on_port(targets[answer.host], state)
        if progress is not None:
            now = time.monotonic()
            if now - last_progress > 0.1 or done == total:
                last_progress = now
                progress(done, total)

    started_wall, started = time.time(), time.monotonic()
    count = _worker_count(len(jobs), workers)
    interrupted = False
    if count > 1:
        interrupted = _run_forked(jobs, timing, count, on_found)
    else:
        try:
            connect_scan(jobs, timing, on_found)
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.monotonic() - started
    reports = [HostReport(host.address, host.name, sorted(found[i], key=lambda p: p.port)) for i, host in enumerate(targets)]
    return ScanReport("connect", len(tcp), started_wall, seconds, reports, interrupted)

"""Port scanning: which ports of which hosts are open.

    from sockscope.scan import scan, hosts, parse_ports
    report = scan(hosts(["127.0.0.1"]), parse_ports("1-1024"))
    [p.port for h in report.hosts for p in h.ports if p.state == "open"]

    report = await sockscope.scan.scan_async(hosts(["::1"]), parse_ports("U:53,T:22"))

Kinds: TCP connect (`engine.py`, no privilege), SYN (`syn.py`, raw sockets, root) and UDP
(`udp.py`, connected UDP sockets, no privilege); `-p U:..,T:..` mixes TCP and UDP in one scan.
Large scans are split over forked workers, one per core, each with its own epoll loop: the
kernel's per-probe work (sockets, ports, handshakes, resets) is most of the cost, and it runs
on the core that asks for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import signal
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import SockscopeError, UsageError
from ..model import Owner
from ..records import NamedTuple
from ..resources import raise_file_limit
from ..services import by_port
from .engine import Found, Job, Stop, Stopped, Timing, connect_scan, icmp_refused
from .local import LocalPort, local_ports
from .portspec import parse_ports, top_ports
from .probes import grab_banners, identify
from .recheck import recheck
from .targets import Host, hosts
from .udp import udp_scan

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "Host", "HostReport", "PortState", "ScanReport", "Timing", "hosts", "parse_ports", "scan", "scan_async", "scan_iter", "top_ports",
]  # fmt: skip
KINDS = ("connect", "syn")

STATES = ("open", "closed", "filtered", "open|filtered")
REASONS = (
    "syn-ack",
    "conn-refused",
    "no-response",
    "host-unreach",
    "net-unreach",
    "admin-prohibited",
    "port-unreach",
    "udp-response",
    "reset",
    "accept-queue-full",
)
_RECORD = struct.Struct("=IHBBdH")  # host, port, state, reason, rtt, length of the data that follows


class PortState(NamedTuple):
    """One port of one host, as found."""

    port: int
    proto: str
    state: str
    reason: str
    service: str | None = None
    banner: str | None = None
    rtt: float | None = None
    process: Owner | None = None  # who holds the port, when the host is this one


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
    notes: tuple[str, ...] = ()  # things the user should know (e.g. a safeguard that could not be set up)


Progress = Callable[[int, int], None]
Engine = Callable[[Sequence[Job], Timing, Callable[[Found], None], Stop | None], None]


def _worker_count(jobs: int, wanted: int | None) -> int:
    if wanted is not None:
        return max(1, wanted)
    cores = len(os.sched_getaffinity(0))
    return min(cores, 4) if jobs >= 4096 else 1


_STATE_CODE = {state: code for code, state in enumerate(STATES)}
_REASON_CODE = {reason: code for code, reason in enumerate(REASONS)}
_CHUNK = struct.Struct("=BI")  # what follows: 0 records without data, 1 one record and its data; its length
_MAKE = tuple.__new__


class _Collector:
    """Gathers the answers as PortStates per host and tells `on_port` and `progress` along the way."""

    def __init__(
        self,
        targets: Sequence[Host],
        total: int,
        on_port: Callable[[Host, PortState], None] | None,
        progress: Progress | None,
        hold_open_tcp: bool,
        local: dict[tuple[int, str, int], LocalPort],
    ) -> None:
        self.targets = targets
        self.found: list[list[PortState]] = [[] for _ in targets]
        self.total = total
        self.done = 0
        self.on_port = on_port
        self.progress = progress
        self.hold_open_tcp = hold_open_tcp  # open TCP ports are told after their banners are read
        self.last_progress = 0.0
        self.names = {"tcp": by_port("tcp"), "udp": by_port("udp")}
        self.local = local
        self.hold_silent = False  # silent ports are told once a rate limit cannot turn them into answers

    def _local(self, host: int, state: PortState) -> PortState:
        """Correct a port of this host by its socket: silence from a listener is a full accept queue; name the holder."""
        mine = self.local.get((host, state.proto, state.port))
        if mine is None:
            return state
        if state.proto == "tcp" and state.state == "filtered" and state.reason == "no-response":
            state = state._replace(state="open", reason="accept-queue-full")
        if state.state in ("open", "open|filtered"):
            state = state._replace(process=mine.process)
        return state

    def answer(self, proto: str, found: Found) -> None:
        """One answer from an engine running in this process."""
        service, banner = self.names[proto].get(found.port), None
        if found.data is not None:
            named, banner = identify(found.data, proto)
            service = named or service
        state = PortState(found.port, proto, found.state, found.reason, service, banner, found.rtt)
        if self.local:
            state = self._local(found.host, state)
        self.found[found.host].append(state)
        self._tell([(found.host, state)], 1)

    def records(self, proto: str, chunk: bytes) -> None:
        """Many answers packed by a worker (none carrying data): the hot path of large scans."""
        names, found, states, reasons, local = self.names[proto], self.found, STATES, REASONS, self.local
        told: list[tuple[int, PortState]] | None = [] if self.on_port is not None else None
        for host, port, state, reason, rtt, _size in _RECORD.iter_unpack(chunk):
            item = _MAKE(PortState, (port, proto, states[state], reasons[reason], names.get(port), None, None if rtt < 0 else rtt, None))
            if local:
                item = self._local(host, item)
            found[host].append(item)
            if told is not None:
                told.append((host, item))
        self._tell(told or [], len(chunk) // _RECORD.size)

    def _tell(self, told: list[tuple[int, PortState]], count: int) -> None:
        self.done += count
        if self.on_port is not None:
            for host, state in told:
                if self.hold_open_tcp and state.proto == "tcp" and state.state == "open":
                    continue
                if self.hold_silent and state.reason == "no-response":
                    continue
                self.on_port(self.targets[host], state)
        if self.progress is not None:
            now = time.monotonic()
            if now - self.last_progress > 0.1 or self.done == self.total:
                self.last_progress = now
                self.progress(self.done, self.total)


def _write_all(fd: int, data: bytes) -> None:
    """Write a whole chunk; the parent's SIGTERM (which stops a worker) waits until it is written."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _worker_reporter(fd: int) -> tuple[Callable[[Found], None], Callable[[], None]]:
    """In a worker: a `report` packing answers for the pipe to the parent, and its final flush."""
    fixed = bytearray()
    pack = _RECORD.pack
    clock = time.monotonic
    due = clock() + 0.1

    def flush() -> None:
        nonlocal due
        due = clock() + 0.1
        if fixed:
            _write_all(fd, _CHUNK.pack(0, len(fixed)) + fixed)
            fixed.clear()

    def report(found: Found) -> None:
        rtt = -1.0 if found.rtt is None else found.rtt
        if found.data is None:
            fixed.extend(pack(found.host, found.port, _STATE_CODE[found.state], _REASON_CODE[found.reason], rtt, 0))
            if len(fixed) >= 1 << 15 or clock() >= due:  # big enough, or old enough for a streaming reader
                flush()
            return
        flush()
        data = found.data[:4096]
        record = pack(found.host, found.port, _STATE_CODE[found.state], _REASON_CODE[found.reason], rtt, len(data)) + data
        _write_all(fd, _CHUNK.pack(1, len(record)) + record)

    return report, flush


def _read_chunks(buffer: bytes, proto: str, collector: _Collector) -> bytes:
    """Hand every whole chunk in `buffer` to the collector; give back the incomplete rest."""
    offset = 0
    while len(buffer) - offset >= _CHUNK.size:
        kind, size = _CHUNK.unpack_from(buffer, offset)
        start, end = offset + _CHUNK.size, offset + _CHUNK.size + size
        if end > len(buffer):
            break
        if kind == 0:
            collector.records(proto, buffer[start:end])
        else:
            host, port, state, reason, rtt, _size = _RECORD.unpack_from(buffer, start)
            collector.answer(proto, Found(host, port, STATES[state], REASONS[reason], None if rtt < 0 else rtt, buffer[start + _RECORD.size : end]))
        offset = end
    return buffer[offset:]


def _run_forked(engines: Sequence[Engine], jobs: list[Job], timing: Timing, proto: str, collector: _Collector, stop: Stop | None) -> bool:
    """Split the jobs over one forked worker per engine; stream their answers to the collector. Give True when stopped early."""
    children: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    workers = len(engines)
    per = timing._replace(concurrency=max(1, timing.concurrency // workers), rate=timing.rate / workers if timing.rate else None)
    for index, engine in enumerate(engines):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: scan its share, write packed answers to the pipe
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, and says so with SIGTERM
            signal.signal(signal.SIGTERM, _stop_worker)
            status = 0
            try:
                report, flush = _worker_reporter(write_fd)
                with contextlib.suppress(Stopped):
                    engine(jobs[index::workers], per, report, None)
                flush()
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
            if stop is not None and stop():
                raise Stopped
            for key, _events in selector.select(0.1 if stop is not None else None):
                fd = int(key.fd)
                data = os.read(fd, 1 << 16)
                if not data:
                    selector.unregister(fd)
                    os.close(fd)
                    del pending[fd]
                    continue
                pending[fd] = _read_chunks(pending[fd] + data, proto, collector)
    except (KeyboardInterrupt, Stopped):
        interrupted = True
        _drain(children, pending, selector, proto, collector)
    finally:
        selector.close()
        failed = False
        for pid in children.values():
            _pid, status = os.waitpid(pid, 0)
            failed |= not interrupted and os.waitstatus_to_exitcode(status) != 0
    if failed:
        raise SockscopeError("a scan worker failed")
    return interrupted


def _stop_worker(_signum: int, _frame: object) -> None:
    raise Stopped


def _drain(children: dict[int, int], pending: dict[int, bytes], selector: selectors.BaseSelector, proto: str, collector: _Collector) -> None:
    """Stop the workers: each sends what it has found and exits; after 2 s the rest are killed."""
    for pid in children.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
        while pending and time.monotonic() < deadline:
            for key, _events in selector.select(max(0.0, deadline - time.monotonic())):
                fd = int(key.fd)
                data = os.read(fd, 1 << 16)
                if data:
                    pending[fd] = _read_chunks(pending[fd] + data, proto, collector)
                    continue
                selector.unregister(fd)
                os.close(fd)
                del pending[fd]
    for pid in children.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for fd in list(pending):
        with contextlib.suppress(OSError):
            os.close(fd)
    pending.clear()


def _recheck(engine: Engine, proto: str, targets: Sequence[Host], collector: _Collector, silent_state: str, stop: Stop | None, notes: list[str]) -> bool:
    """Ask again, at the pace of each host's ICMP rate limit, the ports that were silent while others answered. Give True when stopped early."""
    found = collector.found
    for index, host in enumerate(targets):
        mine = [state for state in found[index] if state.proto == proto]
        silent = [state for state in mine if state.reason == "no-response"]
        closed = [state for state in mine if state.state == "closed"]
        if not silent or not closed:
            continue
        first = silent[0].port
        known = sorted(closed, key=lambda state: abs(state.port - first))[:8]
        # long enough for an answer to come back: four of the slowest round trips seen, at least 2 ms
        wait = min(1.0, max(0.002, 4 * max((state.rtt or 0.0) for state in closed)))
        found[index] = [state for state in found[index] if not (state.proto == proto and state.reason == "no-response")]
        collector.done -= len(silent)
        jobs = [Job(index, host.address, host.family, state.port) for state in silent]
        told: set[int] = set()

        def answer(result: Found, told: set[int] = told) -> None:
            told.add(result.port)
            collector.answer(proto, result)

        sentinel = _sentinel(proto, host, index, known, wait)
        if sentinel is None:  # none of the answers came from ICMP: nothing rate-limited them
            found[index].extend(silent)
            collector.done += len(silent)
            continue
        try:
            recheck(engine, jobs, sentinel, wait, answer, silent_state, stop)
        except (KeyboardInterrupt, Stopped):
            left = [state for state in silent if state.port not in told]
            found[index].extend(left)  # as they were
            collector.done += len(left)
            notes.append(
                f"{host.address}: interrupted while asking again the ports its ICMP rate limit had silenced; {len(left)} {proto} ports stay as first seen"
            )
            return True
    return False


def _sentinel(proto: str, host: Host, index: int, known: Sequence[PortState], wait: float) -> Job | None:
    """Give a closed port of the host that answers with ICMP port unreachable (which the kernel rate-limits), if any."""
    for state in known:
        if proto == "udp" or icmp_refused(host.address, host.family, state.port, max(wait, 0.05)):
            return Job(index, host.address, host.family, state.port)
    return None


def _release_silent(targets: Sequence[Host], collector: _Collector) -> None:
    """Tell `on_port` the ports that stayed silent (held back while they could still answer)."""
    collector.hold_silent = False
    if collector.on_port is not None:
        for index, states in enumerate(collector.found):
            for state in states:
                if state.reason == "no-response":
                    collector.on_port(targets[index], state)


def _phase(engines: Sequence[Engine], jobs: list[Job], timing: Timing, proto: str, collector: _Collector, stop: Stop | None) -> bool:
    """Run one kind of probe over `jobs`, forked when there are several engines. Give True when stopped early."""
    if len(engines) > 1:
        return _run_forked(engines, jobs, timing, proto, collector, stop)
    try:
        engines[0](jobs, timing, functools.partial(collector.answer, proto), stop)
    except (KeyboardInterrupt, Stopped):
        return True
    return False


def scan(
    targets: Sequence[Host],
    ports: Sequence[tuple[str, int]],
    timing: Timing | None = None,
    *,
    kind: str = "connect",
    workers: int | None = None,
    banners: bool = False,
    banner_timeout: float = 2.0,
    on_port: Callable[[Host, PortState], None] | None = None,
    progress: Progress | None = None,
    stop: Stop | None = None,
) -> ScanReport:
    """Scan every (proto, port) of every host; give what was found.

    TCP ports are probed by `kind` ("connect", or "syn" with raw sockets as root), UDP ports
    with datagrams. `banners` reads what open TCP ports say (and names them). `on_port` hears
    each answer as it comes (for streaming output); `progress(done, total)` is called along the
    way. Ctrl-C (KeyboardInterrupt), or `stop()` turning true, ends the scan early: the report
    holds what was found so far and says it was interrupted.
    """
    timing = timing or Timing()
    if kind not in KINDS:
        raise UsageError(f"unknown scan kind {kind!r} (connect or syn)")
    tcp = [port for proto, port in ports if proto == "tcp"]
    udp = [port for proto, port in ports if proto == "udp"]
    if not ports:
        raise UsageError("no ports to scan")
    if not targets:
        raise UsageError("no hosts to scan")
    if tcp and kind == "syn":
        from .syn import RstGuard, check_privilege, reserve_ports, syn_scan  # raw sockets, ctypes, nft: only for SYN scans

        check_privilege([host.family for host in targets])
    limit = raise_file_limit(timing.concurrency + 256)
    if limit < timing.concurrency + 64:
        timing = timing._replace(concurrency=max(16, limit - 64))
    local = local_ports(targets, [proto for proto, wanted in (("tcp", tcp), ("udp", udp)) if wanted])
    collector = _Collector(targets, len(targets) * (len(tcp) + len(udp)), on_port, progress, banners, local)
    collector.hold_silent = True
    found = collector.found

    started_wall, started = time.time(), time.monotonic()
    interrupted = False
    notes: list[str] = []
    if tcp:
        jobs = [Job(index, host.address, host.family, port) for index, host in enumerate(targets) for port in tcp]
        full = {(host, port) for (host, proto, port), mine in local.items() if proto == "tcp" and mine.full}
        if full:  # a full accept queue answers no SYN: say so at once rather than wait out the retries
            for job in jobs:
                if (job.host, job.port) in full:
                    collector.answer("tcp", Found(job.host, job.port, "open", "accept-queue-full", None))
            jobs = [job for job in jobs if (job.host, job.port) not in full]
        count = _worker_count(len(jobs), workers)
        if kind == "syn":
            held = reserve_ports(count)
            try:
                with RstGuard([sock.getsockname()[1] for sock in held]) as guard:
                    engines: list[Engine] = [functools.partial(syn_scan, source_port=sock.getsockname()[1]) for sock in held]
                    interrupted = _phase(engines, jobs, timing, "tcp", collector, stop)
                if guard.note:
                    notes.append(guard.note)
            finally:
                for sock in held:
                    sock.close()
        else:  # a SYN scan calls an ICMP answer filtered, as silence is: only a connect scan has to ask again
            interrupted = _phase([connect_scan] * count, jobs, timing, "tcp", collector, stop)
            interrupted = interrupted or _recheck(connect_scan, "tcp", targets, collector, "filtered", stop, notes)
    if udp and not interrupted:
        jobs = [Job(index, host.address, host.family, port) for index, host in enumerate(targets) for port in udp]
        interrupted = _phase([udp_scan] * _worker_count(len(jobs), workers), jobs, timing, "udp", collector, stop)
        interrupted = interrupted or _recheck(udp_scan, "udp", targets, collector, "open|filtered", stop, notes)
    _release_silent(targets, collector)
    if banners:  # an interrupted scan reads no banners but still tells the open ports it held back for them
        interrupted = _grab(targets, found, banner_timeout if not interrupted else 0.0, on_port, stop) or interrupted
    seconds = time.monotonic() - started
    reports = [HostReport(host.address, host.name, sorted(found[i], key=lambda p: (p.proto, p.port))) for i, host in enumerate(targets)]
    label = "+".join(([kind] if tcp else []) + (["udp"] if udp else []))
    return ScanReport(label, len(tcp) + len(udp), started_wall, seconds, reports, interrupted, tuple(notes))


def _grab(targets: Sequence[Host], found: list[list[PortState]], timeout: float, on_port: Callable[[Host, PortState], None] | None, stop: Stop | None) -> bool:
    """Read the banners of the open TCP ports (none when `timeout` is 0) and name their services; give True when stopped early."""
    where = [
        (i, j)
        for i, states in enumerate(found)
        for j, state in enumerate(states)
        if state.proto == "tcp" and state.state == "open" and state.reason != "accept-queue-full"
    ]
    items = [(targets[i].address, targets[i].family, found[i][j].port) for i, j in where]
    interrupted = False
    answers = [b""] * len(items)
    try:
        if timeout > 0:
            answers = grab_banners(items, timeout, stop=stop)
    except KeyboardInterrupt:
        interrupted = True
    for (i, j), data in zip(where, answers, strict=True):
        if data:
            named, banner = identify(data, "tcp")
            found[i][j] = found[i][j]._replace(service=named or found[i][j].service, banner=banner)
        if on_port is not None:
            on_port(targets[i], found[i][j])
    return interrupted or (stop is not None and stop())


async def scan_async(
    targets: Sequence[Host],
    ports: Sequence[tuple[str, int]],
    timing: Timing | None = None,
    *,
    kind: str = "connect",
    workers: int = 1,
    banners: bool = False,
    banner_timeout: float = 2.0,
    on_port: Callable[[Host, PortState], None] | None = None,
) -> ScanReport:
    """`scan` for asyncio programs: the scan runs in a thread, `on_port` is called in the event loop.

    Cancelling the awaiting task stops the scan within a moment. One process by default
    (forking from a threaded program is best avoided); pass `workers` to split large scans.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    halt = threading.Event()
    heard = None
    if on_port is not None:
        callback = on_port

        def heard(host: Host, state: PortState) -> None:
            loop.call_soon_threadsafe(callback, host, state)

    run = functools.partial(
        scan, targets, ports, timing, kind=kind, workers=workers, banners=banners, banner_timeout=banner_timeout, on_port=heard, stop=halt.is_set
    )
    future = loop.run_in_executor(None, run)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        halt.set()
        with contextlib.suppress(Exception):
            await future
        raise


async def scan_iter(
    targets: Sequence[Host], ports: Sequence[tuple[str, int]], timing: Timing | None = None, *, kind: str = "connect", workers: int = 1
) -> AsyncIterator[tuple[Host, PortState]]:
    """Yield (host, port state) as the answers come; leaving the loop early stops the scan."""
    import asyncio

    answers: asyncio.Queue[tuple[Host, PortState] | None] = asyncio.Queue()
    task = asyncio.ensure_future(scan_async(targets, ports, timing, kind=kind, workers=workers, on_port=lambda h, s: answers.put_nowait((h, s))))
    task.add_done_callback(lambda _task: answers.put_nowait(None))
    try:
        while (item := await answers.get()) is not None:
            yield item
        await task  # raise the scan's error, if any
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

"""Stop whoever listens on a port: a signal, a grace period, SIGKILL, then proof that it is free.

Only processes that hold a listening socket on the port are ever signalled, and each one is
checked again right before its signal (through a pidfd, so a recycled pid cannot be hit):
never ourselves, never pid 1, never a process that no longer holds the port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator

from ..errors import NothingFound, PermissionDenied, SockscopeError, UsageError
from ..inventory.owners import holds
from ..inventory.processes import ProcessInfo
from ..records import NamedTuple
from .who import Target, who


class Victim(NamedTuple):
    """A process that listens on the port, and the socket inodes it holds there."""

    process: ProcessInfo
    inodes: frozenset[int]
    listening: tuple[str, ...]


class Outcome(NamedTuple):
    """What happened: who got which signal, and whether the port is free at the end."""

    signalled: list[tuple[Victim, str]]  # (victim, signal name)
    free: bool
    left: list[ProcessInfo]  # processes still listening at the end
    skipped: list[tuple[ProcessInfo, str]]  # (process, why it was not signalled)


def parse_signal(text: str) -> signal.Signals:
    """Give the signal named `TERM`, `SIGTERM`, `term` or numbered `15`."""
    name = text.upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise UsageError(f"unknown signal {text!r} (try TERM, INT, HUP, KILL or a number)") from None


def victims(port: int, udp: bool = False, root: str = "/proc") -> tuple[list[Victim], list[tuple[ProcessInfo, str]], bool]:
    """Give the processes listening on a port, the ones that must be spared (and why), and
    whether anything listens there at all (even where the holders cannot be seen)."""
    holding = who([Target(str(port), port=port)], udp, root=root, listening_only=True)[0]
    me = os.getpid()
    found, spared = [], []
    for holder in holding.holders:
        pid = holder.process.pid
        inodes = frozenset(s.inode for s in holding.sockets if any(o.pid == pid for o in s.owners or ()))
        if pid == me:
            spared.append((holder.process, "that is sockscope itself"))
        elif pid == 1:
            spared.append((holder.process, "pid 1 (init) is never signalled; the port may be socket-activated"))
        else:
            found.append(Victim(holder.process, inodes, holder.listening))
    return found, spared, holding.held


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        yield None
        return
    except (AttributeError, OSError):  # no pidfds here: fall back to the pid itself
        yield -1
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _send(victim: Victim, sig: signal.Signals, root: str) -> bool:
    """Signal a victim if it still holds one of its listening sockets; give whether it was signalled."""
    pid = victim.process.pid
    with _pidfd(pid) as fd:
        if fd is None or not holds(root, pid, victim.inodes):
            return False  # gone, or no longer on the port: leave it alone
        try:
            if fd >= 0:
                signal.pidfd_send_signal(fd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            who_is = f"{victim.process.name}, user {victim.process.user}"
            raise PermissionDenied(f"not allowed to signal pid {pid} ({who_is}); run as root or as that user") from None
    return True


def _listening_pids(port: int, udp: bool, root: str) -> tuple[bool, list[ProcessInfo]]:
    holding = who([Target(str(port), port=port)], udp, root=root, listening_only=True)[0]
    return holding.held, [h.process for h in holding.holders]


def stop(
    port: int,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 5.0,
    udp: bool = False,
    root: str = "/proc",
    confirm: Callable[[list[Victim]], bool] = lambda _victims: True,
    on_event: Callable[[str], None] = lambda _text: None,
) -> Outcome:
    """Signal whoever listens on `port`; after `timeout` seconds SIGKILL those still there; confirm the port is free.

    Raises SockscopeError when nothing listens there, or when `confirm` says no.
    """
    found, spared, held = victims(port, udp, root)
    if not found:
        if spared:
            raise SockscopeError(f"port {port} is held only by processes that are never signalled: {spared[0][0].name} ({spared[0][1]})")
        proto = "udp" if udp else "tcp"
        if held:
            raise PermissionDenied(f"something listens on port {port}/{proto}, but its process cannot be seen; run as root")
        raise NothingFound(f"nothing listens on port {port}/{proto}")
    if not confirm(found):
        raise UsageError("nothing was signalled")
    signalled: list[tuple[Victim, str]] = []
    for victim in found:
        if _send(victim, sig, root):
            signalled.append((victim, sig.name))
            on_event(f"sent {sig.name} to pid {victim.process.pid} ({victim.process.name})")
    deadline = time.monotonic() + timeout
    held, left = _listening_pids(port, udp, root)
    while held and time.monotonic() < deadline:
        time.sleep(0.05)
        held, left = _listening_pids(port, udp, root)
    if held and sig != signal.SIGKILL:
        for victim in found:
            if victim.process.pid in {p.pid for p in left} and _send(victim, signal.SIGKILL, root):
                signalled.append((victim, "SIGKILL"))
                on_event(f"pid {victim.process.pid} ({victim.process.name}) still listens after {timeout:g}s: sent SIGKILL")
        deadline = time.monotonic() + 2.0
        while held and time.monotonic() < deadline:
            time.sleep(0.05)
            held, left = _listening_pids(port, udp, root)
    return Outcome(signalled, not held, left, spared)

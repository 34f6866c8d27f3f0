"""Listening sockets made by hand, one system call at a time, so each can be narrated (`--trace`)
and each failure explained: who holds a port in use, why a port is privileged, whether a unix
socket file left behind is stale.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import struct
from collections.abc import Callable
from typing import Any

from ..address import Address, resolve, sockaddr_text
from ..errors import AddressInUse, PermissionDenied, SockscopeError, UsageError

Narrate = Callable[[str], None]

_FAMILIES: dict[int, str] = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6", socket.AF_UNIX: "AF_UNIX"}
_TYPES: dict[int, str] = {socket.SOCK_STREAM: "SOCK_STREAM", socket.SOCK_DGRAM: "SOCK_DGRAM", socket.SOCK_SEQPACKET: "SOCK_SEQPACKET"}


def peer_shut_down(fd: int) -> bool:
    """Tell whether a socket's peer has shut down its writing side (POLLRDHUP).

    On a seqpacket socket both an empty message and the end read as 0 bytes: only this tells them apart.
    """
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP)
    return any(events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _fd, events in poller.poll(0))


def peer_credentials(sock: Any) -> tuple[int, int] | None:
    """Give (pid, uid) of a unix socket's peer from SO_PEERCRED, or None when it cannot be read."""
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except (OSError, AttributeError):
        return None
    return pid, uid


def syscall(narrate: Narrate | None, text: str, call: Callable[[], Any], shown: Callable[[Any], str] | None = None) -> Any:
    """Run one system call; when narrating, say what it was and what the kernel returned."""
    try:
        result = call()
    except OSError as exc:
        if narrate:
            name = errno.errorcode.get(exc.errno or 0, "?")
            narrate(f"{text} = -1 {name} ({exc.strerror})")
        raise
    if narrate:
        narrate(f"{text} = {shown(result) if shown else 0}")
    return result


def _new_socket(family: int, kind: int, narrate: Narrate | None) -> socket.socket:
    text = f"socket({_FAMILIES.get(family, family)}, {_TYPES.get(kind, kind)}|SOCK_NONBLOCK|SOCK_CLOEXEC, 0)"
    try:
        return syscall(narrate, text, lambda: socket.socket(family, kind | socket.SOCK_NONBLOCK), lambda s: f"fd {s.fileno()}")  # type: ignore[no-any-return]
    except OSError as exc:  # EMFILE: out of descriptors (many workers, a low ulimit -n)
        raise SockscopeError(f"cannot open a socket: {exc.strerror}") from None


def _setopt(sock: socket.socket, level: int, name: int, level_text: str, name_text: str, narrate: Narrate | None) -> None:
    syscall(narrate, f"setsockopt(fd {sock.fileno()}, {level_text}, {name_text}, 1)", lambda: sock.setsockopt(level, name, 1))


def holder_text(port: int, udp: bool) -> str:
    """Name the processes holding a port (`pid 812 (nginx, user www-data)`), or '' when none can be seen."""
    from ..ports.who import Target, who

    try:
        holdings = who([Target(str(port), port=port)], udp, listening_only=not udp)
    except SockscopeError:
        return ""
    holders = [h.process for holding in holdings for h in holding.holders]
    return ", ".join(f"pid {p.pid} ({p.name}, user {p.user})" for p in holders)


def privileged_message(port: int) -> str:
    """Explain why binding a port was refused."""
    from ..ports.free import unprivileged_port_start

    start = unprivileged_port_start()
    if port < start:
        return (
            f"port {port} is privileged: ports below {start} (net.ipv4.ip_unprivileged_port_start) need root "
            "or CAP_NET_BIND_SERVICE; choose a port of 1024 or more"
        )
    return f"binding port {port} was refused (permission denied by the kernel or a security module)"


def _bind_error(exc: OSError, address: Address, shown: str) -> SockscopeError:
    if exc.errno == errno.EADDRINUSE:
        if address.port is not None:
            holder = holder_text(address.port, address.kind == "udp")
            by = f": held by {holder}" if holder else " (by a process this user cannot see)" if os.geteuid() else ""
            return AddressInUse(f"{shown} is already in use{by}")
        return AddressInUse(f"{shown} is already in use")
    if exc.errno == errno.EACCES:
        if address.port is not None:
            return PermissionDenied(privileged_message(address.port))
        return PermissionDenied(f"cannot create {shown}: permission denied")
    if exc.errno == errno.EADDRNOTAVAIL:
        return SockscopeError(f"cannot bind {shown}: that address is not on this host")
    return SockscopeError(f"cannot bind {shown}: {exc.strerror}")


def open_inet(address: Address, *, backlog: int, reuse_port: bool, narrate: Narrate | None, port: int | None = None) -> list[socket.socket]:
    """Bind (and for TCP listen on) every address `address` resolves to; typed errors on failure."""
    if port is not None:
        address = address._replace(port=port)
    found = list(dict.fromkeys(resolve(address, passive=True)))
    kind = address.socket_type
    made: list[socket.socket] = []
    try:
        for family, sockaddr in found:
            sock = _new_socket(family, kind, narrate)
            made.append(sock)
            if kind == socket.SOCK_STREAM:
                _setopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR, "SOL_SOCKET", "SO_REUSEADDR", narrate)
            if reuse_port:
                _setopt(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT, "SOL_SOCKET", "SO_REUSEPORT", narrate)
            if family == socket.AF_INET6 and len(found) > 1:
                _setopt(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, "IPPROTO_IPV6", "IPV6_V6ONLY", narrate)
            if address.port == 0 and made[:-1]:  # a port the kernel chose: the other addresses take the same one
                sockaddr = (sockaddr[0], made[0].getsockname()[1], *sockaddr[2:])
            shown = sockaddr_text(sockaddr)
            try:
                syscall(narrate, f"bind(fd {sock.fileno()}, {shown})", lambda s=sock, a=sockaddr: s.bind(a))  # type: ignore[misc]
            except OSError as exc:
                raise _bind_error(exc, address, shown) from None
            if kind == socket.SOCK_STREAM:
                syscall(narrate, f"listen(fd {sock.fileno()}, {backlog})", lambda s=sock: s.listen(backlog))  # type: ignore[misc]
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def _answers(path: str, kind: int) -> bool:
    probe = socket.socket(socket.AF_UNIX, kind)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def open_unix(address: Address, *, backlog: int, narrate: Narrate | None) -> socket.socket:
    """Bind (and listen on) a unix socket; a stale socket file is replaced only when nothing answers on it."""
    name = address.unix_name
    shown = address.path or ""
    kind = address.socket_type
    if isinstance(name, str):
        try:
            info = os.lstat(name)
        except FileNotFoundError:
            info = None
        except PermissionError:
            raise PermissionDenied(f"cannot use {name}: permission denied (a directory on the way cannot be searched)") from None
        except OSError as exc:
            raise SockscopeError(f"cannot use {name}: {exc.strerror}") from None
        if info is not None:
            if not stat.S_ISSOCK(info.st_mode):
                raise UsageError(f"{name} exists and is not a socket; not replacing it")
            # connect() to a file whose socket is gone is refused; a live one (of any kind) accepts it
            if _answers(name, kind):
                raise AddressInUse(f"{name} is in use: a live socket is bound to it")
            syscall(narrate, f"unlink({name!r})", lambda: os.unlink(name))
    sock = _new_socket(socket.AF_UNIX, kind, narrate)
    try:
        if kind == socket.SOCK_DGRAM:  # senders' credentials ride along from the very first datagram
            _setopt(sock, socket.SOL_SOCKET, socket.SO_PASSCRED, "SOL_SOCKET", "SO_PASSCRED", narrate)
        try:
            syscall(narrate, f"bind(fd {sock.fileno()}, {shown})", lambda: sock.bind(name))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(f"{shown} is already in use") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise PermissionDenied(f"cannot create {shown}: permission denied") from None
            raise SockscopeError(f"cannot bind {shown}: {exc.strerror or exc}") from None
        if kind != socket.SOCK_DGRAM:
            syscall(narrate, f"listen(fd {sock.fileno()}, {backlog})", lambda: sock.listen(backlog))
    except BaseException:
        sock.close()
        raise
    return sock


def accept_clients(loop: Any, listener: socket.socket, take: Callable[[socket.socket], object]) -> Callable[[], None]:
    """Hand every client accepted on `listener` (non-blocking) to `take`; give the function that stops accepting.

    For servers that accept by hand (seqpacket, which asyncio refuses; TLS, whose handshake must
    count as a connection): up to 64 clients a wake-up, so one busy listener cannot starve the loop.
    """

    def acceptable() -> None:
        for _ in range(64):
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: try again on the next wake-up
                return
            sock.setblocking(False)
            take(sock)

    loop.add_reader(listener.fileno(), acceptable)

    def stop() -> None:
        loop.remove_reader(listener.fileno())

    return stop

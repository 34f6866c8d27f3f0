"""The netcat side: connect to (or accept) one peer; `bridge()` (net/bridge.py) then copies.

Standard input goes to the socket, the socket goes to standard output, byte for byte. TLS, UDP
and every unix kind use the same copy loop.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

from ..address import Address, resolve, sockaddr_text
from ..errors import ConnectFailed, UsageError
from ..records import NamedTuple
from .bridge import Options, bridge
from .listeners import Narrate, peer_credentials

__all__ = ["Options", "Probe", "accept", "bridge", "client_tls", "connect", "describe", "listen_socket", "probe"]

_UNIX_FAMILY = {"unix": socket.SOCK_STREAM, "unix-dgram": socket.SOCK_DGRAM, "seqpacket": socket.SOCK_SEQPACKET}


def _failure(address: str, exc: OSError | TimeoutError) -> ConnectFailed:
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return ConnectFailed(f"{address}: timed out")
    if exc.errno == errno.ECONNREFUSED:
        return ConnectFailed(f"{address}: connection refused (nothing listens there)")
    if exc.errno == errno.ENOENT:
        return ConnectFailed(f"{address}: no such socket file")
    return ConnectFailed(f"{address}: {exc.strerror or exc}")


def connect(
    address: Address, timeout: float | None = None, tls: ssl.SSLContext | None = None, server_name: str | None = None, narrate: Narrate | None = None
) -> socket.socket:
    """Connect to `address` (every resolved address in turn); ConnectFailed when none answers.

    With `narrate`, each step is told as the kernel answered it: the name resolution, socket(),
    connect() with the port the kernel chose, the TLS handshake.
    """
    if address.is_unix:
        sock = _open(socket.AF_UNIX, _UNIX_FAMILY[address.kind], narrate)
        sock.settimeout(timeout)
        try:
            if address.kind == "unix-dgram":
                _call(narrate, f"bind(fd {sock.fileno()}, autobind)", lambda: sock.bind(b""), lambda _: f"0, named {sockaddr_text(sock.getsockname())}")
            _call(narrate, f"connect(fd {sock.fileno()}, {sockaddr_text(address.unix_name)})", lambda: sock.connect(address.unix_name), timeout=timeout)
        except OSError as exc:
            _close(sock, narrate)
            raise _failure(str(address.path), exc) from None
        return _wrap(sock, tls, server_name, str(address.path), timeout, narrate)
    last: OSError | None = None
    for family, sockaddr in _resolve(address, narrate):
        sock = _open(family, address.socket_type, narrate)
        sock.settimeout(timeout)
        try:
            _call(narrate, f"connect(fd {sock.fileno()}, {sockaddr_text(sockaddr)})", partial(sock.connect, sockaddr), _chosen(sock), timeout)
        except OSError as exc:
            _close(sock, narrate)
            last = exc
            continue
        return _wrap(sock, tls, server_name or address.host, sockaddr_text(sockaddr), timeout, narrate)
    assert last is not None
    raise _failure(f"{address.host}:{address.port}", last)


def _resolve(address: Address, narrate: Narrate | None) -> list[tuple[int, tuple[Any, ...]]]:
    """Give resolve(address), telling the lookup and its answers when narrating."""
    text = f"getaddrinfo({address.host!r}, {address.port}, {'SOCK_DGRAM' if address.kind == 'udp' else 'SOCK_STREAM'})"
    try:
        found = resolve(address)
    except UsageError as exc:
        if narrate:
            narrate(f"{text} failed: {exc.message}")
        raise
    if narrate:
        narrate(f"{text} = {', '.join(sockaddr_text(sockaddr) for _family, sockaddr in found)}")
    return found


def _open(family: int, kind: int, narrate: Narrate | None) -> socket.socket:
    names: dict[int, str] = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6", socket.AF_UNIX: "AF_UNIX"}
    kinds: dict[int, str] = {socket.SOCK_STREAM: "SOCK_STREAM", socket.SOCK_DGRAM: "SOCK_DGRAM", socket.SOCK_SEQPACKET: "SOCK_SEQPACKET"}
    text = f"socket({names.get(family, family)}, {kinds.get(kind, kind)}, 0)"
    made: socket.socket = _call(narrate, text, lambda: socket.socket(family, kind), lambda s: f"fd {s.fileno()}")
    return made


def _chosen(sock: socket.socket) -> Callable[[Any], str]:
    """Give what a successful connect() tells: the local address, with the port the kernel picked."""

    def shown(_result: Any) -> str:
        try:
            local = sock.getsockname()
        except OSError:
            return "0"
        if isinstance(local, tuple):
            return f"0, local {sockaddr_text(local)} (port {local[1]} chosen by the kernel)"
        return f"0, local {sockaddr_text(local)}"

    return shown


def _call(narrate: Narrate | None, text: str, call: Callable[[], Any], shown: Callable[[Any], str] | None = None, timeout: float | None = None) -> Any:
    """Run one system call; when narrating, say what the kernel answered (the errno's name on failure)."""
    try:
        result = call()
    except OSError as exc:
        if narrate:
            if exc.errno is None and isinstance(exc, TimeoutError):  # the -w limit ran out, not the kernel
                narrate(f"{text} = no answer within {timeout:g}s (-w), given up")
            else:
                narrate(f"{text} = -1 {errno.errorcode.get(exc.errno or 0, '?')} ({exc.strerror})")
        raise
    if narrate:
        narrate(f"{text} = {shown(result) if shown else 0}")
    return result


def _close(sock: socket.socket, narrate: Narrate | None) -> None:
    fd = sock.fileno()
    sock.close()
    if narrate and fd >= 0:
        narrate(f"close(fd {fd}) = 0")


def _wrap(
    sock: socket.socket, tls: ssl.SSLContext | None, server_name: str | None, shown: str, timeout: float | None, narrate: Narrate | None = None
) -> socket.socket:
    if tls is None:
        return sock
    try:
        wrapped = tls.wrap_socket(sock, server_hostname=server_name if tls.check_hostname else None)
        if narrate:
            narrate(f"TLS handshake (server name {server_name!r}) = {wrapped.version()}, {(wrapped.cipher() or ('?',))[0]}")
    except ssl.SSLCertVerificationError as exc:
        if narrate:
            narrate(f"TLS handshake (server name {server_name!r}) failed: {exc.verify_message}")
        sock.close()
        raise ConnectFailed(f"{shown}: TLS certificate not trusted ({exc.verify_message}); --insecure skips the check") from None
    except (ssl.SSLError, OSError) as exc:
        if narrate:
            narrate(f"TLS handshake (server name {server_name!r}) failed: {exc}")
        sock.close()
        raise ConnectFailed(f"{shown}: TLS handshake failed: {exc}") from None
    wrapped.settimeout(timeout)
    return wrapped


def client_tls(insecure: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """Give a client TLS context: verifying certificates and names unless `insecure`."""
    try:
        context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca-file {ca_file!r}: cannot load CA certificates from it: {exc.strerror or exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Probe(NamedTuple):
    """The answer of a zero-I/O check of one port."""

    address: Address
    state: str  # open, closed, timeout, open|filtered
    detail: str


def probe(address: Address, timeout: float, narrate: Narrate | None = None) -> Probe:
    """Check one address without sending data: TCP and unix connect; UDP an empty datagram and a wait for ICMP."""
    if address.kind == "udp":
        return _probe_udp(address, timeout)
    try:
        _close(connect(address, timeout, narrate=narrate), narrate)
    except ConnectFailed as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, TimeoutError) or "timed out" in exc.message:
            return Probe(address, "timeout", f"no answer within {timeout:g}s")
        return Probe(address, "closed", exc.message.split(": ", 1)[-1].split(" (")[0])
    return Probe(address, "open", "connected")


def _probe_udp(address: Address, timeout: float) -> Probe:
    family, sockaddr = resolve(address)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            sock.send(b"")
            sock.recv(1)
        except TimeoutError:
            return Probe(address, "open|filtered", "no answer (no ICMP port unreachable)")
        except ConnectionRefusedError:
            return Probe(address, "closed", "ICMP port unreachable")
        except OSError as exc:
            return Probe(address, "closed", exc.strerror or str(exc))
    return Probe(address, "open", "answered")


def listen_socket(address: Address) -> socket.socket:
    """Bind `address` for `listen` (errors name who holds it)."""
    from .listeners import open_inet, open_unix

    if address.is_unix:
        return open_unix(address, backlog=16, narrate=None)
    found = open_inet(address, backlog=16, reuse_port=False, narrate=None)
    for extra in found[1:]:
        extra.close()
    return found[0]


def accept(listener: socket.socket, timeout: float | None) -> tuple[socket.socket, str]:
    """Wait for one client (for datagram sockets: the first datagram's sender, then connected to it)."""
    listener.settimeout(timeout)
    try:
        if listener.type == socket.SOCK_DGRAM:
            data, peer = listener.recvfrom(1 << 18, socket.MSG_PEEK)
            del data
            if not peer:
                raise UsageError("the first datagram came from an unnamed socket: nothing to answer")
            listener.connect(peer)
            return listener, sockaddr_text(peer)
        conn, peer = listener.accept()
    except TimeoutError:
        raise ConnectFailed(f"no client within {timeout:g}s") from None
    return conn, sockaddr_text(peer) if peer else _unix_peer(conn)


def _unix_peer(conn: socket.socket) -> str:
    creds = peer_credentials(conn)
    return f"pid {creds[0]} uid {creds[1]}" if creds else "(unnamed)"


def describe(sock: Any) -> str:
    """Give `local -> peer` of a connected socket, safe to show on a terminal (unix names escaped)."""
    from .hub import printable_text

    with contextlib.suppress(OSError):
        return printable_text(f"{sockaddr_text(sock.getsockname())} -> {sockaddr_text(sock.getpeername())}")
    return "?"

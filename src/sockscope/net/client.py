"""The netcat side: connect to (or accept) one peer; `bridge()` (net/bridge.py) then copies.

Standard input goes to the socket, the socket goes to standard output, byte for byte. TLS, UDP
and every unix kind use the same copy loop.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from typing import Any

from ..address import Address, resolve, sockaddr_text
from ..errors import ConnectFailed, UsageError
from ..records import NamedTuple
from .bridge import Options, bridge
from .listeners import peer_credentials

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


def connect(address: Address, timeout: float | None = None, tls: ssl.SSLContext | None = None, server_name: str | None = None) -> socket.socket:
    """Connect to `address` (every resolved address in turn); ConnectFailed when none answers."""
    if address.is_unix:
        sock = socket.socket(socket.AF_UNIX, _UNIX_FAMILY[address.kind])
        sock.settimeout(timeout)
        try:
            if address.kind == "unix-dgram":
                sock.bind(b"")  # an autobound name, so that the server can answer
            sock.connect(address.unix_name)
        except OSError as exc:
            sock.close()
            raise _failure(str(address.path), exc) from None
        return _wrap(sock, tls, server_name, str(address.path), timeout)
    last: OSError | None = None
    for family, sockaddr in resolve(address):
        sock = socket.socket(family, address.socket_type)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return _wrap(sock, tls, server_name or address.host, sockaddr_text(sockaddr), timeout)
    assert last is not None
    raise _failure(f"{address.host}:{address.port}", last)


def _wrap(sock: socket.socket, tls: ssl.SSLContext | None, server_name: str | None, shown: str, timeout: float | None) -> socket.socket:
    if tls is None:
        return sock
    try:
        wrapped = tls.wrap_socket(sock, server_hostname=server_name if tls.check_hostname else None)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise ConnectFailed(f"{shown}: TLS certificate not trusted ({exc.verify_message}); --insecure skips the check") from None
    except (ssl.SSLError, OSError) as exc:
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


def probe(address: Address, timeout: float) -> Probe:
    """Check one address without sending data: TCP and unix connect; UDP an empty datagram and a wait for ICMP."""
    if address.kind == "udp":
        return _probe_udp(address, timeout)
    try:
        connect(address, timeout).close()
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

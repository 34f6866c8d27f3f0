"""The netcat side: connect to (or accept) one peer and bridge it with two file descriptors.

Standard input goes to the socket, the socket goes to standard output, byte for byte. On input
EOF the writing side is shut down (TCP, unix stream, seqpacket) and reading goes on until the
peer closes; `quit_after` ends it earlier. TLS, UDP and every unix kind use the same loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..address import Address, resolve, sockaddr_text
from ..errors import ConnectFailed, UsageError
from .listeners import peer_credentials

CHUNK = 64 * 1024
_UNIX_FAMILY = {"unix": socket.SOCK_STREAM, "unix-dgram": socket.SOCK_DGRAM, "seqpacket": socket.SOCK_SEQPACKET}


class Options(NamedTuple):
    """How to bridge: the options of `connect` and `listen`."""

    timeout: float | None = None  # -w: connecting, and silence in both directions
    quit_after: float | None = None  # -q: seconds after input EOF (None: wait for the peer)
    shutdown: bool = True  # shut down writing on input EOF
    send_only: bool = False
    recv_only: bool = False
    crlf: bool = False
    hexdump: bool = False


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
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
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


class HexDump:
    """Writes traffic as `offset  hex bytes  |ascii|` lines, with `>` for sent and `<` for received."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.offsets = {">": 0, "<": 0}

    def __call__(self, direction: str, data: bytes) -> None:
        lines = []
        offset = self.offsets[direction]
        for start in range(0, len(data), 16):
            row = data[start : start + 16]
            hexes = " ".join(f"{b:02x}" for b in row)
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
            lines.append(f"{direction} {offset + start:08x}  {hexes:<47}  |{text}|\n")
        self.offsets[direction] = offset + len(data)
        self.write("".join(lines).encode())


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte to a (blocking) file descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _CrLf:
    """LF -> CRLF across chunk boundaries (an LF already after a CR is left alone)."""

    def __init__(self) -> None:
        self.last = b""

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        previous = self.last
        for line in data.split(b"\n")[:-1]:
            out += line + (b"\n" if (line[-1:] or previous) == b"\r" else b"\r\n")
            previous = b""
        out += data.rsplit(b"\n", 1)[-1] if b"\n" in data else data
        self.last = data[-1:] if data else self.last
        return bytes(out)


def bridge(sock: socket.socket, options: Options, stdin_fd: int = 0, stdout_fd: int = 1, dump: Callable[[str, bytes], None] | None = None) -> str:
    """Copy stdin to the socket and the socket to stdout until done; give why it ended.

    Ends when the peer closes (after input EOF, or at once with --send-only), after `quit_after`
    seconds past input EOF, or after `timeout` seconds of silence both ways.
    """
    sock.setblocking(False)
    datagram = sock.type in (socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)  # one message per input read
    # TLS has no half-close of its own: after input EOF it waits for the peer (or -q)
    tls = isinstance(sock, ssl.SSLSocket)
    want_shutdown = options.shutdown and sock.type != socket.SOCK_DGRAM and not tls
    selector = selectors.PollSelector()  # holds no descriptor of its own: nothing to close
    pending = bytearray()
    reading_input = not options.recv_only
    reading_peer = not options.send_only
    crlf = _CrLf() if options.crlf else None
    eof_at: float | None = None
    last_activity = time.monotonic()
    outgoing: list[bytes] = []
    try:
        os.fstat(stdin_fd)
    except OSError:
        reading_input = False
        eof_at = time.monotonic()
    while True:
        now = time.monotonic()
        if eof_at is not None and not pending and not outgoing:
            if options.send_only or not reading_peer:
                return "input ended"
            if options.quit_after is not None and now - eof_at >= options.quit_after:
                return f"quit {options.quit_after:g}s after input ended"
        if options.timeout is not None and now - last_activity >= options.timeout:
            return f"idle for {options.timeout:g}s"
        waits = []
        if options.timeout is not None:
            waits.append(last_activity + options.timeout - now)
        if eof_at is not None and options.quit_after is not None:
            waits.append(eof_at + options.quit_after - now)
        _want(selector, stdin_fd, selectors.EVENT_READ if reading_input and len(pending) < 4 * CHUNK and len(outgoing) < 64 else 0)
        _want(selector, sock, (selectors.EVENT_READ if reading_peer else 0) | (selectors.EVENT_WRITE if pending or outgoing else 0))
        ready_now = tls and reading_peer and sock.pending() > 0  # type: ignore[attr-defined]
        ready = selector.select(0 if ready_now else max(0.0, min(waits)) if waits else None)
        sock_ready = selectors.EVENT_READ if ready_now else 0
        for key, events in ready:
            if key.fileobj is sock:
                sock_ready |= events
            elif events & selectors.EVENT_READ:
                data = os.read(stdin_fd, CHUNK)
                if not data:
                    reading_input = False
                    eof_at = time.monotonic()
                    continue
                last_activity = time.monotonic()
                if crlf:
                    data = crlf(data)
                if datagram:
                    outgoing.append(data)
                else:
                    pending += data
        if sock_ready & selectors.EVENT_WRITE:
            sent_any = _send(sock, pending, outgoing, dump)
            if sent_any:
                last_activity = time.monotonic()
        if sock_ready & selectors.EVENT_READ:
            done = _receive(sock, stdout_fd, dump, datagram)
            if done is None:
                last_activity = time.monotonic()
            else:
                return done
        if want_shutdown and eof_at is not None and not pending and not outgoing:
            want_shutdown = False
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)


def _want(selector: selectors.BaseSelector, fileobj: Any, events: int) -> None:
    """Watch `fileobj` for `events` (0: not at all), touching the selector only when that changes."""
    try:
        key = selector.get_key(fileobj)
    except KeyError:
        if events:
            selector.register(fileobj, events)
        return
    if not events:
        selector.unregister(fileobj)
    elif key.events != events:
        selector.modify(fileobj, events)


def _send(sock: socket.socket, pending: bytearray, outgoing: list[bytes], dump: Callable[[str, bytes], None] | None) -> bool:
    try:
        if outgoing:
            sock.send(outgoing[0])
            sent_data = outgoing.pop(0)
        else:
            count = sock.send(pending[:CHUNK])
            sent_data = bytes(pending[:count])
            del pending[:count]
    except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False
    except OSError as exc:
        raise ConnectFailed(f"sending failed: {exc.strerror or exc}") from None
    if dump:
        dump(">", sent_data)
    return True


def _receive(sock: socket.socket, stdout_fd: int, dump: Callable[[str, bytes], None] | None, datagram: bool) -> str | None:
    """Move what arrived to stdout; give why reading ended (the peer closed), or None to go on."""
    for _ in range(16):
        try:
            data = sock.recv(CHUNK if not datagram else 1 << 18)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except ConnectionRefusedError:
            raise ConnectFailed("connection refused (the peer's port is closed)") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS error: {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ECONNRESET:
                return "the peer reset the connection"
            raise ConnectFailed(f"receiving failed: {exc.strerror or exc}") from None
        if not data:
            if datagram and sock.type == socket.SOCK_DGRAM:
                continue  # an empty datagram is a datagram
            return "the peer closed"
        if dump:
            dump("<", data)
        else:
            write_all(stdout_fd, data)
    return None


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
    """Give `local -> peer` of a connected socket."""
    with contextlib.suppress(OSError):
        return f"{sockaddr_text(sock.getsockname())} -> {sockaddr_text(sock.getpeername())}"
    return "?"

"""What to say to a port, and what its answer says about it.

UDP services mostly stay silent unless asked a question in their own protocol, so a UDP scan
sends each well-known port a small valid request (`udp_payload`); other ports get an empty
datagram. For TCP, `grab_banners` reads what a service says first and, if it says nothing,
asks `GET / HTTP/1.0`; `identify` names the service from what came back. The payloads are
built here from the protocols' own formats; `identify` is pure (bytes in, names out).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence

from .engine import RST_LINGER


def _ber(tag: int, body: bytes) -> bytes:
    """One BER element (short or long length form)."""
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


def _dns_query(name: str, qtype: int, qclass: int = 1, ident: int = 0x5353) -> bytes:
    labels = b"".join(bytes((len(part),)) + part.encode() for part in name.split(".") if part) + b"\x00"
    return struct.pack("!HHHHHH", ident, 0, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, qclass)


def _snmp_get(community: bytes = b"public") -> bytes:
    """SNMPv2c get-request for sysDescr.0 (1.3.6.1.2.1.1.1.0)."""
    oid = _ber(0x06, bytes((0x2B, 6, 1, 2, 1, 1, 1, 0)))
    varbinds = _ber(0x30, _ber(0x30, oid + _ber(0x05, b"")))
    pdu = _ber(0xA0, _ber(0x02, b"\x12\x34") + _ber(0x02, b"\x00") + _ber(0x02, b"\x00") + varbinds)
    return _ber(0x30, _ber(0x02, b"\x01") + _ber(0x04, community) + pdu)


def _netbios_status() -> bytes:
    """NetBIOS node status request for the wildcard name `*`."""
    encoded = bytes((0x20,)) + b"CK" + b"A" * 30 + b"\x00"
    return struct.pack("!HHHHHH", 0x4E42, 0, 1, 0, 0, 0) + encoded + struct.pack("!HH", 0x21, 1)


def _rpc_null(program: int = 100000, version: int = 2) -> bytes:
    """ONC RPC call of procedure 0 (NULL), AUTH_NULL credentials."""
    return struct.pack("!IIIIIIIIII", 0x50524F42, 0, 2, program, version, 0, 0, 0, 0, 0)


def _sip_options() -> bytes:
    lines = (
        "OPTIONS sip:nobody@localhost SIP/2.0",
        "Via: SIP/2.0/UDP localhost:5060;branch=z9hG4bK-sockscope",
        "Max-Forwards: 70",
        "To: <sip:nobody@localhost>",
        "From: <sip:sockscope@localhost>;tag=sockscope",
        "Call-ID: sockscope@localhost",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


UDP_PAYLOADS: dict[int, bytes] = {
    53: _dns_query("", 2),  # the root's name servers
    69: b"\x00\x01sockscope\x00octet\x00",  # TFTP read request (an error answer is an answer)
    111: _rpc_null(),
    123: b"\x23" + b"\x00" * 47,  # NTPv4 client request
    137: _netbios_status(),
    161: _snmp_get(),
    1194: b"\x38" + b"\x00" * 8 + b"\x00\x00\x00\x00\x00",  # OpenVPN hard reset
    1900: b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n',
    3478: struct.pack("!HHI", 1, 0, 0x2112A442) + b"sockscope-id",  # STUN binding request
    5060: _sip_options(),
    5351: b"\x00\x00",  # NAT-PMP external address request
    5353: _dns_query("_services._dns-sd._udp.local", 12),
    11211: struct.pack("!HHHH", 1, 0, 1, 0) + b"version\r\n",  # memcached UDP frame
}
UDP_PAYLOADS[2049] = _rpc_null(100003, 3)  # NFS
UDP_PAYLOADS[5355] = _dns_query("sockscope", 1)  # LLMNR


def udp_payload(port: int) -> bytes:
    """The datagram to send to a UDP port: a request in its protocol, or nothing."""
    return UDP_PAYLOADS.get(port, b"")


HTTP_PROBE = b"GET / HTTP/1.0\r\nUser-Agent: sockscope\r\nAccept: */*\r\n\r\n"
_TALKERS: tuple[tuple[bytes, str], ...] = (
    (b"SSH-", "ssh"),
    (b"HTTP/", "http"),
    (b"+OK", "pop3"),
    (b"* OK", "imap"),
    (b"RFB ", "vnc"),
    (b"-NOAUTH", "redis"),
    (b"-ERR unknown command", "redis"),
    (b"-ERR wrong number", "redis"),
    (b"AMQP", "amqp"),
)


def _printable(data: bytes, limit: int = 160) -> str:
    """The first line as printable text; binary answers are told by their size only."""
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    text = "".join(ch if 32 <= ord(ch) < 127 else "." for ch in line.decode("latin-1"))
    if line and sum(32 <= byte < 127 for byte in line) < 0.6 * len(line):
        return f"[{len(data)} bytes]"
    return text[:limit]


def identify(data: bytes, proto: str = "tcp") -> tuple[str | None, str]:
    """Name the service from its first words; give (name or None, a one-line printable banner)."""
    if not data:
        return None, ""
    if proto == "tcp":
        for prefix, name in _TALKERS:
            if data.startswith(prefix):
                if name == "http":
                    return name, _http_summary(data)
                return name, _printable(data)
        if data.startswith(b"220"):
            upper = data.upper()
            if b"FTP" in upper:
                return "ftp", _printable(data)
            if b"SMTP" in upper or b"MAIL" in upper:
                return "smtp", _printable(data)
        if len(data) > 5 and data[4] == 10 and data[3] == 0:  # MySQL handshake: protocol version 10
            version = data[5:].split(b"\x00", 1)[0]
            return "mysql", "MySQL " + _printable(version)
    return None, _printable(data)


def _http_summary(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    status = _printable(head[0])
    for line in head[1:]:
        name, _colon, value = line.partition(b":")
        if name.strip().lower() == b"server":
            return f"{status} ({_printable(value.strip())})"
    return status


def grab_banners(
    items: Sequence[tuple[str, int, int]],
    timeout: float = 2.0,
    concurrency: int = 256,
    stop: Callable[[], bool] | None = None,
) -> list[bytes]:
    """Connect to each (address, family, port); give what each said first (or to an HTTP probe).

    A service that says nothing within half the timeout is asked `GET / HTTP/1.0`. Reading stops
    at 4 KiB, when the peer closes, or 0.2 s after its last bytes. Connections end with a reset.
    """
    answers = [b""] * len(items)
    poller = select.epoll()
    live: dict[int, tuple[socket.socket, int, float, bool]] = {}  # fd -> sock, index, deadline, probed
    quiet: dict[int, float] = {}  # fd -> when to give up waiting for more
    pending = list(range(len(items)))[::-1]
    try:
        while pending or live:
            if stop is not None and stop():
                break
            while pending and len(live) < concurrency:
                index = pending.pop()
                address, family, port = items[index]
                sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                result = sock.connect_ex((address, port))
                if result not in (0, errno.EINPROGRESS):
                    sock.close()
                    continue
                poller.register(sock.fileno(), select.EPOLLIN)
                live[sock.fileno()] = (sock, index, time.monotonic() + timeout, False)
            now = time.monotonic()
            wake = min([entry[2] if entry[3] else entry[2] - timeout / 2 for entry in live.values()] + list(quiet.values()) + [now + 1])
            for fd, _events in poller.poll(max(0.0, wake - now)):
                sock, index, deadline, probed = live[fd]
                try:
                    chunk = sock.recv(4096 - len(answers[index]))
                except OSError:
                    chunk = b""
                if chunk:
                    answers[index] += chunk
                    quiet[fd] = time.monotonic() + 0.2
                if not chunk or len(answers[index]) >= 4096:
                    _finish(poller, live, quiet, fd)
            now = time.monotonic()
            for fd, (sock, index, deadline, probed) in list(live.items()):
                if now >= deadline or quiet.get(fd, now + 1) <= now:
                    _finish(poller, live, quiet, fd)
                elif not probed and fd not in quiet and now >= deadline - timeout / 2:
                    with contextlib.suppress(OSError):
                        sock.send(HTTP_PROBE)
                    live[fd] = (sock, index, deadline, True)
    finally:
        for fd in list(live):
            _finish(poller, live, quiet, fd)
        poller.close()
    return answers


def _finish(poller: select.epoll, live: dict[int, tuple[socket.socket, int, float, bool]], quiet: dict[int, float], fd: int) -> None:
    sock = live.pop(fd)[0]
    quiet.pop(fd, None)
    with contextlib.suppress(OSError):
        poller.unregister(fd)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
    sock.close()


__all__ = ["HTTP_PROBE", "UDP_PAYLOADS", "grab_banners", "identify", "udp_payload"]

"""One address syntax for every command that connects, listens or waits.

    9999  :9999  127.0.0.1:9999  [::1]:9999  host:9999
    tcp://host:9999  udp://host:53
    unix:/run/x.sock  unix:@abstract  unix-dgram:/path  seqpacket:/path

A bare port means the default host (loopback unless a command says otherwise).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Literal

from .errors import UsageError
from .records import NamedTuple

Kind = Literal["tcp", "udp", "unix", "unix-dgram", "seqpacket"]
INET_KINDS = ("tcp", "udp")
UNIX_KINDS = ("unix", "unix-dgram", "seqpacket")
_SCHEMES = {"tcp://": "tcp", "udp://": "udp", "unix://": "unix", "unix:": "unix", "unix-dgram:": "unix-dgram", "seqpacket:": "seqpacket"}


class Address(NamedTuple):
    """A parsed address: `host` and `port` for tcp/udp, `path` for the unix kinds (`@name`: abstract)."""

    kind: Kind
    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.kind in UNIX_KINDS

    @property
    def socket_type(self) -> int:
        if self.kind in ("udp", "unix-dgram"):
            return socket.SOCK_DGRAM
        return socket.SOCK_SEQPACKET if self.kind == "seqpacket" else socket.SOCK_STREAM

    @property
    def unix_name(self) -> str | bytes:
        """The name to bind or connect a unix socket to (abstract names start with a NUL byte)."""
        assert self.path is not None
        return b"\0" + self.path[1:].encode() if self.path.startswith("@") else self.path

    def __str__(self) -> str:
        if self.is_unix:
            return f"{self.kind}:{self.path}"
        host = self.host or ""
        shown = f"[{host}]" if ":" in host else host
        return f"{self.kind}://{shown}:{self.port}"


# the 108 bytes of sun_path in struct sockaddr_un less one: a path's final NUL, an abstract name's leading one
UNIX_PATH_MAX = 107


def parse_port(text: str, what: str = "port") -> int:
    """Give a port 1-65535 from text, or raise UsageError naming the bad text."""
    if not text.isdigit():
        raise UsageError(f"{what} {text!r} is not a number (ports are 1-65535)")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"{what} {port} is out of range: ports are 1-65535")
    return port


def port_or_service(text: str, proto: str = "tcp", what: str = "port") -> int:
    """Give a port from a number 1-65535 or a service name of /etc/services (`http`); UsageError otherwise."""
    if text.isdigit() or not text:
        return parse_port(text, what)
    from . import services

    wanted = text.lower()
    for entry in services.entries():
        if entry.proto == proto and wanted in (entry.name.lower(), *(alias.lower() for alias in entry.aliases)):
            return entry.port
    raise UsageError(f"{what} {text!r} is neither a number (1-65535) nor a {proto} service name in /etc/services")


def parse_address(
    text: str, *, default_host: str = "127.0.0.1", default_kind: Kind = "tcp", port_required: bool = True, service_names: bool = False
) -> Address:
    """Give the Address of `text` (see the module doc); UsageError on anything else.

    With `service_names`, a port may also be a service name (`host:http`), as nc allows.
    """
    spec = text.strip()
    kind: Kind = default_kind if default_kind in INET_KINDS else "tcp"
    for prefix, named in _SCHEMES.items():
        if spec.lower().startswith(prefix):
            kind, spec = named, spec[len(prefix) :]  # type: ignore[assignment]
            break
    else:
        if default_kind in UNIX_KINDS or spec.startswith(("/", "./", "@")):
            kind = default_kind if default_kind in UNIX_KINDS else "unix"
    if kind in UNIX_KINDS:
        if not spec or spec == "@":
            raise UsageError(f"{text!r}: the unix socket path is empty")
        if "\0" in spec:
            raise UsageError(f"{text!r}: a unix socket path cannot hold a NUL byte")
        size = len(spec.removeprefix("@").encode("utf-8", "surrogateescape"))
        if size > UNIX_PATH_MAX:
            raise UsageError(f"{text!r}: the unix socket path is {size} bytes; the kernel takes at most {UNIX_PATH_MAX} (use a shorter path)")
        return Address(kind, path=spec)
    if not spec:
        raise UsageError(f"{text!r}: no host or port")
    if spec.isdigit():
        return Address(kind, default_host, parse_port(spec))
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"{text!r}: an IPv6 address goes in brackets, then ':port' ([::1]:8080)")
        port_text = rest[1:]
    elif spec.count(":") > 1:
        raise UsageError(f"{text!r}: put an IPv6 address in brackets ([{spec}]:PORT)")
    else:
        host, _sep, port_text = spec.rpartition(":") if ":" in spec else (spec, "", "")
    host = host or default_host
    if host.replace(".", "").isdigit() and host.count(".") == 3:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UsageError(f"{text!r}: {host} is not an IPv4 address (each of the four numbers is 0-255)") from None
    if not port_text:
        if port_required:
            raise UsageError(f"{text!r}: no port (write HOST:PORT)")
        return Address(kind, host, None)
    return Address(kind, host, port_or_service(port_text, kind) if service_names else parse_port(port_text))


Resolved = list[tuple[int, tuple[Any, ...]]]


def resolve(address: Address, passive: bool = False) -> Resolved:
    """Give (family, sockaddr) for a tcp/udp address, from getaddrinfo; UsageError when the host is unknown."""
    try:
        found = socket.getaddrinfo(address.host, address.port, 0, address.socket_type, 0, socket.AI_PASSIVE if passive else 0)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve host {address.host!r}: {exc.strerror}") from None
    return [(int(family), tuple(sockaddr)) for family, _type, _proto, _name, sockaddr in found]


def parse_range(text: str) -> tuple[int, int]:
    """Give (low, high) from `A-B` (or one port `A`); UsageError unless 1 <= A <= B <= 65535."""
    low_text, sep, high_text = text.partition("-")
    low = parse_port(low_text.strip(), "range start")
    high = parse_port(high_text.strip(), "range end") if sep else low
    if low > high:
        raise UsageError(f"range {text!r} runs backwards: write LOW-HIGH")
    return low, high


def sockaddr_text(sockaddr: Any) -> str:
    """Give `127.0.0.1:9999`, `[::1]:9999`, a unix path or `@abstract` for a socket address."""
    if isinstance(sockaddr, tuple):
        host, port = sockaddr[0], sockaddr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(sockaddr, bytes):
        return "@" + sockaddr[1:].decode(errors="backslashreplace") if sockaddr.startswith(b"\0") else os.fsdecode(sockaddr)
    return str(sockaddr) if sockaddr else "(unnamed)"

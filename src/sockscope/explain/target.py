"""What `explain` is asked about: a port, an address, a unix socket path, a pid or a socket inode."""

from __future__ import annotations

import ipaddress
import os
import stat

from ..errors import UsageError
from ..records import NamedTuple

FORMS = "a port (8080, 53/udp), an address (127.0.0.1:8080), a unix socket path (/run/x.sock, @name), pid:PID or inode:INODE"


class Target(NamedTuple):
    """A parsed TARGET: `kind` is port, address, path, pid or inode; the other fields as the kind needs.

    `proto` is `tcp` or `udp` when the text named one (`53/udp`, `udp://...`), None for both.
    `addresses` are the local addresses an address target matches (its own, in canonical text).
    """

    text: str
    kind: str
    port: int | None = None
    proto: str | None = None
    addresses: tuple[str, ...] = ()
    path: str | None = None
    number: int | None = None


def _number(text: str, spec: str, what: str) -> int:
    digits = spec.strip()
    if not digits.isdigit() or not digits.isascii():
        raise UsageError(f"{text!r}: {what} is not a number")
    value = int(digits)
    if value == 0 or value > 1 << 63:
        raise UsageError(f"{text!r}: {value} is not {'an' if what[0] in 'aeiou' else 'a'} {what} number (give a positive number)")
    return value


def parse_target(text: str) -> Target:
    """Give the Target of the text; UsageError naming the accepted forms when it is none of them."""
    if not text.strip():
        raise UsageError(f"give what to explain: {FORMS}")
    lower = text.lower()
    for prefix, kind in (("pid:", "pid"), ("pid=", "pid"), ("inode:", "inode"), ("inode=", "inode")):
        if lower.startswith(prefix):
            return Target(text, kind, number=_number(text, text[len(prefix) :], kind))
    if lower.startswith("socket:[") and text.endswith("]"):  # as /proc/PID/fd links spell an inode
        return Target(text, "inode", number=_number(text, text[8:-1], "inode"))
    if text.startswith(("/", "./", "../", "@", "unix:")) or _is_socket_file(text):
        return _path_target(text)
    if ":" in text.lstrip(":") or lower.startswith(("tcp://", "udp://")):
        return _address_target(text)
    return _port_target(text)


def _is_socket_file(text: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(text).st_mode)
    except (OSError, ValueError):
        return False


def _path_target(text: str) -> Target:
    from ..ports.who import parse_target as who_target

    spec = text if text.startswith(("/", "./", "../", "@", "unix:")) else f"./{text}"
    return Target(text, "path", path=who_target(spec).path)


def _port_target(text: str) -> Target:
    from ..ports.who import parse_port_target

    spec = text.partition("/")[0].removeprefix(":")
    if spec.isdigit() and spec.isascii() and not 1 <= int(spec) <= 65535:
        raise UsageError(f"{text!r}: port {int(spec)} is out of range (ports are 1-65535); for a process write pid:{spec}, for a socket inode:{spec}")
    if not (spec.isdigit() and spec.isascii()):  # int() would read "٣" as 3: only ASCII digits are a port
        raise UsageError(_service_hint(text, spec) or f"{text!r} is not something to explain: give {FORMS}")
    found = parse_port_target(text)
    return Target(text, "port", port=found.port, proto=found.proto)


def _address_target(text: str) -> Target:
    from ..address import parse_address, resolve

    address = parse_address(text)
    assert address.host is not None and address.port is not None
    try:
        addresses = {_canonical(address.host)}
    except ValueError:  # a host name: every address it has here
        addresses = {_canonical(sockaddr[0]) for _family, sockaddr in resolve(address)}
    proto = address.kind if text.lower().startswith(("tcp://", "udp://")) else None
    return Target(text, "address", port=address.port, proto=proto, addresses=tuple(sorted(addresses)))


def _service_hint(text: str, name: str) -> str | None:
    """Give the line for a service name (`http`): its ports in the services file; None for any other word."""
    from .. import services

    found = sorted({(e.port, e.proto) for e in services.entries() if name in (e.name, *e.aliases)})
    if not found:
        return None
    ports = ", ".join(f"{port}/{proto}" for port, proto in found)
    from .sentences import services_source

    return f"{text!r} is a service name in {services_source()} ({ports}): write the port, e.g. `sockscope explain {found[0][0]}`"


def _canonical(host: str) -> str:
    """Give an address as sockets show it; ::ffff:a.b.c.d is a.b.c.d, reaching IPv4 sockets too."""
    found = ipaddress.ip_address(host.split("%", 1)[0])
    mapped = found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) else None
    return str(mapped) if mapped is not None else str(found)

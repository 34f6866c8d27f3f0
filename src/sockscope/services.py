"""Port numbers and service names: /etc/services, with a small built-in table when it is missing."""

from __future__ import annotations

import os

from .records import NamedTuple

SERVICES_FILE = os.environ.get("SOCKSCOPE_SERVICES", "/etc/services")

# The few names people meet every day, for hosts without /etc/services (minimal containers).
BUILTIN: dict[tuple[int, str], str] = {
    (port, proto): name
    for name, port in (
        ("ftp-data", 20), ("ftp", 21), ("ssh", 22), ("telnet", 23), ("smtp", 25), ("domain", 53),
        ("http", 80), ("pop3", 110), ("ntp", 123), ("imap2", 143), ("snmp", 161), ("ldap", 389),
        ("https", 443), ("submissions", 465), ("syslog", 514), ("submission", 587), ("ldaps", 636),
        ("imaps", 993), ("pop3s", 995), ("mysql", 3306), ("postgresql", 5432), ("redis", 6379),
        ("http-alt", 8080), ("mdns", 5353), ("rsync", 873), ("ms-sql-s", 1433), ("openvpn", 1194),
        ("memcache", 11211), ("mongodb", 27017), ("amqp", 5672), ("kerberos", 88),
    )
    for proto in ("tcp", "udp")
}  # fmt: skip


class Service(NamedTuple):
    """One line of services(5): a name, its port and protocol, and its aliases."""

    name: str
    port: int
    proto: str
    aliases: tuple[str, ...] = ()


def parse_entries(text: str) -> list[Service]:
    """Give every entry of the text of a services(5) file, in file order."""
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or "/" not in fields[1]:
            continue
        port, _, proto = fields[1].partition("/")
        if port.isdigit() and 0 <= int(port) <= 65535:
            found.append(Service(fields[0], int(port), proto.lower(), tuple(fields[2:])))
    return found


_loaded: dict[str, list[Service]] = {}


def entries(path: str | None = None) -> list[Service]:
    """Give the entries of `path` (default /etc/services), or of the built-in table when unreadable; read once."""
    path = path or SERVICES_FILE
    found = _loaded.get(path)
    if found is None:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                found = parse_entries(handle.read())
        except OSError:
            found = [Service(name, port, proto) for (port, proto), name in BUILTIN.items()]
        _loaded[path] = found
    return found


def first_names(found: list[Service]) -> dict[tuple[int, str], str]:
    """Give (port, protocol) -> name; the first entry for a port wins."""
    table: dict[tuple[int, str], str] = {}
    for entry in found:
        table.setdefault((entry.port, entry.proto), entry.name)
    return table


def parse(text: str) -> dict[tuple[int, str], str]:
    """Give (port, protocol) -> name from the text of a services(5) file; the first name wins."""
    return first_names(parse_entries(text))


def table(path: str | None = None) -> dict[tuple[int, str], str]:
    """Give the services table of `path` (default /etc/services), or the built-in one when unreadable."""
    return first_names(entries(path))


def by_port(proto: str, path: str | None = None) -> dict[int, str]:
    """Give port -> service name for one protocol (`tcp` or `udp`)."""
    return {port: name for (port, p), name in table(path).items() if p == proto}


def port_class(port: int) -> str:
    """Give the IANA range a port is in: well-known (0-1023), registered (to 49151) or dynamic."""
    if port < 1024:
        return "well-known"
    return "registered" if port < 49152 else "dynamic"

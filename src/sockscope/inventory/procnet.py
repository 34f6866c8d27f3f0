"""/proc/net/* parsers (pure: text in, Sockets out) and the thin reader that feeds them.

This is the fallback source when netlink sock_diag is missing for a protocol, and the source
of `--source proc`. What /proc cannot tell is left empty: unix peers, queues and uids;
the peer of a netlink socket (shown as not connected); a listener's backlog limit (`send_q`
is 0 there); the device an inet socket is bound to and whether an inet6 one is v6only.

Each parser takes `skipped`: with a list, a line that does not read as a socket is left out
and described there (a listing never fails for one odd line); with None it raises
DecodeError naming the file and line. Lines are split at "\n" alone: a unix socket name may
hold any other byte, and /proc/net/unix prints a name holding "\n" over several lines.
"""

from __future__ import annotations

import _socket as socket  # socket.py adds ~2 ms of start-up (enum conversions) and nothing used here
import os
import re
from collections.abc import Callable

from ..errors import DecodeError, SourceUnavailable
from ..model import (
    KERNEL_STATES,
    Endpoint,
    Family,
    NetId,
    NetlinkEndpoint,
    PacketEndpoint,
    Socket,
    State,
    UnixEndpoint,
)
from .diag import NETLINK_UNCONNECTED, ether_protocol, netlink_protocol

_INET_NETID = {"tcp": NetId.TCP, "udp": NetId.UDP, "raw": NetId.RAW}


def _address(text: str, family: int, cache: dict[str, str]) -> str:
    found = cache.get(text)
    if found is None:
        # The kernel prints each 32-bit word of the address in host (little endian) order.
        raw = b"".join(int(text[i : i + 8], 16).to_bytes(4, "little") for i in range(0, len(text), 8))
        found = cache[text] = socket.inet_ntop(family, raw)
    return found


def _records(text: str) -> list[str]:
    """Give the lines after the header line, split at "\n" alone (no empty last line)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _bad(line: str, number: int, source: str, skipped: list[str] | None) -> None:
    where = f"{source} line {number}: cannot parse {line.strip()[:60]!r}"
    if skipped is None:
        raise DecodeError(where)
    skipped.append(f"line {number}")


def parse_inet(text: str, protocol: str, source: str, netns: str | None = None, skipped: list[str] | None = None) -> list[Socket]:
    """Give the Sockets listed in /proc/net/{tcp,udp,raw}[6]; `protocol` is tcp, udp or raw."""
    netid = _INET_NETID[protocol]
    lines = _records(text)
    out: list[Socket] = []
    cache: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        try:
            local, remote, state, queues = fields[1:5]
            uid, inode = int(fields[7]), int(fields[9])
            laddr, lport = local.split(":")
            raddr, rport = remote.split(":")
            family = socket.AF_INET if len(laddr) == 8 else socket.AF_INET6
            if len(laddr) not in (8, 32) or len(raddr) != len(laddr):
                raise ValueError("address length")
            tx, rx = queues.split(":")
            out.append(
                Socket(
                    netid,
                    Family.INET if family == socket.AF_INET else Family.INET6,
                    KERNEL_STATES[int(state, 16)],
                    int(rx, 16),
                    int(tx, 16),
                    Endpoint(_address(laddr, family, cache), int(lport, 16)),
                    Endpoint(_address(raddr, family, cache), int(rport, 16)),
                    inode,
                    uid,
                    netns,
                )
            )
        except (ValueError, IndexError):
            _bad(line, number, source, skipped)
    return out


_UNIX_NETID = {1: NetId.UNIX_STREAM, 2: NetId.UNIX_DGRAM, 5: NetId.UNIX_SEQPACKET}
_ACCEPTCON = 0x10000


# The kernel's "%pK: %08X %08X %08X %04X %02X %5lu", then " name" for a named socket.
_UNIX_LINE = re.compile(r"[0-9A-Fa-f]+: [0-9A-Fa-f]{8} [0-9A-Fa-f]{8} ([0-9A-Fa-f]{8}) ([0-9A-Fa-f]{4}) ([0-9A-Fa-f]{2}) +(\d+)(?: (.*))?", re.S)


def parse_unix(text: str, source: str, netns: str | None = None, skipped: list[str] | None = None) -> list[Socket]:
    """Give the Sockets listed in /proc/net/unix (no peers, queues or uids: /proc has none).

    A line that is not a record continues the name of the record before it (the name held a
    newline); one that cannot be that either is skipped. A name whose continuation happens to
    look like a record cannot be told apart here: netlink unix_diag has no such ambiguity.
    """
    parts: list[tuple[int, int, int, int, list[str] | None]] = []  # flags, type, state, inode, name pieces
    for number, line in enumerate(_records(text)[1:], start=2):
        match = _UNIX_LINE.fullmatch(line)
        if match is not None and int(match[2], 16) in _UNIX_NETID:
            name = match[5]
            parts.append((int(match[1], 16), int(match[2], 16), int(match[3], 16), int(match[4]), None if name is None else [name]))
        elif parts and parts[-1][4] is not None:
            parts[-1][4].append(line)
        else:
            _bad(line, number, source, skipped)
    out: list[Socket] = []
    for flags, kind, state, inode, pieces in parts:
        path = None if pieces is None else "\n".join(pieces)
        netid = _UNIX_NETID[kind]
        if flags & _ACCEPTCON:
            status = State.LISTEN
        elif state in (2, 3):  # SS_CONNECTING (not yet accepted) or SS_CONNECTED
            status = State.ESTAB
        else:
            status = State.UNCONN
        out.append(Socket(netid, Family.UNIX, status, 0, 0, UnixEndpoint(path, 0), UnixEndpoint(None, 0), inode, None, netns))
    return out


def parse_netlink(text: str, source: str, netns: str | None = None, skipped: list[str] | None = None) -> list[Socket]:
    """Give the Sockets listed in /proc/net/netlink (where a connected socket sends is not known there)."""
    out: list[Socket] = []
    for number, line in enumerate(_records(text)[1:], start=2):
        fields = line.split()
        try:
            protocol, portid, rmem, wmem, inode = int(fields[1]), int(fields[2]), int(fields[4]), int(fields[5]), int(fields[9])
        except (ValueError, IndexError):
            _bad(line, number, source, skipped)
            continue
        name = netlink_protocol(protocol)
        out.append(Socket(NetId.NETLINK, Family.NETLINK, State.UNCONN, rmem, wmem, NetlinkEndpoint(name, portid), NETLINK_UNCONNECTED, inode, None, netns))
    return out


def parse_packet(text: str, source: str, interface: Callable[[int], str], netns: str | None = None, skipped: list[str] | None = None) -> list[Socket]:
    """Give the Sockets listed in /proc/net/packet; `interface` names an ifindex (0 -> `*`)."""
    out: list[Socket] = []
    for number, line in enumerate(_records(text)[1:], start=2):
        fields = line.split()
        try:
            kind, proto, iface, rmem, uid, inode = int(fields[2]), int(fields[3], 16), int(fields[4]), int(fields[6]), int(fields[7]), int(fields[8])
        except (ValueError, IndexError):
            _bad(line, number, source, skipped)
            continue
        netid = NetId.PACKET_DGRAM if kind == socket.SOCK_DGRAM else NetId.PACKET_RAW
        local = PacketEndpoint(ether_protocol(proto), interface(iface))
        out.append(Socket(netid, Family.PACKET, State.UNCONN, rmem, 0, local, PacketEndpoint("", "*"), inode, uid, netns))
    return out


def read(net_dir: str, name: str) -> tuple[str, str]:
    """Give the text of one /proc/net file and its path; SourceUnavailable when it is missing."""
    path = os.path.join(net_dir, name)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            return handle.read(), path
    except FileNotFoundError:
        raise SourceUnavailable(f"{path}: not present on this kernel") from None
    except PermissionError:
        raise SourceUnavailable(f"{path}: not readable") from None

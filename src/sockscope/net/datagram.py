"""UDP and unix datagram serving: every datagram on its own, peers known by their address."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from ..address import sockaddr_text
from .hub import Hub, printable_text, process_name

# chat fan-out: sendto() calls per wake-up before the server lets the loop breathe (what is not read yet waits in the kernel)
FANOUT_PER_TURN = 16384
# a peer whose socket refused this many chat datagrams in a row (it does not read) is forgotten
REFUSED_IN_A_ROW = 64
LARGEST = 65000  # a chat datagram is cut at a line end to stay under the UDP limit; the lines after are not sent


class Peer:
    """A datagram peer, known from the datagrams it sent; forgotten after a silence."""

    __slots__ = ("address", "conn", "creds", "last", "name", "refused", "rx", "started", "tx")

    def __init__(self, address: Any, name: str, conn: int, creds: tuple[int, int] | None) -> None:
        self.address, self.name, self.conn, self.creds = address, name, conn, creds
        self.rx = self.tx = self.refused = 0
        self.started = self.last = time.monotonic()


_CREDS_SPACE = socket.CMSG_SPACE(12)


class DatagramServer:
    """UDP and unix datagram sockets: every datagram handled on its own, many peers at once."""

    def __init__(self, hub: Hub, sock: socket.socket) -> None:
        self.hub, self.sock = hub, sock
        self.mode = hub.settings.mode
        self.peers: dict[Any, Peer] = {}
        self.unix = sock.family == socket.AF_UNIX
        self.forget_after = hub.settings.idle_timeout or 60.0
        self.unreplyable_told = False
        self.fanout = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self.readable)
        self.timer = loop.call_later(min(1.0, self.forget_after / 4), self.forget)

    def stop(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.timer.cancel()
        for peer in list(self.peers.values()):
            self.gone(peer, "server stopped")

    def readable(self) -> None:
        sock = self.sock
        self.fanout = 0
        for _ in range(256):
            if self.fanout > FANOUT_PER_TURN:
                return
            try:
                data, ancillary, flags, address = sock.recvmsg(65536, _CREDS_SPACE if self.unix else 0)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error reported on the socket: nothing to answer
                continue
            creds = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 12:
                    pid, uid, _gid = struct.unpack("3i", payload[:12])
                    creds = (pid, uid)
            self.datagram(data, address or None, creds, bool(flags & socket.MSG_TRUNC))

    def peer(self, address: Any, creds: tuple[int, int] | None) -> Peer:
        key = address if address is not None else ("unnamed", creds)
        # the dict is kept in the order peers were last heard (each moves to the end): the first is the one to forget
        found = self.peers.pop(key, None)
        if found is not None:
            self.peers[key] = found
        else:
            hub = self.hub
            if len(self.peers) >= hub.settings.max_conns:  # the least recently heard peer makes room
                self.gone(next(iter(self.peers.values())), f"--max-conns {hub.settings.max_conns} peers reached")
            name = sockaddr_text(address) if address is not None else "(unnamed)"
            if creds:
                name = f"{name} pid {creds[0]} ({process_name(creds[0])}) uid {creds[1]}"
            hub.count += 1
            found = Peer(address, name, hub.count, creds)
            self.peers[key] = found
            hub.emit("connect", conn=found.conn, peer=name, pid=creds[0] if creds else None, uid=creds[1] if creds else None, detail="first datagram")
        found.last = time.monotonic()
        return found

    def datagram(self, data: bytes, address: Any, creds: tuple[int, int] | None, truncated: bool) -> None:
        hub = self.hub
        peer = self.peer(address, creds)
        peer.rx += len(data)
        if hub.trace:
            hub.narrate(f"recvmsg(fd {self.sock.fileno()}) = {len(data)} from {peer.name}" + (" (MSG_TRUNC: cut to 65536)" if truncated else ""))
        if hub.settings.data_events:
            hub.emit("data", conn=peer.conn, peer=peer.name, size=len(data), data=data)
        if self.mode == "echo":
            self.send(peer, data)
        elif self.mode == "chat":
            # one datagram to each other peer for all the lines of this one, not one per line, and never
            # more: with the name before each line, 64 KiB of empty lines would be 1.2 MiB to send to each
            prefix = b"[" + printable_text(peer.name).encode() + b"] "
            message = _fitting([prefix + line + b"\n" for line in data.splitlines()])
            for other in list(self.peers.values()):
                if other is not peer:
                    self.fanout += 1
                    self.send(other, message, chat=True)

    def send(self, peer: Peer, data: bytes, chat: bool = False) -> None:
        if peer.address is None:
            if not self.unreplyable_told:
                self.unreplyable_told = True
                self.hub.emit("warning", peer=peer.name, detail="a client socket without a name cannot be answered (bind the client to a path)")
            return
        try:
            sent = self.sock.sendto(data, peer.address)
        except OSError as exc:  # a full buffer or a peer gone: a datagram is allowed to be lost
            if self.hub.trace:
                self.hub.narrate(f"sendto(fd {self.sock.fileno()}, {len(data)} bytes, {peer.name}) = -1 ({exc.strerror})")
            peer.refused += 1
            if chat and peer.refused >= REFUSED_IN_A_ROW:
                self.gone(peer, f"too slow to keep up with the chat ({REFUSED_IN_A_ROW} datagrams refused in a row)")
            return
        peer.refused = 0
        peer.tx += sent
        if self.hub.trace:
            self.hub.narrate(f"sendto(fd {self.sock.fileno()}, {len(data)} bytes, {peer.name}) = {sent}")

    def forget(self) -> None:
        limit = time.monotonic() - self.forget_after
        silent = []
        for peer in self.peers.values():  # the least recently heard first: stop at the first heard since
            if peer.last >= limit:
                break
            silent.append(peer)
        for peer in silent:
            self.gone(peer, f"silent for {self.forget_after:g}s")
        self.timer = self.loop.call_later(min(1.0, self.forget_after / 4), self.forget)

    def gone(self, peer: Peer, reason: str) -> None:
        key = peer.address if peer.address is not None else ("unnamed", peer.creds)
        self.peers.pop(key, None)
        seconds = round(time.monotonic() - peer.started, 3)
        self.hub.emit("close", conn=peer.conn, peer=peer.name, sent=peer.tx, received=peer.rx, seconds=seconds, detail=reason)


def _fitting(lines: list[bytes]) -> bytes:
    """Give the first of `lines` that fit in one datagram of at most LARGEST bytes (a longer first line is cut)."""
    size = 0
    for count, line in enumerate(lines):
        if size + len(line) > LARGEST:
            return b"".join(lines[:count]) if count else line[:LARGEST]
        size += len(line)
    return b"".join(lines)

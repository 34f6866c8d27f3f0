"""UDP and unix datagram serving: every datagram on its own, peers known by their address."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from ..address import sockaddr_text
from .hub import Hub, process_name


class Peer:
    """A datagram peer, known from the datagrams it sent; forgotten after a silence."""

    __slots__ = ("address", "conn", "creds", "last", "name", "rx", "started", "tx")

    def __init__(self, address: Any, name: str, conn: int, creds: tuple[int, int] | None) -> None:
        self.address, self.name, self.conn, self.creds = address, name, conn, creds
        self.rx = self.tx = 0
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
        for _ in range(256):
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
        found = self.peers.get(key)
        if found is None:
            hub = self.hub
            if len(self.peers) >= hub.settings.max_conns:  # the least recently heard peer makes room
                oldest = min(self.peers.values(), key=lambda p: p.last)
                self.gone(oldest, f"--max-conns {hub.settings.max_conns} peers reached")
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
            for line in data.splitlines():
                message = b"[" + peer.name.encode() + b"] " + line + b"\n"
                for other in list(self.peers.values()):
                    if other is not peer:
                        self.send(other, message)

    def send(self, peer: Peer, data: bytes) -> None:
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
            return
        peer.tx += sent
        if self.hub.trace:
            self.hub.narrate(f"sendto(fd {self.sock.fileno()}, {len(data)} bytes, {peer.name}) = {sent}")

    def forget(self) -> None:
        limit = time.monotonic() - self.forget_after
        for peer in [p for p in self.peers.values() if p.last < limit]:
            self.gone(peer, f"silent for {self.forget_after:g}s")
        self.timer = self.loop.call_later(min(1.0, self.forget_after / 4), self.forget)

    def gone(self, peer: Peer, reason: str) -> None:
        key = peer.address if peer.address is not None else ("unnamed", peer.creds)
        self.peers.pop(key, None)
        seconds = round(time.monotonic() - peer.started, 3)
        self.hub.emit("close", conn=peer.conn, peer=peer.name, sent=peer.tx, received=peer.rx, seconds=seconds, detail=reason)

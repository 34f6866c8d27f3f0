"""Chat over stream sockets: every line a client sends goes to all the others, after the sender's name.

A line is posted once to the room's log; each member has a cursor in it. At most once per loop
turn (and under load at most every `PACE` seconds) the room writes to each member whose
transport has (nearly) nothing queued, in one write, what it has not seen yet (at most `BATCH` bytes).
So 5,000 joins seen by 5,000 clients cost a write per client per flush, not per line, and a
line is held once, not once per receiver. A member more than `PER_RECEIVER` bytes behind is
dropped as too slow; when the room holds more than `BUDGET` bytes in all (the log and every
transport's buffer), the members holding the most are dropped until it is back under.
"""

from __future__ import annotations

import asyncio

from .hub import Hub, printable_text
from .modes import StreamSession

PER_RECEIVER = 1 << 20  # the log is shared: this bounds it, not a buffer per member
BUDGET = 64 * 1024 * 1024
BATCH = 64 * 1024
WRITE_HIGH = 1  # pause as soon as anything is queued: TLS transports pause at size >= high, the others at size > high
PACE = 0.005  # under load, flush at most this often: writes then carry many lines each
SWEEP_EVERY = 0.25
TOO_SLOW = "too slow to keep up with the chat"


class ChatRoom:
    """The lines of one chat and how far each member has been sent them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.members: set[ChatSession] = set()
        self.writable: set[ChatSession] = set()  # members whose transport has nothing queued
        self.senders: list[ChatSession | None] = []
        self.messages: list[bytes] = []
        self.ends: list[int] = []  # bytes posted since the start, at the end of each message
        self.first = 0  # the number of messages[0] since the start
        self.total = 0
        self.flushing: asyncio.Handle | None = None
        self.flushed = self.swept = 0.0
        self.swept_total = 0
        self.posted = 0  # bytes posted since the last flush
        self.held: dict[ChatSession, None] = {}  # senders not read until the next flush, in the order they get their turn

    def join(self, member: ChatSession) -> None:
        member.seen, member.seen_bytes = self.first + len(self.messages), self.total
        self.members.add(member)
        self.writable.add(member)
        # the room writes only while the transport's buffer is (nearly) empty, as pause/resume_writing tell:
        # lines wait in the room's log, held once for everyone, not in a buffer per member (on uvloop, each
        # small write queued costs some 500 bytes). Not high=0: a TLS transport would pause with nothing queued.
        member.transport.set_write_buffer_limits(high=WRITE_HIGH, low=0)

    def leave(self, member: ChatSession) -> None:
        self.members.discard(member)
        self.writable.discard(member)

    def post(self, sender: ChatSession | None, message: bytes) -> None:
        if sender is not None:  # its own lines are never sent to it: they do not make it fall behind
            if sender.seen == self.first + len(self.messages):
                sender.seen += 1
                sender.seen_bytes += len(message)
            else:
                sender.own += len(message)
        self.senders.append(sender)
        self.messages.append(message)
        self.total += len(message)
        self.posted += len(message)
        self.ends.append(self.total)
        self.wake()

    def hold(self, sender: ChatSession) -> None:
        """Stop reading a sender until the next flush, when more than a batch was posted since the last one.

        A sender on a fast socket would otherwise post faster than any reader can be sent, and every
        reader would end up dropped as too slow."""
        if self.posted > BATCH and not sender.transport.is_closing():
            sender.transport.pause_reading()
            self.held[sender] = None

    def wake(self) -> None:
        if self.flushing is None:
            wait = self.flushed + PACE - self.loop.time()
            self.flushing = self.loop.call_later(wait, self.flush) if wait > 0 else self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send every writable member what it has not seen; now and then, sweep over all members."""
        self.flushing = None
        self.posted = 0
        now = self.flushed = self.loop.time()
        end = self.first + len(self.messages)
        for member in list(self.writable):
            if member.seen < end and not member.transport.is_closing():
                self.send_to(member, end)
        if self.total - self.swept_total > PER_RECEIVER // 4 or now - self.swept > SWEEP_EVERY:
            self.sweep(now)
        held, self.held = list(self.held), {}
        for turn, sender in enumerate(held):
            if self.posted > BATCH:  # those before took this flush's batch: the others go first next time
                self.held = dict.fromkeys(held[turn:]) | self.held
                break
            if not sender.transport.is_closing():
                sender.resume()

    def send_to(self, member: ChatSession, end: int) -> None:
        start = member.seen - self.first
        limit = member.seen_bytes + BATCH
        stop = start + 1
        while stop < end - self.first and self.ends[stop] <= limit:
            stop += 1
        batch = [m for s, m in zip(self.senders[start:stop], self.messages[start:stop], strict=True) if s is not member]
        data = b"".join(batch)
        member.own -= self.ends[stop - 1] - member.seen_bytes - len(data)
        member.seen, member.seen_bytes = self.first + stop, self.ends[stop - 1]
        if data:
            member.send(data)
        if member.seen < end and not member.paused:
            self.wake()  # the rest on the next turn, after the others had their share

    def sweep(self, now: float) -> None:
        """Drop members too far behind, let go of the lines all have been sent, keep the room within its budget."""
        self.swept, self.swept_total = now, self.total
        lowest = self.first + len(self.messages)
        held = 0
        full: list[tuple[int, ChatSession]] = []
        for member in list(self.members):
            transport = member.transport
            if transport.is_closing():
                continue
            if self.total - member.seen_bytes - member.own > PER_RECEIVER:
                member.cut(TOO_SLOW)
                continue
            lowest = min(lowest, member.seen)
            queued = transport.get_write_buffer_size()
            if queued:
                held += queued
                full.append((queued, member))
        seen = lowest - self.first
        if seen:
            del self.senders[:seen], self.messages[:seen], self.ends[:seen]
            self.first = lowest
        if self.messages:
            held += self.total - self.ends[0] + len(self.messages[0])
        if held > BUDGET:
            self.shed(full, held)

    def shed(self, full: list[tuple[int, ChatSession]], held: int) -> None:
        """Drop the members holding the most until the room is back under its budget."""
        full.sort(key=lambda pair: pair[0], reverse=True)
        for queued, member in full:
            if held <= BUDGET:
                break
            member.cut(f"{TOO_SLOW} (the chat holds over {BUDGET >> 20} MiB)")
            held -= queued


class ChatSession(StreamSession):
    """Every line a client sends goes to all the others, after the sender's address."""

    __slots__ = ("ended", "name", "own", "paused", "pending", "room", "seen", "seen_bytes")

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.pending = b""
        self.paused = False
        self.ended = False  # the client shut down its writing side
        self.seen = self.seen_bytes = 0
        self.own = 0  # bytes of its own lines past its cursor: skipped, not owed to it
        self.name = b""
        room = hub.room
        if room is None:
            room = hub.room = ChatRoom(asyncio.get_running_loop())
        self.room: ChatRoom = room

    def opened(self) -> None:
        self.name = printable_text(self.peer).encode()
        self.room.join(self)
        self.room.post(self, b"* " + self.name + b" joined\n")

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        if self.hub.watching:
            self.received(data)
        self.pending += data
        self.post_lines()

    def post_lines(self) -> None:
        """Post the complete lines received, until the room has taken a batch since its last flush.

        The rest waits here, with reading paused, for the next flush: one read of 256 KiB of empty
        lines is 262,144 messages, each far larger in memory than its byte on the wire.
        """
        room, pending, longest = self.room, self.pending, self.hub.settings.max_line
        start = 0
        while room.posted <= BATCH:
            end = pending.find(b"\n", start, start + longest + 1)
            if end < 0:
                break
            room.post(self, b"[" + self.name + b"] " + pending[start:end].removesuffix(b"\r") + b"\n")
            start = end + 1
        self.pending = pending[start:]
        if room.posted <= BATCH and len(self.pending) > longest:  # no line end within the longest line allowed
            self.send(b"* line too long: closing\n")
            self.drop(f"line longer than {longest} bytes")
            return
        room.hold(self)
        if self.ended and self not in room.held:
            self.drop("client closed")

    def resume(self) -> None:
        """The room flushed: post what waits, then read again (unless a batch was posted meanwhile)."""
        self.post_lines()
        if self not in self.room.held and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        super().eof_received()
        self.ended = True
        # held: the lines it sent before its end are still posted (post_lines closes it after them)
        return self in self.room.held

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None and self in self.hub.sessions:
            self.room.leave(self)
            if not self.hub.stopping:
                self.room.post(None, b"* " + self.name + b" left\n")
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        # chat does not stop reading a client because it is slow to read: the room stops writing to it
        self.paused = True
        self.room.writable.discard(self)

    def resume_writing(self) -> None:
        self.paused = False
        if self in self.room.members:
            self.room.writable.add(self)
            self.room.wake()

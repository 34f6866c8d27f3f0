"""The copy loop of `connect` and `listen`: standard input to a socket, the socket to standard output.

The two directions are independent. Sending ends when the input is at EOF, every byte of it is
in the kernel and the writing side is shut down; receiving ends when the peer's EOF has been read
and everything before it written out. The bridge ends when both have ended, earlier only when
`quit_after`, `timeout` or `send_only` say so, and never by dropping a byte without saying so:
input the peer did not get raises `ConnectFailed` with the count.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import ssl
import struct
import termios
import time
from collections import deque
from collections.abc import Callable

from ..errors import ConnectFailed, SockscopeError
from ..records import NamedTuple
from .listeners import Narrate, peer_shut_down
from .stdio import Chunks, CrLf, ioctl_int, is_file, is_pipe, pipe_room, readable_now, usable

CHUNK = 256 * 1024  # one read of input, one send, one write to stdout
HIGH_WATER = 1 << 20  # stop reading a side while this much waits for the other
UDP_PAYLOAD = {socket.AF_INET: 65507, socket.AF_INET6: 65527}  # 65535 minus the IP and UDP headers
SETTLE_SECONDS = 5.0  # how long unacknowledged bytes may sit without progress before they count as lost
QUIET_SECONDS = 0.2  # how long a peer must stay silent before an early close cannot reset its data away
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNABORTED)
_IN = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_OUT = select.POLLOUT | select.POLLHUP | select.POLLERR


class Options(NamedTuple):
    """How to bridge: the options of `connect` and `listen`."""

    timeout: float | None = None  # -w: connecting, and silence in both directions
    quit_after: float | None = None  # -q: seconds after the input is delivered (None: wait for the peer)
    shutdown: bool = True  # shut down writing on input EOF
    send_only: bool = False
    recv_only: bool = False
    crlf: bool = False
    hexdump: bool = False


class Outcome(NamedTuple):
    """How a bridge ended: why (a phrase for -v), bytes sent and received, whether the peer reset."""

    why: str
    sent: int
    received: int
    reset: bool = False


Dump = Callable[[str, bytes], None]


def datagram_limit(sock: socket.socket) -> int:
    """Give the largest message worth trying on a datagram or seqpacket socket (EMSGSIZE halves it)."""
    if sock.family in UDP_PAYLOAD:
        return UDP_PAYLOAD[sock.family]
    # a unix message must fit the send buffer, less the kernel's bookkeeping of it
    return max(1024, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 4096)


def bridge(sock: socket.socket, options: Options, stdin_fd: int = 0, stdout_fd: int = 1, dump: Dump | None = None, narrate: Narrate | None = None) -> Outcome:
    """Copy stdin to the socket and the socket to stdout until both directions are finished; give how it ended.

    ConnectFailed when input was not delivered (the peer reset or closed while we had input, or
    `quit_after`/`timeout` ended it first) or when stdout closed before the input was sent; the
    message says how many bytes. Whatever the peer sent before a reset is written out first.
    With `narrate`, each send(), recv() and shutdown() is told with the kernel's answer.
    """
    return _Bridge(sock, options, stdin_fd, stdout_fd, dump, narrate).run()


class _Bridge:
    """The state of both directions of one bridge."""

    def __init__(self, sock: socket.socket, options: Options, stdin_fd: int, stdout_fd: int, dump: Dump | None, narrate: Narrate | None = None) -> None:
        self.sock, self.options, self.stdin_fd, self.stdout_fd, self.dump = sock, options, stdin_fd, stdout_fd, dump
        self.narrate = narrate
        self.fd = sock.fileno()
        sock.setblocking(False)
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.messages = sock.type in (socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)  # one message per input read
        self.limit = datagram_limit(sock) if self.messages else CHUNK
        self.tcp = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
        # TLS has no half-close of its own, and a datagram socket nothing to shut down
        self.want_shutdown = options.shutdown and sock.type != socket.SOCK_DGRAM and not self.tls
        self.crlf = CrLf() if options.crlf else None
        self.input_open = not options.recv_only and usable(stdin_fd)
        self.typing = self.input_open and os.isatty(stdin_fd)
        self.pending = Chunks()  # stream input not yet in the kernel
        self.outgoing: deque[bytes] = deque()  # messages not yet in the kernel
        self.handed_at: float | None = None  # when all input was in the kernel (and shut down)
        self.peer_open = True  # with send_only too: what arrives is read and dropped, so the peer never stalls
        self.output = Chunks()  # received, not yet on stdout
        self.stdout_open = True
        self.unwritten = 0  # received bytes given up on because nobody read stdout
        # a write to a pipe blocks until all of it fits: writing only what fits keeps -w, -q and
        # the other direction alive while nobody drains stdout
        self.stdout_is_pipe = is_pipe(stdout_fd)
        if self.stdout_is_pipe:
            with contextlib.suppress(OSError):  # a larger pipe takes larger writes (the limit is per user)
                fcntl.fcntl(stdout_fd, 1031, HIGH_WATER)  # F_SETPIPE_SZ
        self.sent = self.received = 0
        self.reset = False
        self.broken: str | None = None  # why sending became impossible
        self.acked_base = _bytes_acked(sock) if self.tcp and not self.tls else None
        self.last_activity = time.monotonic()
        self.last_arrival = 0.0  # when data last came from the peer
        self.poller = select.poll()
        self.masks: dict[int, int] = {}
        if options.recv_only:
            self.handed_at = time.monotonic()  # nothing to send: that side is done

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        try:
            why = self._loop()
        finally:
            self._flush_output()
        lost = self._not_delivered()
        if lost:
            raise ConnectFailed(f"{self.broken or why}: {lost} of input not delivered")
        if self.unwritten:
            raise ConnectFailed(f"{why}: {self.unwritten} bytes received were not written out (nobody read standard output)")
        return Outcome(self.broken or why, self.sent, self.received, self.reset)

    def _loop(self) -> str:
        while True:
            now = time.monotonic()
            sending_done = self._sending_done()
            if sending_done and self.handed_at is None:
                self.handed_at = now
            if not self.stdout_open:
                return "standard output was closed"
            if sending_done and self._receiving_done():
                return self._settle(self._end_phrase())
            if self.options.send_only and sending_done:
                return self._settle("input sent")
            if self.typing and self._receiving_done() and not self.pending and not self.outgoing:
                return "the peer closed"  # a person at a terminal has nothing queued to lose: end, as nc and telnet do
            if self.handed_at is not None and self.options.quit_after is not None and now - self.handed_at >= self.options.quit_after:
                self._drain_socket()
                return self._settle(f"quit {self.options.quit_after:g}s after the input was sent", cap=max(1.0, self.options.quit_after))
            if self.options.timeout is not None and now - self.last_activity >= self.options.timeout:
                return f"idle for {self.options.timeout:g}s"
            self._step(now)

    def _step(self, now: float) -> None:
        waits = []
        if self.options.timeout is not None:
            waits.append(self.last_activity + self.options.timeout - now)
        if self.handed_at is not None and self.options.quit_after is not None:
            waits.append(self.handed_at + self.options.quit_after - now)
        want_in = self.input_open and self.broken is None and len(self.pending) < HIGH_WATER and len(self.outgoing) < 64
        self._watch(self.stdin_fd, select.POLLIN if want_in else 0)
        sock_events = select.POLLIN if self.peer_open and len(self.output) < HIGH_WATER else 0
        if (self.pending or self.outgoing) and self.broken is None:
            sock_events |= select.POLLOUT
        self._watch(self.sock.fileno(), sock_events)
        self._watch(self.stdout_fd, select.POLLOUT if self.output else 0)
        buffered = self.tls and sock_events & select.POLLIN and self.sock.pending() > 0  # type: ignore[attr-defined]
        timeout_ms = 0 if buffered else None if not waits else max(0, int(min(waits) * 1000) + 1)
        ready = dict(self.poller.poll(timeout_ms))
        if buffered:
            ready[self.sock.fileno()] = ready.get(self.sock.fileno(), 0) | select.POLLIN
        sock_ready = ready.get(self.sock.fileno(), 0)
        # what the peer sent comes first: after a reset it is all there is left to save
        if sock_ready & _IN and self.peer_open:
            self._receive()
        if ready.get(self.stdout_fd, 0) & _OUT and self.output:
            self._write_output()
        if ready.get(self.stdin_fd, 0) & _IN and self.input_open:
            self._read_input()
        if sock_ready & _OUT and (self.pending or self.outgoing) and self.broken is None:
            self._send()
        if self.want_shutdown and not self.input_open and not self.pending and not self.outgoing and self.broken is None:
            self.want_shutdown = False
            try:
                self.sock.shutdown(socket.SHUT_WR)
                self._tell("shutdown", "SHUT_WR", "0: our end sends no more (a read by the peer now gets end of data)")
            except OSError as exc:
                self._tell("shutdown", "SHUT_WR", _answer(exc))

    def _watch(self, fd: int, events: int) -> None:
        """Poll `fd` for `events` (0: not at all, so that a hang-up it holds does not wake us)."""
        if self.masks.get(fd, 0) == events:
            return
        if not events:
            self.poller.unregister(fd)
            del self.masks[fd]
        else:
            self.poller.register(fd, events)
            self.masks[fd] = events

    def _sending_done(self) -> bool:
        if self.broken is not None:
            return True
        return not self.input_open and not self.pending and not self.outgoing and not self.want_shutdown

    def _receiving_done(self) -> bool:
        return not self.peer_open and not self.output

    def _end_phrase(self) -> str:
        return "the peer closed" if self.options.recv_only else "both sides finished"

    # -- input to the socket ------------------------------------------------------------------

    def _read_input(self) -> None:
        try:
            data = os.read(self.stdin_fd, CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            raise SockscopeError(f"reading standard input failed: {exc.strerror or exc}") from None
        if not data:
            self.input_open = False
            return
        self.last_activity = time.monotonic()
        if self.crlf:
            data = self.crlf(data)
        if not self.messages:
            self.pending.append(data)
            return
        for start in range(0, len(data), self.limit):
            self.outgoing.append(data[start : start + self.limit])

    def _send(self) -> None:
        while self.pending or self.outgoing:
            try:
                if self.outgoing:
                    data = self.outgoing[0]
                    offered = count = len(data)
                    self.sock.send(data)
                    self.outgoing.popleft()
                else:
                    view = self.pending.head(CHUNK)
                    offered = len(view)
                    count = self.sock.send(view)
                    data = bytes(view[:count]) if self.dump else b""
                    self.pending.consume(count)
            except _WOULD_BLOCK as exc:
                if self.narrate:
                    self._tell("send", f"{offered} bytes", f"{_answer(exc)}: the send buffer is full, waiting until the peer takes more")
                return
            except (ConnectionRefusedError, ssl.SSLError) as exc:
                self._tell("send", f"{offered} bytes", _answer(exc))
                raise _failure(exc, "sending") from None
            except OSError as exc:
                self._tell("send", f"{offered} bytes", _answer(exc))
                if exc.errno == errno.EMSGSIZE and self.outgoing and len(self.outgoing[0]) > 1:
                    self._split_head()
                    continue
                if exc.errno in _GONE:
                    self._stop_sending(reset=exc.errno == errno.ECONNRESET)
                    return
                raise _failure(exc, "sending") from None
            self.sent += count
            self.last_activity = time.monotonic()
            if self.narrate:
                self._tell("send", f"{offered} bytes", str(count) if count == offered else f"{count}: the send buffer took only that much")
            if self.dump and data:
                self._dump(">", data)
            if count < offered:
                return  # the kernel is full: wait for POLLOUT

    def _split_head(self) -> None:
        """The kernel refused a message as too long: halve the limit and cut the message again."""
        head = self.outgoing.popleft()
        self.limit = max(1, min(self.limit, len(head)) // 2)
        for start in reversed(range(0, len(head), self.limit)):
            self.outgoing.appendleft(head[start : start + self.limit])

    def _stop_sending(self, reset: bool = True) -> None:
        why = "the peer reset the connection" if reset else "the peer closed the connection"
        if self.broken is None or reset:  # a reset says more than a close seen before it
            self.broken = why
        self.want_shutdown = False
        self.reset = self.reset or reset

    # -- the socket to output -----------------------------------------------------------------

    def _receive(self) -> None:
        size = 1 << 18 if self.messages else CHUNK
        for _ in range(16):
            try:
                data = self.sock.recv(size)
            except _WOULD_BLOCK:
                return
            except (ConnectionRefusedError, ssl.SSLError) as exc:
                self._tell("recv", str(size), _answer(exc))
                raise _failure(exc, "receiving") from None
            except OSError as exc:
                self._tell("recv", str(size), _answer(exc))
                if exc.errno in _GONE:
                    self.peer_open = False
                    self._stop_sending()
                    return
                raise _failure(exc, "receiving") from None
            self.last_activity = self.last_arrival = time.monotonic()
            if not data:
                if self.sock.type == socket.SOCK_DGRAM or (self.sock.type == socket.SOCK_SEQPACKET and not peer_shut_down(self.sock.fileno())):
                    self._tell("recv", str(size), "0: an empty message")
                    continue  # an empty datagram or seqpacket message is a message, not the end
                self._tell("recv", str(size), "0: the peer shut down its writing side (end of its data)")
                self.peer_open = False
                return
            if self.narrate:
                self._tell("recv", str(size), str(len(data)))
            if self.options.send_only:
                continue
            self.received += len(data)
            if self.dump:
                self._dump("<", data)
            else:
                self.output.append(data)
            if len(self.output) >= HIGH_WATER:
                return

    def _tell(self, call: str, argument: str, answer: str) -> None:
        """Narrate one system call on the socket and what the kernel answered (when narrating)."""
        if self.narrate:
            self.narrate(f"{call}(fd {self.fd}, {argument}) = {answer}")

    def _dump(self, direction: str, data: bytes) -> None:
        try:
            assert self.dump is not None
            self.dump(direction, data)
        except OSError:
            self._output_closed()

    def _write_output(self) -> None:
        size = min(CHUNK, pipe_room(self.stdout_fd)) if self.stdout_is_pipe else CHUNK
        try:
            count = os.write(self.stdout_fd, self.output.head(size))
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):  # the reader went away (`| head`)
            self._output_closed()
            return
        except OSError as exc:
            raise SockscopeError(f"writing standard output failed: {exc.strerror or exc}") from None
        self.output.consume(count)

    def _output_closed(self) -> None:
        self.stdout_open = False
        self.peer_open = False
        self.output.clear()

    def _flush_output(self) -> None:
        """Write out what was received (waiting for the reader; with -w, at most that long per write)."""
        limit_ms = None if self.options.timeout is None else int(self.options.timeout * 1000)
        writable = select.poll()
        writable.register(self.stdout_fd, select.POLLOUT)
        while self.output and self.stdout_open:
            if not writable.poll(limit_ms):
                self.unwritten = len(self.output)  # nobody reads stdout: -w gives up on it as on the peer
                self.output.clear()
                return
            self._write_output()

    def _drain_socket(self) -> None:
        """Read what the kernel already holds (so closing does not reset it away)."""
        if self.peer_open:
            self._receive()
            self._flush_output()

    # -- ending without losing bytes ----------------------------------------------------------

    def _settle(self, why: str, cap: float | None = None) -> str:
        """Before closing early: wait until the peer acknowledged our bytes and went quiet; give `why`.

        Closing while data arrives (or sits unread) makes our kernel reset the connection, and a
        reset can throw away what the peer's kernel acknowledged but its program had not read
        yet. So reading goes on until every byte is acknowledged and nothing arrived for
        QUIET_SECONDS (or the peer closed), giving up after `timeout` (SETTLE_SECONDS) without
        progress or after `cap` seconds.
        """
        if not self.tcp or self.broken is not None:
            return why
        started = progress_at = time.monotonic()
        unacked = _unacknowledged(self.sock)
        limit = self.options.timeout or SETTLE_SECONDS
        while self.broken is None:
            now = time.monotonic()
            quiet = not self.peer_open or now - self.last_arrival >= QUIET_SECONDS
            if (not unacked and quiet) or now - progress_at >= limit or (cap is not None and now - started >= cap):
                break
            select.select([self.sock], [], [], 0.05)
            before = self.last_arrival
            if self.peer_open:
                self._receive()
                self._flush_output()
            else:
                self._discard_received()
            now_unacked = _unacknowledged(self.sock)
            if now_unacked < unacked or self.last_arrival != before:
                progress_at = time.monotonic()
            unacked = now_unacked
        return why

    def _discard_received(self) -> None:
        try:
            while self.sock.recv(CHUNK):
                pass
        except _WOULD_BLOCK:
            pass
        except OSError as exc:
            if exc.errno in _GONE:
                self._stop_sending()

    def _not_delivered(self) -> str:
        """Give how much input is known not to have reached the peer, as words ('' for nothing)."""
        count = len(self.pending) + sum(len(m) for m in self.outgoing)
        if self.acked_base is not None:
            acked = _bytes_acked(self.sock)
            if acked is not None:
                count += max(0, self.sent - (acked - self.acked_base))
        elif self.tcp:
            count += _unacknowledged(self.sock)
        if self.input_open:
            count += readable_now(self.stdin_fd)
        if not count:
            return ""
        at_least = "at least " if self.input_open and not is_file(self.stdin_fd) else ""
        return f"{at_least}{count} byte{'s' if count != 1 else ''}"


def _unacknowledged(sock: socket.socket) -> int:
    """Give the bytes in the socket's send queue (TCP: not acknowledged by the peer yet)."""
    try:
        return ioctl_int(sock.fileno(), termios.TIOCOUTQ)
    except ValueError:  # closed
        return 0


def _bytes_acked(sock: socket.socket) -> int | None:
    """Give tcp_info's bytes_acked (bytes the peer acknowledged, plus one for the SYN), None when unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    except OSError:
        return None
    return int(struct.unpack_from("Q", info, 120)[0]) if len(info) >= 128 else None


def _answer(exc: OSError) -> str:
    """Give a failed call's answer as strace shows it: `-1 ECONNRESET (Connection reset by peer)`."""
    if isinstance(exc, ssl.SSLWantReadError | ssl.SSLWantWriteError):
        return "-1 EAGAIN (TLS)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error {exc.reason or exc}"
    name = errno.errorcode.get(exc.errno or 0, "?")
    return f"-1 {name} ({exc.strerror or exc})"


def _failure(exc: OSError, doing: str) -> ConnectFailed:
    """Give the one-line error for a socket call that failed for good while `doing` (sending, receiving)."""
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed("connection refused (the peer's port is closed)")
    if isinstance(exc, ssl.SSLError):
        return ConnectFailed(f"TLS error: {exc}")
    return ConnectFailed(f"{doing} failed: {exc.strerror or exc}")

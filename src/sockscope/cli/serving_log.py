"""The log of a serving process: lines written by a thread of their own, so that a terminal or a
pipe that is not read never stops the server.

Serving hands each line to an `OutputBuffer` and goes on at once. The buffer holds at most
`limit` bytes; past that, lines are dropped and counted, and the count is written
("sockscope: 1234 log lines dropped: output not read") as soon as the output takes bytes again,
or at exit. The writer is a plain blocking `os.write` in a daemon thread: the descriptor's file
status flags are never touched, because O_NONBLOCK on a terminal or pipe shared with other
processes would change it for them as well.

A forked worker gets a buffer and a thread of its own the first time it logs (threads do not
survive fork()); lines its parent had not yet written stay the parent's to write.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

DEFAULT_LIMIT = 1 << 20


class OutputBuffer:
    """Lines waiting to be written to one file descriptor, in the order given."""

    def __init__(self, fd: int, limit: int = DEFAULT_LIMIT, dropped_line: Callable[[int], bytes] | None = None) -> None:
        self.fd, self.limit = fd, limit
        self.dropped_line = dropped_line or (lambda count: f"sockscope: {count} log lines dropped: output not read\n".encode())
        self.pid = -1
        self._reset()

    def _reset(self) -> None:
        # a fresh lock: one held by a thread of the parent at fork() would never be released in the child
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.lines: list[bytes] = []
        self.size = 0
        self.dropped = 0
        self.writing = False
        self.dead = False
        self.thread: threading.Thread | None = None

    def put(self, line: bytes) -> bool:
        """Queue one line; give False when it was dropped (the output is not keeping up, or is gone)."""
        if self.pid != os.getpid():
            self._reset()
        with self.lock:
            if self.dead:
                return False
            if self.size + len(line) > self.limit:
                self.dropped += 1
                if self.thread is not None and not self.writing:
                    self.wake.notify()  # a single line larger than the buffer: the count still gets written
                return False
            self.lines.append(line)
            self.size += len(line)
            if self.thread is None:
                self.thread = threading.Thread(target=self._write_all, name=f"log writer fd {self.fd}", daemon=True)
                self.thread.start()
            elif not self.writing:
                self.wake.notify()
        return True

    def drop_if_full(self) -> bool:
        """Count a line as dropped without making it, when the buffer has no room for a line (True)."""
        if self.size < self.limit - 1024 or self.pid != os.getpid():
            return False
        with self.lock:
            if self.size < self.limit - 1024:
                return False
            self.dropped += 1
        return True

    def _write_all(self) -> None:
        while True:
            with self.lock:
                while not self.lines and not self.dropped:
                    self.writing = False
                    self.wake.wait()
                self.writing = True
                lines, self.lines, self.size = self.lines, [], 0
                dropped, self.dropped = self.dropped, 0
            # the lines taken were queued before the drops were counted; the drops come after them
            chunk = b"".join(lines) + (self.dropped_line(dropped) if dropped else b"")
            if not self._write(chunk):
                with self.lock:
                    self.dead, self.lines, self.size, self.writing = True, [], 0, False
                    self.wake.notify_all()
                return

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except OSError:  # EPIPE (the reader went away), EBADF, EIO (the terminal hung up): stop writing, keep serving
                return False
            view = view[written:]
        return True

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every queued line (and the count of drops) to be written; give True when done."""
        if self.pid != os.getpid() or self.thread is None:
            return True
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if self.dead or (not self.lines and not self.dropped and not self.writing):
                    return True
            time.sleep(0.01)
        return False

"""The standard-stream side of the bridge: what waits to be written, what a pipe takes, dumps.

Everything here works on file descriptors the bridge does not own (they are shared with the
shell and the other programs of a pipeline), so nothing changes their flags.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat
import struct
import termios
from collections import deque
from collections.abc import Callable


class HexDump:
    """Writes traffic as `offset  hex bytes  |ascii|` lines, with `>` for sent and `<` for received."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.offsets = {">": 0, "<": 0}

    def __call__(self, direction: str, data: bytes) -> None:
        lines = []
        offset = self.offsets[direction]
        for start in range(0, len(data), 16):
            row = data[start : start + 16]
            hexes = " ".join(f"{b:02x}" for b in row)
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
            lines.append(f"{direction} {offset + start:08x}  {hexes:<47}  |{text}|\n")
        self.offsets[direction] = offset + len(data)
        self.write("".join(lines).encode())


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte to a file descriptor, waiting when it is non-blocking and full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


class CrLf:
    """LF -> CRLF across chunk boundaries (an LF already after a CR is left alone)."""

    def __init__(self) -> None:
        self.last = b""

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        previous = self.last
        for line in data.split(b"\n")[:-1]:
            out += line + (b"\n" if (line[-1:] or previous) == b"\r" else b"\r\n")
            previous = b""
        out += data.rsplit(b"\n", 1)[-1] if b"\n" in data else data
        self.last = data[-1:] if data else self.last
        return bytes(out)


class Chunks:
    """Bytes waiting to be written, kept as the chunks they came in (no copying to join or cut them)."""

    def __init__(self) -> None:
        self.chunks: deque[memoryview] = deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes) -> None:
        self.chunks.append(memoryview(data))
        self.size += len(data)

    def head(self, limit: int) -> memoryview:
        """Give up to `limit` bytes from the front (of the first chunk only)."""
        return self.chunks[0][:limit]

    def consume(self, count: int) -> None:
        """Drop `count` bytes (at most the first chunk's) from the front."""
        first = self.chunks[0]
        if count >= len(first):
            self.chunks.popleft()
        else:
            self.chunks[0] = first[count:]
        self.size -= min(count, len(first))

    def clear(self) -> None:
        self.chunks.clear()
        self.size = 0


def usable(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def is_file(fd: int) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISREG(os.fstat(fd).st_mode)
    return False


def is_pipe(fd: int) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    return False


def pipe_room(fd: int) -> int:
    """Give how much can be written to a pipe now without blocking (poll's POLLOUT promises one page).

    A pipe is a ring of pages; the one being read and the one last written may be partly used.
    """
    page = 4096
    try:
        capacity = fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ
    except OSError:
        return page
    queued = ioctl_int(fd, termios.FIONREAD)
    free_pages = capacity // page - (queued + page - 1) // page - 2
    return max(page, free_pages * page)


def ioctl_int(fd: int, request: int) -> int:
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def readable_now(fd: int) -> int:
    """Give how many bytes of input wait to be read (a pipe's contents, the rest of a file)."""
    return max(0, ioctl_int(fd, termios.FIONREAD))

"""The one place that talks NETLINK_SOCK_DIAG: send a dump request, receive its chunks."""

from __future__ import annotations

import _socket as socket  # socket.py adds ~2 ms of start-up (enum conversions) and nothing used here
import errno
import os
from collections.abc import Iterator

from ..errors import PermissionDenied, SourceUnavailable
from . import diag

_RECV_SIZE = 1 << 17


def _open(source: str) -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, diag.NETLINK_SOCK_DIAG)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"{source}: not allowed to open a netlink socket ({exc.strerror})") from None
        raise SourceUnavailable(f"{source}: no netlink sock_diag here ({exc.strerror})") from None


def command(request: bytes, source: str) -> int:
    """Send one request that the kernel acknowledges (SOCK_DESTROY); give its errno (0: done)."""
    sock = _open(source)
    try:
        sock.sendto(request, (0, 0))
        return diag.ack_error(sock.recv(65536))
    finally:
        sock.close()


def dump(request: bytes, source: str) -> Iterator[tuple[bytes, list[diag.Span]]]:
    """Yield each reply chunk of a sock_diag dump with its message spans, until the dump ends.

    Raises SourceUnavailable when this kernel has no sock_diag (or not for that family).
    """
    sock = _open(source)
    try:
        sock.sendto(request, (0, 0))
        while True:
            try:
                chunk = sock.recv(_RECV_SIZE)
            except OSError as exc:
                # ENOBUFS/EINTR mid-dump leave a partial answer: give up on this source.
                raise SourceUnavailable(f"{source}: receive failed ({os.strerror(exc.errno or 0)})") from None
            spans, done = diag.frame(chunk, source)
            if spans:
                yield chunk, spans
            if done or not chunk:
                return
    finally:
        sock.close()

"""Wait until addresses accept connections (like wait-for-it), all of them, within a deadline."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from typing import cast

from ..address import Address, resolve
from ..errors import SockscopeError
from ..records import NamedTuple


class Waited(NamedTuple):
    """How a wait ended: which addresses came up (with seconds taken) and which were still down (with the last error)."""

    up: list[tuple[Address, float]]
    down: list[tuple[Address, str]]


def _start(address: Address) -> list[socket.socket]:
    """Begin non-blocking connects to every resolved form of an address."""
    attempts = []
    if address.is_unix:
        targets: list[tuple[int, object]] = [(socket.AF_UNIX, address.unix_name)]
    else:
        targets = list(resolve(address))
    for family, sockaddr in targets:
        sock = socket.socket(family, address.socket_type | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        code = sock.connect_ex(sockaddr)  # type: ignore[arg-type]
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            raise OSError(code, os.strerror(code))
        attempts.append(sock)
    return attempts


def _probe(pending: list[Address], timeout: float, errors: dict[Address, str]) -> set[Address]:
    """Try each pending address once, waiting up to `timeout` for connects; give the ones that connected."""
    selector = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    up: set[Address] = set()
    try:
        for address in pending:
            try:
                for sock in _start(address):
                    opened.append(sock)
                    selector.register(sock, selectors.EVENT_WRITE, address)
            except OSError as exc:
                errors[address] = exc.strerror or str(exc)
            except SockscopeError as exc:  # a name that does not resolve (yet): keep trying
                errors[address] = exc.message
        deadline = time.monotonic() + timeout
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _events in selector.select(left):
                sock = cast(socket.socket, key.fileobj)
                selector.unregister(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    up.add(key.data)
                else:
                    errors[key.data] = os.strerror(code)
        for key in list(selector.get_map().values()):
            errors.setdefault(key.data, "no answer yet")
    finally:
        selector.close()
        for sock in opened:
            sock.close()
    return up


def wait_for(
    addresses: Sequence[Address],
    timeout: float = 30.0,
    interval: float = 0.25,
    on_up: Callable[[Address, float], None] = lambda _a, _s: None,
) -> Waited:
    """Try every address until all accept a connection or `timeout` seconds pass."""
    start = time.monotonic()
    pending = list(dict.fromkeys(addresses))
    errors: dict[Address, str] = {}
    up: list[tuple[Address, float]] = []
    while pending:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            break
        round_start = time.monotonic()
        came = _probe(pending, min(max(interval, 0.05), left), errors)
        for address in came:
            taken = time.monotonic() - start
            up.append((address, taken))
            on_up(address, taken)
        pending = [a for a in pending if a not in came]
        if pending:
            time.sleep(max(0.0, min(interval - (time.monotonic() - round_start), timeout - (time.monotonic() - start))))
    return Waited(up, [(a, errors.get(a, "timed out")) for a in pending])

"""Hold many established loopback TCP connection pairs open, spread over helper processes.

Each helper listens on its own loopback address and connects to itself, so it holds both ends
of every pair (two descriptors a pair). The per-process descriptor limit (20000 here) is why
the pairs are spread: 5000 pairs a helper stays well below it.

Usage as a command:  python bench/pairs.py 25000   (prints "ready N" and waits for SIGTERM/EOF)
Usage as a library:  with hold_pairs(25000): ...
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import signal
import socket
import struct
import sys
from collections.abc import Iterator

PAIRS_PER_HELPER = 5000


def _helper(index: int, pairs: int, ready: mp.connection.Connection) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * pairs + 100), hard))
    address = f"127.0.{index // 250}.{index % 250 + 2}"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, 0))
    listener.listen(1024)
    held: list[socket.socket] = []
    for _ in range(pairs):
        client = socket.create_connection(listener.getsockname())
        server, _peer = listener.accept()
        held += (client, server)
    ready.send(len(held) // 2)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    # Close with RST (linger 0) so no TIME-WAIT sockets outlive the helper and swell the next
    # measurement (`ls -a` lists them).
    abort = struct.pack("ii", 1, 0)
    for sock in held:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, abort)
        sock.close()


@contextlib.contextmanager
def hold_pairs(pairs: int) -> Iterator[list[int]]:
    """Yield the pids of helpers that together hold `pairs` established loopback connections."""
    ctx = mp.get_context("fork")
    helpers = []
    left = pairs
    index = 0
    while left > 0:
        count = min(left, PAIRS_PER_HELPER)
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_helper, args=(index, count, child_end), daemon=True)
        proc.start()
        helpers.append((proc, parent_end))
        left -= count
        index += 1
    try:
        for _proc, ready in helpers:
            if not ready.poll(120):
                raise RuntimeError("a helper did not get its connections up within 120 s")
            ready.recv()
        yield [proc.pid for proc, _ in helpers if proc.pid is not None]
    finally:
        for proc, _ in helpers:
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc, _ in helpers:
            proc.join(10)


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 25000
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    with hold_pairs(pairs) as pids:
        print(f"ready {pairs} pairs in pids {' '.join(map(str, pids))}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    main()

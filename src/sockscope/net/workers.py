"""Several serving processes on one port: SO_REUSEPORT sockets, one forked worker each."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from .hub import Event, EventSink, Settings

Worker = Callable[[Settings, EventSink, list[socket.socket], "int | None", Any], None]


def split(listeners: list[socket.socket], settings: Settings) -> list[list[socket.socket]]:
    """Give each worker its own sockets (SO_REUSEPORT), or all workers the one unix socket."""
    if settings.address.is_unix or settings.workers == 1:
        return [listeners] * settings.workers
    per = len(listeners) // settings.workers
    return [listeners[i * per : (i + 1) * per] for i in range(settings.workers)]


def run_workers(settings: Settings, sink: EventSink, listeners: list[socket.socket], ssl_context: Any, run_worker: Worker) -> int:
    """Fork one worker per share of `listeners`, forward SIGINT/SIGTERM to them, give the worst exit status."""
    children: list[int] = []
    for index, mine in enumerate(split(listeners, settings)):
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                for sock in listeners:
                    if sock not in mine:
                        sock.close()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
                run_worker(settings, sink, mine, index + 1, ssl_context)
            except BaseException as exc:
                sink(Event("error", detail=f"worker {index + 1} failed: {exc}", worker=index + 1))
                status = 5
            # os._exit skips every clean-up: the sink may hold lines not yet written (a `flush` method, if it has one)
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()
            os._exit(status)
        children.append(pid)
    for sock in listeners:
        sock.close()
    # the parent forwards SIGINT/SIGTERM to its workers and waits for them all
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    worst = 0
    for child in children:
        while True:
            try:
                _pid, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 5)
    return worst

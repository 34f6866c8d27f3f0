"""Helpers to run `sockscope serve` in the background and read its JSON events."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from sockscope.ports.free import free_ports


def port() -> int:
    """A TCP and UDP port free right now (outside the ephemeral range)."""
    return free_ports(1)[0]


class Served:
    """A running `sockscope serve --json`: its process and the events it has written so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            self.events.append(event)
            self.lines.put(event)
        self.lines.put(None)

    def wait_for(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Give the first event of `kind` (with these fields) not yet consumed; fail after `timeout`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                event = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                break
            if event["event"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event
        raise AssertionError(f"no {kind} event {fields} within {timeout}s; events: {self.events[-20:]}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)
        return self.process.wait(15)


@contextlib.contextmanager
def serving(*args: str, wait: bool = True) -> Iterator[Served]:
    """Run `sockscope serve ARGS --json`; stop it with SIGTERM afterwards."""
    process = subprocess.Popen([sys.executable, "-m", "sockscope", "serve", *args, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served = Served(process)
    try:
        if wait:
            served.wait_for("listening")
        yield served
    finally:
        if process.poll() is None:
            served.stop()
            if process.poll() is None:
                process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()

"""`kill PORT` on a real terminal (tmux): it asks, `y` stops the holder, `n` keeps it."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from conftest import free_port, have

pytestmark = pytest.mark.skipif(not (have("tmux") and have("nc")), reason="needs tmux and nc (netcat-openbsd)")


@contextlib.contextmanager
def holder(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nc listening on a loopback port, started (and ended, by pid) by the test."""
    nc = subprocess.Popen(["nc", "-l", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    break
            time.sleep(0.05)
        yield nc
    finally:
        if nc.poll() is None:
            nc.send_signal(signal.SIGKILL)
        nc.wait(10)
        assert nc.stdin is not None
        nc.stdin.close()


class Terminal:
    """One tmux session on a server of its own (its own socket), so nobody else's is touched."""

    def __init__(self, command: str) -> None:
        self.server = f"sockscope-test-{uuid.uuid4().hex[:8]}"
        self.session = "kill"
        shell = f"{command}; echo status=$?; sleep 60"
        subprocess.run(["tmux", "-L", self.server, "new-session", "-d", "-s", self.session, "-x", "200", "-y", "40", shell], check=True, timeout=10)

    def screen(self) -> str:
        command = ["tmux", "-L", self.server, "capture-pane", "-p", "-t", self.session]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout

    def wait_for(self, text: str, seconds: float = 15) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen()}")

    def type(self, keys: str) -> None:
        subprocess.run(["tmux", "-L", self.server, "send-keys", "-t", self.session, keys, "Enter"], check=True, timeout=10)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-session", "-t", self.session], check=False, timeout=10)


@contextlib.contextmanager
def terminal(*args: str) -> Iterator[Terminal]:
    env = f"PYTHONPATH={shlex.quote(os.pathsep.join(sys.path))}"
    term = Terminal(f"env {env} {shlex.quote(sys.executable)} -m sockscope {shlex.join(args)}")
    try:
        yield term
    finally:
        term.close()


def test_kill_asks_on_a_terminal_and_y_stops_the_holder() -> None:
    port = free_port()
    with holder(port) as nc, terminal("kill", str(port)) as term:
        screen = term.wait_for("[y/N]")
        assert f"pid {nc.pid} nc" in screen and "send SIGTERM to 1 process?" in screen
        assert nc.poll() is None  # nothing happens before the answer
        term.type("y")
        screen = term.wait_for("status=")
        assert f"port {port}/tcp is free" in screen and "status=0" in screen
        assert nc.wait(5) == -signal.SIGTERM


def test_kill_on_a_terminal_keeps_the_holder_on_n() -> None:
    port = free_port()
    with holder(port) as nc, terminal("kill", f"{port}/tcp") as term:
        term.wait_for("[y/N]")
        term.type("n")
        screen = term.wait_for("status=")
        assert "nothing was signalled" in screen and "status=2" in screen
        assert "Traceback" not in screen
        time.sleep(0.2)
        assert nc.poll() is None

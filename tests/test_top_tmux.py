"""`sockscope top` in a real terminal (tmux, 80x24), driven with keys the way a person uses it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from conftest import free_port, have

pytestmark = [
    pytest.mark.skipif(not (have("tmux") and have("nc")), reason="needs tmux and nc (netcat-openbsd)"),
    pytest.mark.skipif(importlib.util.find_spec("textual") is None, reason="needs textual (pip install '.[top]')"),
]


@contextlib.contextmanager
def nc_pair() -> Iterator[int]:
    """nc listening on a loopback port with one nc client connected; yields the port."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(subprocess.Popen(["nc", "-l", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    break
            time.sleep(0.05)
        client = stack.enter_context(subprocess.Popen(["nc", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL))
        try:
            yield port
        finally:
            for proc in (client, server):
                if proc.poll() is None:
                    proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def tmux_top(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A detached 80x24 tmux session running `sockscope top ARGS`; yields the session name."""
    name = f"top-{uuid.uuid4().hex[:8]}"
    settings = " ".join(f"{key}={shlex.quote(value)}" for key, value in (env or {}).items())
    path = shlex.quote(os.pathsep.join(sys.path))
    command = f"env PYTHONPATH={path} TERM=xterm-256color {settings} {shlex.quote(sys.executable)} -m sockscope top {shlex.join(args)}"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24", command], check=True)
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def capture(name: str, escapes: bool = False) -> str:
    flags = ["-p", "-e"] if escapes else ["-p"]
    return subprocess.run(["tmux", "capture-pane", "-t", name, *flags], capture_output=True, text=True, check=False).stdout


def wait_screen(name: str, text: str, seconds: float = 15.0) -> str:
    deadline = time.monotonic() + seconds
    while True:
        screen = capture(name)
        if text in screen:
            return screen
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never showed; the screen was:\n{screen}")
        time.sleep(0.1)


def keys(name: str, *pressed: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", name, *pressed], check=True)


def test_top_in_tmux_groups_switches_and_quits_on_q() -> None:
    with nc_pair() as port, tmux_top("sport", "=", f":{port}", "or", "dport", "=", f":{port}") as session:
        wait_screen(session, f"127.0.0.1:{port}")
        screen = wait_screen(session, "k Kill")  # the rows can be drawn before the footer is
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert f"127.0.0.1:{port}" in screen
        assert "by process" in screen and "nc (" in screen  # grouped under the nc processes
        assert "q Quit" in lines[-1] and "k Kill" in lines[-1]  # every key fits in 80 columns
        keys(session, "g")
        assert "by remote host" in wait_screen(session, "by remote host")
        keys(session, "/")
        keys(session, "-l", f"dport = :{port}")
        keys(session, "Enter")
        screen = wait_screen(session, f"filter: dport = :{port}")
        assert sum(1 for line in screen.splitlines() if "ESTAB" in line) == 1
        keys(session, "q")
        deadline = time.monotonic() + 5
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True, check=False).returncode == 0:
            assert time.monotonic() < deadline, "top did not leave on q"
            time.sleep(0.1)


def test_top_with_no_color_draws_without_colours() -> None:
    with nc_pair() as port, tmux_top("sport", "=", f":{port}", env={"NO_COLOR": "1"}) as session:
        wait_screen(session, f"127.0.0.1:{port}")
        drawn = capture(session, escapes=True)
        assert re.search(r"\x1b\[[0-9;]*(38|48);[25];", drawn) is None, drawn  # no 256-colour or true-colour sequence
        assert "LISTEN" in drawn

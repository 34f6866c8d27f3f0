"""`sockscope top`: driven with textual's Pilot against real peers (socat, nc), and as a command."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import free_port, have, needs_root, sockscope
from sockscope.model import State

pytestmark = pytest.mark.skipif(not (have("socat") and have("nc")), reason="needs socat and nc (netcat-openbsd)")
needs_textual = pytest.mark.skipif(importlib.util.find_spec("textual") is None, reason="needs textual (pip install '.[top]')")

STUCK = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0), backlog=1)  # never accepts: a service that hangs
print(server.getsockname()[1], flush=True)
sys.stdin.read()
"""


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def listening(port: int) -> bool:
    """Tell whether something listens on a loopback port, without connecting (a peer that serves
    one client would take the probe for it)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def started(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A peer tool, ended by its pid when the test is done."""
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def stuck_listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A listener with an accept backlog of 1 that never accepts, and its port."""
    with subprocess.Popen([sys.executable, "-c", STUCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            yield proc, int(proc.stdout.readline())
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


def backlog_by_ss(port: int) -> int:
    """Give a listener's accept queue as ss shows it (Recv-Q)."""
    lines = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout.split()
    return int(lines[1]) if len(lines) > 1 else -1


def test_once_shows_a_full_accept_backlog_with_the_clients_of_nc() -> None:
    with stuck_listener() as (server, port), contextlib.ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(started(["nc", "127.0.0.1", str(port)]))
        wait_for(lambda: backlog_by_ss(port) == 2)  # the third client waits in SYN-SENT: the queue is full
        result = sockscope("top", "--once", "--interval", "0.2", "--port", str(port))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    listener = next(line for line in lines if "LISTEN" in line)
    assert f"127.0.0.1:{port}" in listener and listener.rstrip().endswith("2/1")  # two queued, limit one: full
    heading = next(line for line in lines if f"({server.pid}, " in line)
    assert heading.startswith("python3") and "1 listen" in heading and "200%" in heading
    assert all(len(line) <= 100 for line in lines)


def test_once_with_nothing_matching_exits_1() -> None:
    result = sockscope("top", "--once", "--interval", "0.1", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].split()[:3] == ["STATE", "LOCAL", "REMOTE"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "needs a terminal"),
        (("--once", "sport", "="), "bad filter"),
        (("--interval", "nan"), "not a number of seconds"),
        (("--interval", "0"), "from 0.1 to 3600"),
        (("--sort", "colour"), "invalid choice"),
        (("--once", "--port", "70000"), "from 1 to 65535"),
        (("--once", "--port", "http"), "invalid int value"),
    ],
)
def test_top_refuses_in_one_line_with_exit_2(args: tuple[str, ...], words: str) -> None:
    result = sockscope("top", *args)  # stdout is a pipe here
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and words in result.stderr and "Traceback" not in result.stderr


@needs_root
def test_once_as_another_user_works_and_says_why_owners_are_missing() -> None:
    if not have("setpriv"):
        pytest.skip("needs setpriv")
    with stuck_listener() as (_server, port):
        result = sockscope("top", "--once", "--interval", "0.1", "sport", "=", f":{port}", user="65534")
    assert result.returncode == 0, result.stderr
    assert f"127.0.0.1:{port}" in result.stdout
    assert "owners unknown" in result.stderr and "root" in result.stderr


# -- the terminal view, driven by textual's Pilot ------------------------------------------------


def run_app(app: Any, script: Callable[[Any, Any], Any]) -> None:
    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await script(app, pilot)

    asyncio.run(main())


async def refreshed(app: Any, pilot: Any, count: int = 1, seconds: float = 20.0) -> None:
    """Wait until the app has shown `count` more refreshes."""
    target = app.refreshes + count
    deadline = time.monotonic() + seconds
    while app.refreshes < target:
        if time.monotonic() > deadline:
            raise AssertionError("no refresh came")
        await pilot.pause(0.05)


def screen_text(app: Any) -> list[str]:
    """The table's lines as the user reads them."""
    return [app.layout_.line(row).text for row in app.lines]


def paced_sender(port: int, stop: threading.Event) -> threading.Thread:
    """Send 100 kB every 50 ms (about 2 MB/s) to a port until `stop`."""

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            while not stop.wait(0.05):
                sock.sendall(b"x" * 100_000)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@needs_textual
def test_pilot_shows_rates_and_answers_every_key() -> None:
    from sockscope.cli.top_app import TopApp
    from sockscope.cli.top_screens import LineView, ProcessScreen
    from sockscope.live.sampler import Sampler

    port = free_port()
    stop = threading.Event()
    with started(["socat", "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "OPEN:/dev/null"]) as receiver:
        wait_for(lambda: listening(port) or receiver.poll() is not None)
        sender = paced_sender(port, stop)
        # --port: the kernel picks the sockets, so a refresh stays quick on a busy host
        app = TopApp(interval=0.5, filter_text=f"sport = :{port}", sampler=Sampler(local_port=port))

        async def script(app: TopApp, pilot: Any) -> None:
            await refreshed(app, pilot, 2)  # the second one has rates
            text = "\n".join(screen_text(app))
            found = [row for row in app.lines if row.conn is not None and row.conn.sock.state is State.ESTAB and row.conn.sock.local.port == port]
            assert found, text
            socat = found[0]
            assert socat.group is not None and socat.group.title.startswith(f"socat ({receiver.pid}, ")
            assert socat.conn is not None and 500_000 < (socat.conn.recv_rate or 0) < 4_000_000, text  # about 2 MB/s sent
            assert f"127.0.0.1:{port}" in text
            header = app.query_one("#heading").render()
            assert "SEND▼" in str(header)
            await pilot.press("greater_than_sign")
            assert app.column == "recv"
            await pilot.press("i")
            assert not app.descending and "RECV▲" in str(app.query_one("#heading").render())
            await pilot.press("g")
            assert app.grouping == "remote" and app.lines[0].conn is None
            await pilot.press("g")
            assert app.grouping == "flat" and all(row.conn is not None for row in app.lines)
            await pilot.press("g")
            await pilot.press("p")
            seen = app.refreshes
            await pilot.pause(1.2)
            assert app.refreshes <= seen + 1 and "PAUSED" in str(app.query_one("#status").render())
            await pilot.press("p")
            await refreshed(app, pilot, 1)
            await pilot.press("n")
            assert app.names is not None
            await pilot.press("slash", *"dport = :1", "enter")
            assert app.lines == [] and app.filter_text == "dport = :1"
            await pilot.press("slash", *"sport = ", "enter")
            assert "filter not applied" in str(app.query_one("#note").render())
            await pilot.press("escape")
            app.where, app.filter_text = None, ""
            await pilot.press("slash", "ctrl+u", *f"sport = :{port}", "enter")
            await pilot.pause(0.1)
            table = app.query_one(LineView)
            table.cursor = next(i for i, row in enumerate(app.lines) if row.conn is not None and row.conn.sock.state is State.ESTAB)
            await pilot.press("enter")
            assert isinstance(app.screen, ProcessScreen) and app.screen.pid == receiver.pid
            page = [line.text for line in app.screen.lines]
            assert any("socket:[" in line and "ESTAB" in line for line in page)
            assert any(line.strip().startswith("0 ") or "/dev/null" in line for line in page)
            await pilot.press("escape")
            assert not isinstance(app.screen, ProcessScreen)

        try:
            run_app(app, script)
        finally:
            stop.set()
            sender.join(5)


@needs_root
@needs_textual
def test_pilot_closes_a_connection_after_asking_and_marks_it_closed() -> None:
    from sockscope.cli.top_app import TopApp
    from sockscope.cli.top_screens import Confirm, LineView
    from sockscope.live.sampler import Sampler

    port = free_port()
    with started(["nc", "-l", "127.0.0.1", str(port)]) as server:
        wait_for(lambda: listening(port) or server.poll() is not None)
        with started(["nc", "127.0.0.1", str(port)]) as client:
            app = TopApp(interval=0.5, sampler=Sampler(local_port=port))  # nc's accepted end: closing it resets the client

            async def script(app: TopApp, pilot: Any) -> None:
                await refreshed(app, pilot, 1)
                table = app.query_one(LineView)
                table.cursor = next(i for i, row in enumerate(app.lines) if row.conn is not None and row.conn.sock.state is State.ESTAB)
                await pilot.press("c")
                assert isinstance(app.screen, Confirm) and f"127.0.0.1:{port}" in app.screen.question
                await pilot.press("n")
                await pilot.pause(0.3)
                assert client.poll() is None  # no: nothing closed
                await pilot.press("c", "y")
                deadline = time.monotonic() + 10
                while client.poll() is None and time.monotonic() < deadline:
                    await pilot.pause(0.1)
                assert client.poll() is not None  # nc saw its connection reset and left
                await refreshed(app, pilot, 1)
                assert any(line.split()[0] == "closed" for line in screen_text(app)), screen_text(app)

            run_app(app, script)


@needs_textual
def test_pilot_stops_a_listener_after_asking() -> None:
    from sockscope.cli.top_app import TopApp
    from sockscope.cli.top_screens import Confirm, LineView
    from sockscope.live.sampler import Sampler

    with stuck_listener() as (server, port):
        app = TopApp(interval=0.5, filter_text=f"sport = :{port}", sampler=Sampler(local_port=port))

        async def script(app: TopApp, pilot: Any) -> None:
            await refreshed(app, pilot, 1)
            table = app.query_one(LineView)
            table.cursor = next(i for i, row in enumerate(app.lines) if row.conn is not None)
            await pilot.press("k")
            assert isinstance(app.screen, Confirm) and f"port {port}/tcp" in app.screen.question and f"pid {server.pid}" in app.screen.question
            await pilot.press("y")
            deadline = time.monotonic() + 10
            while server.poll() is None and time.monotonic() < deadline:
                await pilot.pause(0.1)
            assert server.poll() is not None
            while "free" not in str(app.query_one("#note").render()) and time.monotonic() < deadline:
                await pilot.pause(0.1)
            assert f"port {port}/tcp is free" in str(app.query_one("#note").render())

        run_app(app, script)


HOSTILE = r"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"\x1b[2J\nevil\xff", 0, 0, 0)  # PR_SET_NAME: a process names itself
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_once_escapes_a_process_name_made_of_terminal_escapes() -> None:
    with subprocess.Popen([sys.executable, "-c", HOSTILE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            result = sockscope("top", "--once", "--interval", "0.1", "--port", str(port))
        finally:
            proc.kill()
            proc.wait(5)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\\x1b[2J\\nevil" in result.stdout
    assert len(result.stdout.splitlines()) == 3  # heading, the process, its listener: no line broken in two


def udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_once_with_udp_shows_socat_udp_receiver_and_no_made_up_rates() -> None:
    port = free_port()
    with started(["socat", "-u", f"UDP-RECV:{port},bind=127.0.0.1", "OPEN:/dev/null"]) as receiver:
        wait_for(lambda: receiver.poll() is not None or udp_bound(port))
        plain = sockscope("top", "--once", "--interval", "0.1", "--port", str(port))
        result = sockscope("top", "--once", "-u", "--interval", "0.1", "--port", str(port))
    assert plain.returncode == 1  # TCP only unless asked
    assert result.returncode == 0, result.stderr
    _heading, group, row = result.stdout.splitlines()
    assert group.startswith(f"socat ({receiver.pid}, ") and "1 unconn" in group
    assert row.split()[:3] == ["udp", "UNCONN", f"127.0.0.1:{port}"]
    assert group.split("unconn", 1)[1].strip() == ""  # UDP has no tcp_info: no rate, rtt or retransmits shown


@needs_textual
def test_pilot_a_refresh_that_breaks_ends_top_with_one_line() -> None:
    from sockscope.cli.top_app import TopApp
    from sockscope.live.sampler import Sampler

    class Broken(Sampler):
        def sample(self) -> Any:
            raise RuntimeError("boom")

    app = TopApp(sampler=Broken())

    async def script(app: TopApp, pilot: Any) -> None:
        deadline = time.monotonic() + 5
        while app.failure is None and time.monotonic() < deadline:
            await pilot.pause(0.05)

    run_app(app, script)
    assert app.failure is not None and app.failure.message == "internal error RuntimeError: boom (please report it)"

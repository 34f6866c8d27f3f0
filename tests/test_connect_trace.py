"""`connect --trace`: the client's system calls on stderr, the data on stdout untouched."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from conftest import free_port, have
from sockscope.errors import ExitCode
from sockscope.ports.free import ephemeral_range

pytestmark = pytest.mark.skipif(not have("socat"), reason="needs socat")


def wait_for(port: int) -> None:
    """Wait until something listens on the port, asking ss (a connection would use up a server that takes one)."""
    for _ in range(100):
        if subprocess.run(["ss", "-tlnH", f"sport = :{port}"], capture_output=True, text=True, check=False).stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@contextlib.contextmanager
def socat_echo(port: int, log: str, options: str = "") -> Iterator[subprocess.Popen[bytes]]:
    """An echo server by socat on 127.0.0.1:port that logs (-d -d) the clients it accepts."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen(["socat", "-d", "-d", f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr{options}", "EXEC:cat"], stderr=sink)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def trace(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sockscope", "connect", "--trace", *args], input=data, capture_output=True, timeout=60, check=False)


def test_trace_narrates_every_call_and_leaves_the_data_byte_exact() -> None:
    port = free_port()
    data = os.urandom(300_000) + b"\r\n\x00\xff end"
    with tempfile.TemporaryDirectory() as folder, socat_echo(port, os.path.join(folder, "log")):
        wait_for(port)
        result = trace(f"127.0.0.1:{port}", data=data)
        with open(os.path.join(folder, "log"), "rb") as handle:
            log = handle.read().decode(errors="replace")
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout == data  # what the echo server sent back, every byte
    lines = result.stderr.decode().splitlines()
    assert lines[0] == f"  getaddrinfo('127.0.0.1', {port}, SOCK_STREAM) = 127.0.0.1:{port}"
    assert re.fullmatch(r"  socket\(AF_INET, SOCK_STREAM, 0\) = fd (\d+)", lines[1])
    fd = lines[1].rsplit(" ", 1)[1]
    chosen = re.fullmatch(rf"  connect\(fd {fd}, 127\.0\.0\.1:{port}\) = 0, local 127\.0\.0\.1:(\d+) \(port (\d+) chosen by the kernel\)", lines[2])
    assert chosen is not None and chosen[1] == chosen[2]
    low, high = ephemeral_range()
    assert low <= int(chosen[1]) <= high
    assert f"127.0.0.1:{chosen[1]}" in log  # socat saw the client come from that very port
    sent = [int(m[1]) for m in map(re.compile(rf"  send\(fd {fd}, \d+ bytes\) = (\d+)$").match, lines) if m]
    received = [int(m[1]) for m in map(re.compile(rf"  recv\(fd {fd}, \d+\) = (\d+)$").match, lines) if m]
    assert sum(sent) == sum(received) == len(data)
    assert f"  shutdown(fd {fd}, SHUT_WR) = 0: our end sends no more (a read by the peer now gets end of data)" in lines
    assert f"  recv(fd {fd}, 262144) = 0: the peer shut down its writing side (end of its data)" in lines
    assert lines[-1] == f"  close(fd {fd}) = 0"


def test_trace_names_econnrefused_and_exits_1() -> None:
    port = free_port()
    result = trace(f"127.0.0.1:{port}")
    assert result.returncode == ExitCode.NOTHING_FOUND and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert re.fullmatch(rf"  connect\(fd \d+, 127\.0\.0\.1:{port}\) = -1 ECONNREFUSED \(Connection refused\)", lines[2])
    assert lines[-1] == f"sockscope: 127.0.0.1:{port}: connection refused (nothing listens there)"


def test_trace_tells_a_connect_that_gets_no_answer_from_a_full_accept_queue() -> None:
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    clients = []
    try:
        for _ in range(3):  # fill the queue; further handshakes are dropped by the kernel
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", port))
            clients.append(client)
        time.sleep(0.2)
        started = time.monotonic()
        result = trace("-w", "1", f"127.0.0.1:{port}")
        assert time.monotonic() - started < 10
    finally:
        for client in clients:
            client.close()
        server.close()
    assert result.returncode == ExitCode.NOTHING_FOUND
    text = result.stderr.decode()
    assert re.search(rf"  connect\(fd \d+, 127\.0\.0\.1:{port}\) = no answer within 1s \(-w\), given up\n", text)
    assert text.endswith(f"sockscope: 127.0.0.1:{port}: timed out\n")


def test_trace_of_a_unix_socket_and_a_missing_one() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "echo.sock")
        proc = subprocess.Popen(["socat", f"UNIX-LISTEN:{path}", "EXEC:cat"])
        try:
            for _ in range(100):
                if os.path.exists(path):
                    break
                time.sleep(0.05)
            result = trace(f"unix:{path}", data=b"hello\n")
        finally:
            proc.kill()
            proc.wait(10)
        missing = trace(f"unix:{folder}/none.sock")
    assert result.returncode == ExitCode.OK and result.stdout == b"hello\n"
    text = result.stderr.decode()
    assert "  socket(AF_UNIX, SOCK_STREAM, 0) = fd " in text and f", {path}) = 0\n" in text
    assert re.search(r"  send\(fd \d+, 6 bytes\) = 6\n", text) and re.search(r"  recv\(fd \d+, 262144\) = 6\n", text)
    assert missing.returncode == ExitCode.NOTHING_FOUND
    assert ") = -1 ENOENT (No such file or directory)\n" in missing.stderr.decode()


def test_trace_with_zero_io_checks_tells_each_connect() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder, socat_echo(port, os.path.join(folder, "log"), ",fork"):
        wait_for(port)
        result = trace("-z", "127.0.0.1", str(port), str(free_port()))
    text = result.stderr.decode()
    assert result.returncode == ExitCode.NOTHING_FOUND
    assert text.count("  connect(fd ") == 2 and "= -1 ECONNREFUSED" in text and "chosen by the kernel" in text
    assert result.stdout.decode().splitlines()[0] == f"tcp://127.0.0.1:{port} open (connected)"


@pytest.mark.parametrize("stderr", ["closed", "full"])
def test_a_trace_nobody_can_read_does_not_touch_the_data(stderr: str) -> None:
    port = free_port()
    data = os.urandom(2_000_000)
    with tempfile.TemporaryDirectory() as folder, socat_echo(port, os.path.join(folder, "log")):
        wait_for(port)
        command = [sys.executable, "-m", "sockscope", "connect", "--trace", f"127.0.0.1:{port}"]
        if stderr == "closed":
            command = ["sh", "-c", 'exec "$@" 2>&-', "sh", *command]
            result = subprocess.run(command, input=data, stdout=subprocess.PIPE, timeout=60, check=False)
        else:
            with open("/dev/full", "wb") as full:
                result = subprocess.run(command, input=data, stdout=subprocess.PIPE, stderr=full, timeout=60, check=False)
    assert result.returncode == ExitCode.OK
    assert result.stdout == data

"""What `sockscope serve` writes: it never waits for its reader, and a client cannot write on the operator's terminal."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from conftest import have
from serving import port, serving


def _serve_into(stdout: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sockscope", "serve", *args], stdout=stdout, stderr=subprocess.PIPE)


def _wait_listening(p: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", p)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {p}")


def _read_all(fd: int, timeout: float) -> bytes:
    os.set_blocking(fd, False)
    out, end = b"", time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:
            break
        out += chunk
    return out


def test_a_stdout_nobody_reads_does_not_stop_serving_and_the_drops_are_counted() -> None:
    p = port()
    read_end, write_end = os.pipe()
    server = _serve_into(write_end, f"127.0.0.1:{p}", "--mode", "echo", "--json", "--trace")
    os.close(write_end)
    try:
        _wait_listening(p)
        started = time.monotonic()
        for number in range(2000):
            with socket.create_connection(("127.0.0.1", p), timeout=5) as client:
                payload = b"round trip %d\n" % number
                client.sendall(payload)
                assert client.recv(100) == payload, f"round trip {number} not answered"
        assert time.monotonic() - started < 30
        server.terminate()
        out = _read_all(read_end, 10)
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        os.close(read_end)
        assert server.stderr is not None
        server.stderr.close()
    events = [json.loads(line) for line in out.splitlines()]  # every line still whole JSON
    dropped = [e for e in events if e.get("dropped")]
    assert dropped and "log lines dropped: output not read" in dropped[0]["detail"]
    assert events[0]["event"] in ("trace", "listening")


def test_a_reader_that_goes_away_does_not_stop_serving() -> None:
    p = port()
    read_end, write_end = os.pipe()
    server = _serve_into(write_end, f"127.0.0.1:{p}", "--mode", "echo")
    os.close(write_end)
    try:
        _wait_listening(p)
        os.close(read_end)
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", p), timeout=5) as client:
                client.sendall(b"still here")
                assert client.recv(100) == b"still here"
        server.terminate()
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        assert server.stderr is not None
        server.stderr.close()


@pytest.fixture
def text_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    p = port()
    server = _serve_into(subprocess.PIPE, f"127.0.0.1:{p}", "--trace")
    try:
        _wait_listening(p)
        yield p, server
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)
        for stream in (server.stdout, server.stderr):
            if stream:
                stream.close()


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_print_shows_control_bytes_escaped_one_log_line_per_client_line(text_server: tuple[int, subprocess.Popen[bytes]]) -> None:
    p, server = text_server
    sent = b"\x1b[2J\rforged 12:00:00 line\nback\\slash\r\n\xff\x00\x9b\n"
    subprocess.run(["nc", "-N", "127.0.0.1", str(p)], input=sent, capture_output=True, timeout=10, check=True)
    time.sleep(0.3)
    server.terminate()
    assert server.stdout is not None
    out = server.stdout.read()
    assert b"\x1b" not in out and b"\r" not in out and b"\xff" not in out and b"\x00" not in out
    lines = out.decode().splitlines()
    said = [m[1] for m in (re.match(r"\S+ #\d+ 127\.0\.0\.1:\d+: (.*)$", line) for line in lines) if m]
    assert said == ["\\x1b[2J\\rforged 12:00:00 line", "back\\\\slash", "\\xff\\x00\\x9b"]
    assert any(line.startswith("  accept() = fd") for line in lines), "the trace is written too"


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_json_text_stays_valid_and_the_bytes_come_back_from_data() -> None:
    p = port()
    with serving(str(p)) as served:
        sent = b"\x1b[2J\r\xff caf\xc3\xa9\n"
        subprocess.run(["nc", "-N", "127.0.0.1", str(p)], input=sent, capture_output=True, timeout=10, check=True)
        data = served.wait_for("data")
        assert base64.b64decode(data["data"]) == sent
        assert data["text"] == "\x1b[2J\r\\xff café\n"
        subprocess.run(["nc", "-N", "127.0.0.1", str(p)], input="plain café\n".encode(), capture_output=True, timeout=10, check=True)
        plain = served.wait_for("data")
        assert plain["text"] == "plain café\n" and "data" not in plain


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_a_unix_peer_named_with_escapes_cannot_write_on_the_terminal(tmp_path: object) -> None:
    directory = str(tmp_path)
    server_path = os.path.join(directory, "s.sock")
    client_path = os.fsencode(os.path.join(directory, "c\x1b[2J\r")) + b"\xff.sock"
    server = _serve_into(subprocess.PIPE, f"unix:{server_path}", "--mode", "chat", "--trace")
    try:
        end = time.monotonic() + 10
        while not os.path.exists(server_path) and time.monotonic() < end:
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as listener_side:
            listener_side.connect(server_path)
            listener_side.settimeout(5)
            speaker = subprocess.Popen(["socat", "-", b"UNIX-CONNECT:" + os.fsencode(server_path) + b",bind=" + client_path], stdin=subprocess.PIPE)
            assert speaker.stdin is not None
            speaker.stdin.write(b"hi\n")
            speaker.stdin.close()
            heard = b""
            while heard.count(b"\n") < 2:
                chunk = listener_side.recv(4096)
                assert chunk
                heard += chunk
            speaker.wait(10)
        assert b"\x1b" not in heard and b"\r" not in heard and b"\xff" not in heard
        assert b"c\\x1b[2J\\r\\xff.sock" in heard
        time.sleep(0.3)
        server.terminate()
        server.wait(10)
        assert server.stdout is not None
        out = server.stdout.read()
        assert b"\x1b" not in out and b"\r" not in out and b"\xff" not in out
        assert out.count(b"c\\x1b[2J\\r\\xff.sock") >= 3  # the trace, the connect and the close
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for stream in (server.stdout, server.stderr):
            if stream:
                stream.close()

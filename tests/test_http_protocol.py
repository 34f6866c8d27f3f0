"""`serve --mode http`: redirects, ranges, If-Range, Upgrade, HTTP/1.0 keep-alive and the request timeout, over real sockets."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from serving import Served, port, serving
from sockscope.address import Address
from sockscope.net import http as web
from sockscope.net.hub import Event, Hub, Settings

BODY = bytes(range(256)) * 4  # 1 KiB


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "file.bin").write_bytes(BODY)
    old = time.time() - 3600
    os.utime(tmp_path / "file.bin", (old, old))  # a Last-Modified that is a strong validator
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "in.txt").write_bytes(b"in d")
    return tmp_path


@pytest.fixture
def server(site: Path) -> Iterator[tuple[Served, int]]:
    p = port()
    with serving(str(p), "--mode", "http", "--root", str(site), "--request-timeout", "1", "--quiet") as served:
        yield served, p
        served.stop()
        assert served.process.stderr is not None
        assert served.process.stderr.read() == ""  # no traceback, no warning, whatever was sent


def exchange(p: int, request: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, give everything the server sends until it closes (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", p)) as sock:
        sock.sendall(request)
        return read_all(sock, wait)


def read_all(sock: socket.socket, wait: float) -> bytes:
    """Give what arrives until the server closes or is silent for `wait` seconds."""
    sock.settimeout(wait)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except TimeoutError:
        pass
    return answer


def headers_of(answer: bytes) -> dict[bytes, bytes]:
    head = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return {name.lower(): value.strip() for name, _colon, value in (line.partition(b":") for line in head)}


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (b"/%2fattacker.example%2f..", b"/"),
        (b"/%2f%2fattacker.example%2f..%2fd", b"/d/"),
        (b"//attacker.example/../d", b"/d/"),
        (b"/%5c%5cattacker.example/..", b"/"),
        (b"/d?next=//attacker.example", b"/d/?next=//attacker.example"),
        (b"/./d", b"/d/"),
    ],
)
def test_a_redirect_never_leaves_the_server(server: tuple[Served, int], target: bytes, location: bytes) -> None:
    answer = exchange(server[1], b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 301 ")
    assert headers_of(answer)[b"location"] == location


def test_curl_follows_the_redirect_to_the_directory(server: tuple[Served, int]) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-L", "--path-as-is", "-o", "/dev/null", "-w", "%{url_effective} %{http_code}", f"http://127.0.0.1:{server[1]}/%2fattacker.example%2f.."],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert out.stdout == f"http://127.0.0.1:{server[1]}/ 200"


@pytest.mark.parametrize(
    ("value", "status", "body"),
    [
        (b"bytes=\xb2-", 416, None),  # a superscript two is a digit to str.isdigit, not to HTTP
        (b"bytes=" + b"9" * 4300 + b"-", 416, None),  # more digits than int() takes
        (b"bytes=" + b"9" * 40 + b"-", 416, None),
        (b"bytes=0-" + b"9" * 4300, 206, BODY),
        (b"bytes=-" + b"9" * 4300, 206, BODY),
        (b"bytes=1_0-20", 416, None),
        (b"bytes=abc", 416, None),
        (b"bytes=5-3", 416, None),
        (b"bytes=-0", 416, None),
        (b"bytes==", 416, None),
        (b"bytes=\xd9\xa3-", 416, None),
        (b"bytes=10-19", 206, BODY[10:20]),
        (b"items=1-2", 200, BODY),  # a unit we do not know: ignored, as RFC 9110 14.2 requires
        (b"bytes=1-2,5-6", 200, BODY),  # several ranges: the whole file (allowed)
    ],
)
def test_malformed_ranges_are_answered_and_the_connection_goes_on(server: tuple[Served, int], value: bytes, status: int, body: bytes | None) -> None:
    request = b"GET /file.bin HTTP/1.1\r\nHost: x\r\nRange: " + value + b"\r\n\r\n"
    answer = exchange(server[1], request + b"GET /d/in.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:80]
    if body is not None:
        assert answer.partition(b"\r\n\r\n")[2].startswith(body)
    else:
        assert headers_of(answer)[b"content-range"] == b"bytes */1024"
    assert answer.count(b"HTTP/1.1 ") == 2 and answer.endswith(b"\r\n\r\nin d")  # the next request is answered


def test_upgrade_is_ignored_and_answered_once(server: tuple[Served, int]) -> None:
    upgrade = b"GET /d/in.txt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server[1])) as sock:
        sock.sendall(upgrade)
        answer = read_all(sock, 0.5)
        assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"in d")
        sock.sendall(b"GET /file.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # the connection is still HTTP
        sock.settimeout(5)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(BODY)
    both = exchange(server[1], upgrade + b"GET /file.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # pipelined behind it
    assert both.count(b"HTTP/1.1 200 ") == 2 and both.endswith(BODY)


def test_if_range(server: tuple[Served, int], site: Path) -> None:
    p = server[1]
    conn = http.client.HTTPConnection("127.0.0.1", p, timeout=5)
    conn.request("GET", "/file.bin")
    response = conn.getresponse()
    response.read()
    etag, modified = response.getheader("etag"), response.getheader("last-modified")
    assert etag and etag.startswith('W/"') and modified == formatdate(int(os.stat(site / "file.bin").st_mtime), usegmt=True)
    for validator, status in ((etag, 200), (etag.removeprefix("W/"), 200), (modified, 206), (formatdate(time.time() - 7200, usegmt=True), 200)):
        conn.request("GET", "/file.bin", headers={"Range": "bytes=0-9", "If-Range": validator})
        response = conn.getresponse()
        body = response.read()
        assert (response.status, len(body)) == (status, 10 if status == 206 else 1024), validator
    conn.close()


def test_if_range_date_of_a_file_changed_this_second_is_not_strong(server: tuple[Served, int], site: Path) -> None:
    (site / "new.txt").write_bytes(b"0123456789")
    modified = formatdate(int(os.stat(site / "new.txt").st_mtime), usegmt=True)
    answer = exchange(server[1], f"GET /new.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-Range: {modified}\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 ")  # RFC 9110 8.8.2.2: a date within the last second may hide a change


def test_http_10_keep_alive_is_confirmed_and_kept(server: tuple[Served, int]) -> None:
    with socket.create_connection(("127.0.0.1", server[1])) as sock:
        sock.settimeout(5)
        for _ in range(2):
            sock.sendall(b"GET /d/in.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            answer = b""
            while not answer.endswith(b"in d"):
                chunk = sock.recv(65536)
                assert chunk, "closed after a keep-alive answer"
                answer += chunk
            assert headers_of(answer)[b"connection"] == b"keep-alive" and headers_of(answer)[b"content-length"] == b"4"
        sock.sendall(b"GET /d/in.txt HTTP/1.0\r\n\r\n")  # without it: answered, then closed
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.endswith(b"in d") and headers_of(answer)[b"connection"] == b"close"


def test_a_silent_connection_is_closed_after_the_request_timeout(server: tuple[Served, int]) -> None:
    p = server[1]
    silent = socket.create_connection(("127.0.0.1", p))
    after_answer = socket.create_connection(("127.0.0.1", p))
    silent.settimeout(5)
    after_answer.settimeout(5)
    opened = time.monotonic()
    after_answer.sendall(b"GET /d/in.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert after_answer.recv(65536).endswith(b"in d")
    took = []
    for _ in range(3):
        started = time.monotonic()
        out = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{p}/file.bin"], capture_output=True, timeout=5, check=True).stdout
        took.append(time.monotonic() - started)
        assert out == BODY
    assert silent.recv(100) == b""  # closed, without a word: it asked nothing
    assert 0.9 < time.monotonic() - opened < 3.5
    assert after_answer.recv(100) == b""  # idle after its answer: the same limit, counted from the answer
    silent.close()
    after_answer.close()
    print(f"curl while a silent connection waits: {max(took) * 1000:.0f} ms at most")


def test_a_request_started_and_not_finished_gets_408(server: tuple[Served, int]) -> None:
    started = time.monotonic()
    answer = exchange(server[1], b"GET /file.bin HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ") and 0.9 < time.monotonic() - started < 3.5


def test_an_internal_error_is_a_500_and_one_event(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    hub = Hub(Settings(Address("tcp", "127.0.0.1", 1), mode="http", root=str(site), data_events=False), events.append)
    session = web.HttpSession(hub)
    written = bytearray()

    class Transport:
        def write(self, data: bytes) -> None:
            written.extend(data)

        def is_closing(self) -> bool:
            return False

        def get_write_buffer_size(self) -> int:
            return 0

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 40000) if name == "peername" else default

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    session.connection_made(Transport())

    def broken(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(web, "answer", broken)
    session.data_received(b"GET /file.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert written.startswith(b"HTTP/1.1 500 ")
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and "disk on fire" in (warnings[0].detail or "") and "\n" not in (warnings[0].detail or "")
    monkeypatch.undo()
    written.clear()
    session.data_received(b"GET /file.bin HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection goes on
    assert written.startswith(b"HTTP/1.1 200 ") and written.endswith(BODY)


def test_pipelined_requests_of_a_client_that_reads_late_are_all_answered_in_order(server: tuple[Served, int]) -> None:
    count = 3000
    with socket.create_connection(("127.0.0.1", server[1])) as sock:
        requests = b"".join(b"GET /file.bin?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count - 1))
        sender = threading.Thread(target=sock.sendall, args=(requests + b"GET /d/in.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",))
        sender.start()
        time.sleep(0.5)  # not reading meanwhile: the server must hold the rest, not drop or reorder it
        sock.settimeout(10)
        answer = bytearray()
        while chunk := sock.recv(1 << 20):
            answer += chunk
        sender.join()
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == count
    assert answer.count(BODY) == count - 1 and answer.endswith(b"in d")


def test_a_large_file_read_slowly_arrives_whole(server: tuple[Served, int], site: Path) -> None:
    data = os.urandom(16 * 1024 * 1024 + 5)  # more than the socket buffers hold: the server has to wait for room
    (site / "large.bin").write_bytes(data)
    with socket.create_connection(("127.0.0.1", server[1])) as sock:
        sock.sendall(b"GET /large.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(10)
        answer = bytearray()
        started = time.monotonic()
        while chunk := sock.recv(65536):
            answer += chunk
            if time.monotonic() - started < 1.0:
                time.sleep(0.05)  # slow at first: the server waits for room, then carries on
    assert answer.partition(b"\r\n\r\n")[2] == data

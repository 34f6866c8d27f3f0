"""`serve --mode http`: HTTP/1.1 behaviour over real sockets, robustness, and fuzzing of the request path."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import Served, port, serving
from sockscope.address import Address
from sockscope.net import files, jail
from sockscope.net import http as web
from sockscope.net.server import Hub, Settings


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("site")
    (root / "small.txt").write_bytes(b"0123456789" * 100)
    (root / "with space.txt").write_bytes(b"spaced")
    (root / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 7))
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "files").mkdir()
    (root / "files" / "<b>&.txt").write_bytes(b"odd name")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_bytes(b"secret")
    os.symlink(outside / "secret", root / "escape")
    return str(root)


@pytest.fixture(scope="module")
def server(site: str) -> Iterator[tuple[Served, int]]:
    p = port()
    with serving(str(p), "--mode", "http", "--root", site, "--request-timeout", "1", "--max-request", "8192") as served:
        yield served, p


def get(p: int, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_keep_alive_serves_several_requests_on_one_connection(server: tuple[Served, int]) -> None:
    _served, p = server
    conn = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
    ports = set()
    for _ in range(3):
        conn.request("GET", "/small.txt")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b"0123456789" * 100
        assert response.getheader("content-length") == "1000"
        assert conn.sock is not None
        ports.add(conn.sock.getsockname()[1])
    assert len(ports) == 1
    conn.close()


def test_head_has_the_length_and_no_body(server: tuple[Served, int]) -> None:
    status, headers, body = get(server[1], "/small.txt", "HEAD")
    assert status == 200 and headers["content-length"] == "1000" and body == b""
    assert headers["content-type"].startswith("text/plain")


def test_ranges(server: tuple[Served, int]) -> None:
    p = server[1]
    status, headers, body = get(p, "/small.txt", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == b"0123456789" and headers["content-range"] == "bytes 10-19/1000"
    status, _headers, body = get(p, "/small.txt", headers={"Range": "bytes=-5"})
    assert status == 206 and body == b"56789"
    status, headers, _body = get(p, "/small.txt", headers={"Range": "bytes=5000-"})
    assert status == 416 and headers["content-range"] == "bytes */1000"


def test_not_modified(server: tuple[Served, int], site: str) -> None:
    p = server[1]
    mtime = os.stat(os.path.join(site, "small.txt")).st_mtime
    status, _headers, body = get(p, "/small.txt", headers={"If-Modified-Since": formatdate(mtime + 10, usegmt=True)})
    assert status == 304 and body == b""
    assert get(p, "/small.txt", headers={"If-Modified-Since": formatdate(mtime - 3600, usegmt=True)})[0] == 200
    etag = get(p, "/small.txt")[1]["etag"]
    assert get(p, "/small.txt", headers={"If-None-Match": etag})[0] == 304


def test_percent_decoding_listing_and_redirect(server: tuple[Served, int]) -> None:
    p = server[1]
    assert get(p, "/with%20space.txt")[2] == b"spaced"
    status, headers, _ = get(p, "/docs")
    assert status == 301 and headers["location"] == "/docs/"
    assert get(p, "/docs/")[2] == b"<h1>docs</h1>"
    status, _headers, body = get(p, "/files/")
    assert status == 200 and b"&lt;b&gt;&amp;.txt" in body and b'href="%3Cb%3E%26.txt"' in body
    assert get(p, "/files/%3Cb%3E%26.txt")[2] == b"odd name"


@pytest.mark.parametrize("path", ["/../outside/secret", "/%2e%2e/%2e%2e/etc/passwd", "/docs/../../etc/passwd", "/escape", "/%2E%2E%2Fetc%2Fpasswd"])
def test_no_escape_from_the_root(server: tuple[Served, int], path: str) -> None:
    with socket.create_connection(("127.0.0.1", server[1])) as sock:  # raw, so that nothing normalises the path
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404") and b"secret" not in answer and b"root:" not in answer


def test_other_methods_are_refused(server: tuple[Served, int]) -> None:
    status, headers, _ = get(server[1], "/small.txt", "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_a_large_file_arrives_whole(server: tuple[Served, int], site: str) -> None:
    with open(os.path.join(site, "big.bin"), "rb") as handle:
        expected = hashlib.sha256(handle.read()).hexdigest()
    status, headers, body = get(server[1], "/big.bin")
    assert status == 200 and int(headers["content-length"]) == len(body) and hashlib.sha256(body).hexdigest() == expected


def test_http_10_client_gets_the_connection_closed(server: tuple[Served, int]) -> None:
    with socket.create_connection(("127.0.0.1", server[1])) as sock:
        sock.sendall(b"GET /small.txt HTTP/1.0\r\n\r\n")
        sock.settimeout(5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"0123456789")


def test_pipelined_requests_are_answered_in_order(server: tuple[Served, int]) -> None:
    with socket.create_connection(("127.0.0.1", server[1])) as sock:
        first = b"GET /with%20space.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(first + b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.index(b"spaced") < answer.index(b"<h1>docs</h1>") < answer.index(b"0123456789")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x00\x01\x02garbage\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"b" * 9000 + b"\r\n\r\n", b"431"),
    ],
)
def test_garbage_and_oversized_requests_get_an_error_and_the_server_lives(server: tuple[Served, int], request_bytes: bytes, status: bytes) -> None:
    p = server[1]
    with socket.create_connection(("127.0.0.1", p)) as sock:
        sock.sendall(request_bytes)
        sock.settimeout(5)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
    assert get(p, "/with%20space.txt")[2] == b"spaced"


def test_slowloris_is_cut_off_while_others_are_served(server: tuple[Served, int]) -> None:
    p = server[1]
    slow = socket.create_connection(("127.0.0.1", p))
    slow.settimeout(5)
    started = time.monotonic()
    answer = b""
    for byte in b"GET /small.txt HTTP/1.1\r\nHost: slow\r\n":
        try:
            slow.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        assert get(p, "/with%20space.txt")[2] == b"spaced"  # others are served meanwhile
        time.sleep(0.1)
        if time.monotonic() - started > 4:
            break
    try:
        while chunk := slow.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    slow.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert time.monotonic() - started < 6


def test_a_client_that_vanishes_mid_download_does_not_hurt(server: tuple[Served, int]) -> None:
    p = server[1]
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", p))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    assert get(p, "/with%20space.txt")[2] == b"spaced"


# -- the request path without sockets: fuzzed


class _Transport:
    """Enough of an asyncio transport to drive an HttpSession by hand."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def _session(root: str) -> tuple[web.HttpSession, _Transport]:
    hub = Hub(Settings(Address("tcp", "127.0.0.1", 1), mode="http", root=root, max_request=4096, data_events=False), lambda event: None)
    session = web.HttpSession(hub)
    transport = _Transport()
    session.connection_made(transport)
    return session, transport


_TOKENS = st.sampled_from(
    [b"GET ", b"HEAD ", b"POST ", b"/", b"small.txt", b"%2e%2e/", b"..", b"?q=1", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b"Host: x\r\n", b"Range: bytes=1-3\r\n",
     b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"If-Modified-Since: junk\r\n", b"\r\n", b"\x00",
     b"\xff", b"abc", b"0\r\n\r\n"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TOKENS, st.binary(max_size=40)), max_size=30), st.integers(min_value=1, max_value=64))
def test_fuzzed_requests_never_crash_and_every_answer_is_http(site: str, pieces: list[bytes], cut: int) -> None:
    session, transport = _session(site)
    data = b"".join(pieces)
    for start in range(0, len(data), cut):  # fed in arbitrary chunks
        if transport.closed:
            break
        session.data_received(data[start : start + cut])
    if not transport.closed:
        session.eof_received()
    out = bytes(transport.out)
    if out:
        assert out.startswith(b"HTTP/1.1 ")
        status = int(out[9:12])
        assert status in (200, 206, 301, 304, 400, 404, 405, 408, 416, 431)
    session.connection_lost(None)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "", "docs", "files", "%2e%2e", "escape", "small.txt", "a/b", "\\", "%00", "//"]), max_size=8))
def test_no_url_path_leaves_the_root(site: str, parts: list[str]) -> None:
    target = ("/" + "/".join(parts)).encode()
    reply = files.answer(jail.root_of(site), b"GET", target, {})
    if reply.fd is not None:
        opened = os.readlink(f"/proc/self/fd/{reply.fd}")
        os.close(reply.fd)
        assert opened.startswith(os.path.realpath(site) + os.sep)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=60),
        st.builds(b"bytes=%b-%b".__mod__, st.tuples(st.binary(max_size=8), st.binary(max_size=8))),
        st.builds(b"bytes=%d-%d".__mod__, st.tuples(st.integers(0, 10**30), st.integers(0, 10**30))),
        st.builds(b"bytes=-%d".__mod__, st.integers(0, 10**30)),
    ),
    st.integers(0, 10**12),
)
def test_any_range_header_is_a_span_inside_the_file_or_a_refusal(value: bytes, size: int) -> None:
    span = files.byte_range(value, size)
    if isinstance(span, tuple):
        first, last = span
        assert 0 <= first <= last < size


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=5), st.binary(max_size=20))
def test_a_directory_location_is_always_a_path_on_this_server(parts: list[str], query: bytes) -> None:
    parts = [p for p in parts if p not in ("", ".", "..") and "\0" not in p]
    location = files.location(parts, query)
    assert location.startswith(b"/") and not location.startswith((b"//", b"/\\")) and b"\r" not in location and b"\n" not in location
    assert location.partition(b"?")[0].count(b"/") == len(parts) + 1


class _SlowTransport(_Transport):
    """A transport whose client reads only when told: what is written waits in a buffer, as in asyncio."""

    def __init__(self, session: web.HttpSession) -> None:
        super().__init__()
        self.session = session
        self.waiting = bytearray()
        self.paused = False

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.waiting += data
            if len(self.waiting) > web.HIGH_WATER and not self.paused:
                self.paused = True
                self.session.pause_writing()

    def get_write_buffer_size(self) -> int:
        return len(self.waiting)

    def drain(self, size: int) -> None:
        self.out += self.waiting[:size]
        del self.waiting[:size]
        if self.paused and len(self.waiting) <= web.HIGH_WATER // 4:
            self.paused = False
            self.session.resume_writing()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["/small.txt", "/big.bin", "/with%20space.txt", "/docs/", "/nothing"]), min_size=1, max_size=40), st.data())
def test_pipelined_answers_keep_their_order_whatever_the_reading_pace(site: str, paths: list[str], data: st.DataObject) -> None:
    hub = Hub(Settings(Address("tcp", "127.0.0.1", 1), mode="http", root=site, data_events=False), lambda event: None)
    session = web.HttpSession(hub)
    transport = _SlowTransport(session)
    session.connection_made(transport)
    stream = b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths)
    sent = 0
    for _ in range(100_000):
        if sent < len(stream) and transport.reading:
            cut = data.draw(st.integers(1, 5000))
            session.data_received(stream[sent : sent + cut])
            sent += cut
        elif transport.waiting:
            transport.drain(data.draw(st.sampled_from([100, 5000, 1 << 20])))
        else:
            break
        if sent < len(stream) and transport.reading is False and not transport.waiting:
            raise AssertionError("reading paused with nothing left to send: the client would wait forever")
    session.connection_lost(None)
    statuses = [int(found) for found in re.findall(rb"HTTP/1\.1 (\d\d\d) [A-Z]", bytes(transport.out))]
    expected = [404 if path == "/nothing" else 200 for path in paths]
    assert statuses == expected
    big = (Path(site) / "big.bin").read_bytes()
    assert bytes(transport.out).count(big) == paths.count("/big.bin")

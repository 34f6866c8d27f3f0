"""`serve --mode http`: static files and directory listings over HTTP/1.1.

Requests are parsed by httptools (the llhttp parser of Node.js): framing, chunked bodies,
HTTP/1.0 and keep-alive rules, malformed and smuggling-prone input. What is ours is the file
server: `answer()` turns a request into a `Reply` without touching a socket, and `HttpSession`
keeps answers in request order, limits request heads, and streams large files with backpressure.
"""

from __future__ import annotations

import html
import mimetypes
import os
import stat
import time
import urllib.parse
from collections import deque
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from typing import BinaryIO, NamedTuple

import httptools

from .. import __version__
from .hub import Hub
from .modes import StreamSession

SERVER = f"sockscope/{__version__}".encode()
CACHE_LIMIT = 64 * 1024  # files up to this size are kept in memory (re-checked by mtime and size)
CHUNK = 256 * 1024
HIGH_WATER = 1 << 20


class Reply(NamedTuple):
    """What to answer: status, headers, and a body given as bytes or as a span of a file."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    file: str | None = None
    offset: int = 0
    length: int = 0
    stamp: tuple[int, int] | None = None  # the file's (mtime_ns, size) when the reply was made


def _page(status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    body = f"<!doctype html>\n<title>{status} {html.escape(text)}</title>\n<h1>{status} {html.escape(text)}</h1>\n".encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    return Reply(status, headers, body)


def http_date(seconds: float) -> bytes:
    """Give the IMF-fixdate of a time (`Sun, 06 Nov 1994 08:49:37 GMT`)."""
    return formatdate(seconds, usegmt=True).encode()


def request_path(target: bytes) -> str | None:
    """Give the decoded path of a request target (origin or absolute form), or None when it is unusable."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith(("http://", "https://")):
        text = "/" + text.split("://", 1)[1].partition("/")[2]
    if not text.startswith("/"):
        return None
    path = text.partition("?")[0].partition("#")[0]
    decoded = os.fsdecode(urllib.parse.unquote_to_bytes(path))
    return None if "\0" in decoded else decoded


_RESOLVED: dict[str, str] = {}
_RESOLVED_SECOND = [0]


def _real(path: str) -> str:
    """os.path.realpath, remembered for the rest of the current second (the same few files are asked for again and again)."""
    second = int(time.monotonic())
    if second != _RESOLVED_SECOND[0] or len(_RESOLVED) > 4096:
        _RESOLVED.clear()
        _RESOLVED_SECOND[0] = second
    found = _RESOLVED.get(path)
    if found is None:
        found = _RESOLVED[path] = os.path.realpath(path)
    return found


def locate(root: str, path: str) -> str | None:
    """Give the file under `root` that a decoded URL path names, or None when it would leave `root`.

    `..` is resolved within the URL first, then symbolic links are followed and the result must
    still be inside `root`.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    real_root = _real(root)
    candidate = _real(os.path.join(real_root, *parts))
    if candidate != real_root and not candidate.startswith(real_root.rstrip("/") + "/"):
        return None
    return candidate


def _byte_range(spec: bytes, size: int) -> tuple[int, int] | bool | None:
    """Give (first, last) of a single `bytes=` range; None to ignore the header; False when unsatisfiable."""
    unit, _eq, ranges = spec.decode("latin-1").partition("=")
    if unit.strip().lower() != "bytes" or "," in ranges:
        return None  # other units and multiple ranges: send the whole file (allowed by RFC 9110)
    first_text, dash, last_text = ranges.strip().partition("-")
    if not dash:
        return None
    first_text, last_text = first_text.strip(), last_text.strip()
    if not first_text:  # the last N bytes
        if not last_text.isdigit():
            return None
        n = int(last_text)
        return (max(0, size - n), size - 1) if n and size else False
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size:
        return False
    return None if last < first else (first, last)


def _not_modified(headers: dict[bytes, bytes], mtime: int, etag: bytes) -> bool:
    if b"if-none-match" in headers:
        tags = [t.strip().removeprefix(b"W/") for t in headers[b"if-none-match"].split(b",")]
        return b"*" in tags or etag.removeprefix(b"W/") in tags
    since = headers.get(b"if-modified-since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since.decode("latin-1")).timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        return False
    return mtime <= when


def _listing(url_path: str, directory: str) -> Reply:
    try:
        names = sorted(os.listdir(directory), key=lambda n: (n.lower(), n))
    except OSError as exc:
        return _page(403, f"cannot list this directory: {exc.strerror}")
    shown = html.escape(url_path)
    rows = ['<tr><td><a href="../">../</a></td><td></td><td></td></tr>'] if url_path != "/" else []
    for name in names:
        try:
            info = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        is_dir = stat.S_ISDIR(info.st_mode)
        label = name + ("/" if is_dir else "")
        href = urllib.parse.quote(os.fsencode(name)) + ("/" if is_dir else "")
        size = "" if is_dir else str(info.st_size)
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.st_mtime))
        rows.append(f'<tr><td><a href="{html.escape(href)}">{html.escape(label)}</a></td><td>{size}</td><td>{when}</td></tr>')
    body = (
        f"<!doctype html>\n<meta charset=utf-8>\n<title>Index of {shown}</title>\n<h1>Index of {shown}</h1>\n"
        "<table>\n<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n" + "\n".join(rows) + "\n</table>\n"
    ).encode("utf-8", "surrogateescape")
    return Reply(200, [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())], body)


def answer(root: str, method: bytes, target: bytes, headers: dict[bytes, bytes]) -> Reply:
    """Give the reply to one request for a file under `root` (headers keyed in lower case)."""
    if method not in (b"GET", b"HEAD"):
        return _page(405, "method not allowed", [(b"allow", b"GET, HEAD")])
    path = request_path(target)
    if path is None:
        return _page(400, "bad request target")
    found = locate(root, path)
    if found is None:
        return _page(404, "not found")
    try:
        info = os.stat(found)
    except OSError:
        return _page(404, "not found")
    if stat.S_ISDIR(info.st_mode):
        if not path.endswith("/"):
            query = target.partition(b"?")[2]
            location = urllib.parse.quote(os.fsencode(path)) + "/" + ("?" + query.decode("ascii", "replace") if query else "")
            return _page(301, "moved permanently", [(b"location", location.encode())])
        index = os.path.join(found, "index.html")
        if not os.path.isfile(index):
            return _listing(path, found)
        found, info = index, os.stat(index)
    if not stat.S_ISREG(info.st_mode):
        return _page(403, "not a regular file")
    mtime = int(info.st_mtime)
    etag = f'W/"{info.st_mtime_ns:x}-{info.st_size:x}"'.encode()
    kind = mimetypes.guess_type(found)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    response_headers = [(b"content-type", kind.encode()), (b"last-modified", http_date(mtime)), (b"etag", etag), (b"accept-ranges", b"bytes")]
    if _not_modified(headers, mtime, etag):
        return Reply(304, response_headers)
    size = info.st_size
    span = _byte_range(headers[b"range"], size) if b"range" in headers else None
    if span is not None and b"if-range" in headers and headers[b"if-range"] not in (etag, http_date(mtime)):
        span = None  # the client's copy is outdated: it gets the whole file
    if span is False:
        return _page(416, "range not satisfiable", [(b"content-range", f"bytes */{size}".encode())])
    if isinstance(span, tuple):
        first, last = span
        response_headers += [(b"content-range", f"bytes {first}-{last}/{size}".encode()), (b"content-length", str(last - first + 1).encode())]
        return Reply(206, response_headers, file=found, offset=first, length=last - first + 1, stamp=(info.st_mtime_ns, size))
    response_headers.append((b"content-length", str(size).encode()))
    return Reply(200, response_headers, file=found, offset=0, length=size, stamp=(info.st_mtime_ns, size))


class FileCache:
    """Small files kept in memory, keyed by path and checked against the (mtime, size) of each request."""

    def __init__(self, limit_files: int = 4096) -> None:
        self.files: dict[str, tuple[tuple[int, int], bytes]] = {}
        self.limit = limit_files

    def get(self, path: str, stamp: tuple[int, int]) -> bytes | None:
        found = self.files.get(path)
        if found is not None and found[0] == stamp:
            return found[1]
        if stamp[1] > CACHE_LIMIT:
            return None
        try:
            with open(path, "rb") as handle:
                data = handle.read(CACHE_LIMIT + 1)
        except OSError:
            return None
        if len(data) != stamp[1]:
            return None  # changing while read: serve it from the file this once
        if len(self.files) >= self.limit:
            self.files.clear()
        self.files[path] = (stamp, data)
        return data


class _Clock:
    """The Date header, made once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, http_date(second)
        return self.text


_CLOCK = _Clock()
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_FILES = FileCache()  # one per process (each worker is a process)
_REFUSAL = b"HTTP/1.1 %d %s\r\nconnection: close\r\ncontent-length: 0\r\nserver: " + SERVER + b"\r\n\r\n"
_PIPELINE_DEPTH = 64  # requests read ahead of their answers before reading pauses


class _Stop(Exception):
    """Raised from a parser callback to stop reading this client (the reason is already set)."""


class HttpSession(StreamSession):
    """One HTTP client: requests are parsed by httptools (llhttp), answered by `answer()` in order."""

    __slots__ = ("head_size", "headers", "keep_after_pump", "parser", "pump", "queue", "refusal", "request_since", "url")

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[bytes, bytes, dict[bytes, bytes], bool]] = deque()
        self.pump: tuple[BinaryIO, int] | None = None
        self.request_since: float | None = None
        self.refusal: tuple[int, str] | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.head_size = 0
        self.keep_after_pump = True

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.head_size = b"", {}, 0
        if self.request_since is None:
            self.request_since = time.monotonic()

    def _count(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.hub.settings.max_request:
            self.refusal = (431, f"request head over {self.hub.settings.max_request} bytes")
            raise _Stop

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        key = name.lower()
        self.headers[key] = self.headers[key] + b", " + value if key in self.headers else value

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD"):  # answer at once; its body is not read
            self.queue.append((method, self.url, self.headers, False))
            raise _Stop

    def on_message_complete(self) -> None:
        self.queue.append((self.parser.get_method(), self.url, self.headers, self.parser.should_keep_alive()))
        self.request_since = None

    # -- the connection
    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        if self.hub.trace:
            self.hub.narrate(f"recv(fd {self.fd}) = {len(data)}")
        if self.refusal is not None:
            return
        if self.request_since is None:
            self.request_since = time.monotonic()
        try:
            self.parser.feed_data(data)
        except _Stop:
            pass
        except httptools.HttpParserUpgrade:
            self.refusal = (400, "protocol upgrades are not served")
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                raise
        except httptools.HttpParserError as exc:
            self.refusal = (400, str(exc) or "malformed request")
        self.answer_queued()
        if len(self.queue) > _PIPELINE_DEPTH:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        super().eof_received()
        return bool(self.pump is not None or self.queue)  # keep answering what the client still waits for

    def answer_queued(self) -> None:
        transport = self.transport
        while self.queue and self.pump is None and not transport.is_closing():
            method, url, headers, keep_alive = self.queue.popleft()
            self.request(method, url, headers, keep_alive)
        if self.refusal is not None and self.pump is None and not self.queue and not transport.is_closing():
            status, why = self.refusal
            self.send(_REFUSAL % (status, _REASONS.get(status, b"Bad Request")))
            self.drop(f"bad request: {why}")
        if not self.queue and self.pump is None and transport.is_closing() is False and self.closing_reason == "client closed":
            transport.close()
        elif len(self.queue) <= _PIPELINE_DEPTH // 2 and not transport.is_closing():
            transport.resume_reading()

    def request(self, method: bytes, target: bytes, headers: dict[bytes, bytes], keep_alive: bool) -> None:
        hub = self.hub
        reply = answer(hub.settings.root or ".", method, target, headers)
        body = reply.body
        handle: BinaryIO | None = None
        if reply.file is not None and reply.stamp is not None:
            whole = _FILES.get(reply.file, reply.stamp)
            if whole is not None:
                body = whole[reply.offset : reply.offset + reply.length]
            else:
                try:
                    handle = open(reply.file, "rb")  # noqa: SIM115 (closed when the pump ends)
                    handle.seek(reply.offset)
                except OSError as exc:
                    denied = isinstance(exc, PermissionError)
                    reply = _page(403 if denied else 404, "forbidden" if denied else "not found")
                    body = reply.body
        if hub.settings.data_events:
            shown = f"{method.decode('ascii', 'replace')} {target.decode('ascii', 'backslashreplace')} {reply.status}"
            hub.emit("data", conn=self.conn, peer=self.peer, size=reply.length or len(body), detail=shown)
        head = [b"HTTP/1.1 %d %s\r\n" % (reply.status, _REASONS.get(reply.status, b""))]
        head += [name + b": " + value + b"\r\n" for name, value in reply.headers]
        head.append(b"date: " + _CLOCK.now() + b"\r\nserver: " + SERVER + (b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n"))
        no_body = method == b"HEAD" or reply.status == 304
        if handle is not None and not no_body:
            self.send(b"".join(head))
            self.pump = (handle, reply.length)
            self.pump_more(keep_alive)
            return
        if handle is not None:
            handle.close()
        if not no_body:
            head.append(body)
        self.send(b"".join(head))
        if not keep_alive:
            self.queue.clear()
            self.drop("response sent with connection: close")

    def pump_more(self, keep_alive: bool = True) -> None:
        assert self.pump is not None
        handle, remaining = self.pump
        transport = self.transport
        while remaining and transport.get_write_buffer_size() < HIGH_WATER and not transport.is_closing():
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:  # the file shrank after its length was promised: the client must not take it as whole
                handle.close()
                self.pump = None
                self.closing_reason = "file shrank while being sent"
                transport.abort()
                return
            remaining -= len(chunk)
            self.send(chunk)
        if remaining and not transport.is_closing():
            self.pump = (handle, remaining)
            self.keep_after_pump = keep_alive
            return
        handle.close()
        self.pump = None
        if not keep_alive:
            self.queue.clear()
            self.drop("response sent with connection: close")
        elif not transport.is_closing():
            self.answer_queued()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.pump is not None:
            self.pump_more(self.keep_after_pump)

    def stop(self) -> None:
        if self.pump is None and self.request_since is None and not self.queue:
            self.drop("server stopping (idle keep-alive)")

    def check_deadline(self, now: float) -> None:
        if self.request_since is not None and self.pump is None and now - self.request_since > self.hub.settings.request_timeout:
            self.refusal = (408, f"request not complete after {self.hub.settings.request_timeout:g}s")
            self.answer_queued()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pump is not None:
            self.pump[0].close()
            self.pump = None
        super().connection_lost(exc)

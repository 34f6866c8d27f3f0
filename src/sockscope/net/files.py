"""The file side of `serve --mode http`: the answer to one request, built without touching a socket.

Files are opened through the root jail (`jail.py`) and the answer is built from the descriptor that
was opened and checked (fstat), never from a path checked earlier, so swapping a file for a link
between two requests changes nothing.
"""

from __future__ import annotations

import errno
import html
import mimetypes
import os
import stat
import time
import urllib.parse
from email.utils import formatdate, parsedate_to_datetime

from ..records import NamedTuple
from .hub import printable_text
from .jail import Root

HUGE = 10**18  # stands for any number too long to be a byte position of a real file


class Reply(NamedTuple):
    """What to answer: status, headers, and a body given as bytes or as a span of an open file.

    `fd` belongs to whoever takes the reply: it closes it when the span is sent (or not wanted).
    `key` is (device, inode, mtime_ns, size) from fstat of that descriptor.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    fd: int | None = None
    offset: int = 0
    length: int = 0
    key: tuple[int, int, int, int] | None = None


def page(status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    """Give a small HTML page telling a status."""
    title = f"{status} {html.escape(text)}"
    body = f"<!doctype html>\n<title>{title}</title>\n<h1>{title}</h1>\n".encode()
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


def components(path: str) -> list[str] | None:
    """Give the components of a decoded URL path with `.` and `..` resolved, or None when `..` climbs above `/`."""
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
    return parts


def location(parts: list[str], query: bytes) -> bytes:
    """Give the Location of a directory: one leading slash, every component percent-encoded, so it never names another host."""
    path = "/" + "".join(urllib.parse.quote(os.fsencode(part), safe="") + "/" for part in parts)
    if query:
        path += "?" + urllib.parse.quote(query, safe="/?&=+;:,@!$'()*~%-._")
    return path.encode("ascii")


def _number(text: str) -> int | None:
    # int() would also take '²', '٣' and '1_0', and refuses more than 4,300 digits: ASCII digits only, bounded
    if not text or not text.isascii() or not text.isdigit():
        return None
    return HUGE if len(text) > 18 else int(text)


def byte_range(spec: bytes, size: int) -> tuple[int, int] | bool | None:
    """Give (first, last) of a single `bytes=` range; None to ignore the header; False for a 416.

    Other units and several ranges are ignored (the whole file is sent, RFC 9110 14.2 allows it);
    a `bytes=` range that is malformed or unsatisfiable is a 416, as nginx answers.
    """
    unit, _eq, ranges = spec.decode("latin-1").partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in ranges:
        return None
    first_text, dash, last_text = ranges.strip().partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash:
        return False
    if not first_text:  # the last N bytes
        count = _number(last_text)
        if not count or not size:
            return False
        return max(0, size - count), size - 1
    first = _number(first_text)
    last = _number(last_text) if last_text else size - 1
    if first is None or last is None or last < first or first >= size:
        return False
    return first, min(last, size - 1)


def not_modified(headers: dict[bytes, bytes], mtime: int, etag: bytes) -> bool:
    """Tell whether a conditional GET may be answered 304 (If-None-Match first, as RFC 9110 13.2.2 orders)."""
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


def range_still_valid(if_range: bytes, mtime: int, now: float) -> bool:
    """Tell whether If-Range lets a range be sent (RFC 9110 13.1.5: strong comparison only).

    Our entity tags are weak (mtime and size say little about content changed within one clock
    tick), so an entity tag never matches. A date matches when it is exactly our Last-Modified
    and that is at least a second in the past, which makes it a strong validator (8.8.2.2).
    """
    value = if_range.strip()
    if value.startswith((b'"', b"W/")):
        return False
    return value == http_date(mtime) and now - mtime >= 1


def _content_type(name: str) -> bytes:
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    return kind.encode()


def _shown(name: str) -> str:
    """Give a file name as listing text: control characters and bytes that are not UTF-8 escaped as in the log, then HTML-escaped.

    A name may hold anything but '/' and NUL; shown raw, `curl URL` would put its escape
    sequences on the reader's terminal, and its undecodable bytes would break the page's UTF-8.
    """
    return html.escape(printable_text(name))


def _entry(root: Root, parts: list[str], directory: int, name: str) -> str:
    """Give one row of a listing; a link that leads outside the root (or nowhere) shows no size or date."""
    href_name = urllib.parse.quote(os.fsencode(name))
    try:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return ""
    if stat.S_ISLNK(info.st_mode):
        try:
            fd = root.open([*parts, name], os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return f'<tr><td><a href="{html.escape(href_name)}">{_shown(name)}</a></td><td></td><td></td></tr>'
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
    is_dir = stat.S_ISDIR(info.st_mode)
    label = name + ("/" if is_dir else "")
    href = href_name + ("/" if is_dir else "")
    size = "" if is_dir else str(info.st_size)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.st_mtime))
    return f'<tr><td><a href="{html.escape(href)}">{_shown(label)}</a></td><td>{size}</td><td>{when}</td></tr>'


def listing(root: Root, parts: list[str], directory: int) -> Reply:
    """Give the HTML index of an open directory."""
    try:
        names = sorted(os.listdir(directory), key=lambda n: (n.lower(), n))
    except OSError as exc:
        return page(403, f"cannot list this directory: {exc.strerror}")
    shown = _shown("/" + "".join(part + "/" for part in parts))
    rows = ['<tr><td><a href="../">../</a></td><td></td><td></td></tr>'] if parts else []
    rows += [row for name in names if (row := _entry(root, parts, directory, name))]
    body = (
        f"<!doctype html>\n<meta charset=utf-8>\n<title>Index of {shown}</title>\n<h1>Index of {shown}</h1>\n"
        "<table>\n<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n" + "\n".join(rows) + "\n</table>\n"
    ).encode("utf-8", "surrogateescape")
    return Reply(200, [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())], body)


def _opened(root: Root, parts: list[str]) -> tuple[int, os.stat_result] | Reply:
    try:
        fd = root.open(parts)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return page(403, "forbidden")
        return page(404, "not found")  # missing, outside the root, a loop: all the same to the client
    try:
        return fd, os.fstat(fd)
    except OSError:
        os.close(fd)
        return page(404, "not found")


def answer(root: Root, method: bytes, target: bytes, headers: dict[bytes, bytes]) -> Reply:
    """Give the reply to one request for a file under `root` (headers keyed in lower case)."""
    if method not in (b"GET", b"HEAD"):
        return page(405, "method not allowed", [(b"allow", b"GET, HEAD")])
    path = request_path(target)
    if path is None:
        return page(400, "bad request target")
    parts = components(path)
    if parts is None:
        return page(404, "not found")
    found = _opened(root, parts)
    if isinstance(found, Reply):
        return found
    fd, info = found
    as_directory = path.endswith(("/", "/."))
    if stat.S_ISDIR(info.st_mode):
        if not path.endswith("/"):
            os.close(fd)
            return page(301, "moved permanently", [(b"location", location(parts, target.partition(b"?")[2]))])
        index = _opened(root, [*parts, "index.html"])
        if isinstance(index, Reply) or not stat.S_ISREG(index[1].st_mode):
            if not isinstance(index, Reply):
                os.close(index[0])
            try:
                return listing(root, parts, fd)
            finally:
                os.close(fd)
        os.close(fd)
        fd, info = index
        parts, as_directory = [*parts, "index.html"], False
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return page(403, "not a regular file")
    if as_directory:  # a file is not a directory (ENOTDIR)
        os.close(fd)
        return page(404, "not found")
    return _file(fd, info, parts[-1] if parts else "", headers)


_HEADS: dict[tuple[int, int, int, int, str], tuple[list[tuple[bytes, bytes]], int, bytes]] = {}


def _validators(info: os.stat_result, name: str) -> tuple[list[tuple[bytes, bytes]], int, bytes]:
    """Give the headers every answer about this version of a file carries, its mtime and ETag (remembered: formatting dates is slow)."""
    key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size, name)
    found = _HEADS.get(key)
    if found is None:
        if len(_HEADS) >= 4096:
            _HEADS.clear()
        mtime = int(info.st_mtime)
        etag = f'W/"{info.st_mtime_ns:x}-{info.st_size:x}"'.encode()
        headers = [(b"content-type", _content_type(name)), (b"last-modified", http_date(mtime)), (b"etag", etag), (b"accept-ranges", b"bytes")]
        found = _HEADS[key] = (headers, mtime, etag)
    return found


def _file(fd: int, info: os.stat_result, name: str, headers: dict[bytes, bytes]) -> Reply:
    common, mtime, etag = _validators(info, name)
    if (b"if-none-match" in headers or b"if-modified-since" in headers) and not_modified(headers, mtime, etag):
        os.close(fd)
        return Reply(304, common)
    size = info.st_size
    key = (info.st_dev, info.st_ino, info.st_mtime_ns, size)
    if b"range" not in headers:
        return Reply(200, [*common, (b"content-length", str(size).encode())], fd=fd, offset=0, length=size, key=key)
    span = byte_range(headers[b"range"], size)
    if span is not None and b"if-range" in headers and not range_still_valid(headers[b"if-range"], mtime, time.time()):
        span = None  # the client's copy may be outdated: it gets the whole file
    if span is False:
        os.close(fd)
        return page(416, "range not satisfiable", [(b"content-range", f"bytes */{size}".encode())])
    if isinstance(span, tuple):
        first, last = span
        span_headers = [(b"content-range", f"bytes {first}-{last}/{size}".encode()), (b"content-length", str(last - first + 1).encode())]
        return Reply(206, [*common, *span_headers], fd=fd, offset=first, length=last - first + 1, key=key)
    return Reply(200, [*common, (b"content-length", str(size).encode())], fd=fd, offset=0, length=size, key=key)

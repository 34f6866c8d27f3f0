"""`serve --mode http`: nothing outside --root is ever served, whatever links are swapped under it, with openat2 and with the walk."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import Served, port, serving
from sockscope.net import jail

SECRET = b"outside the root: must never be served"
INSIDE = b"inside the root"


def _has_openat2() -> bool:
    probe = jail.Root("/")
    probe.close()
    return probe.kernel


@pytest.fixture(params=["openat2", "walk"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of opening beneath the root; the walk is forced by the environment of the server."""
    if request.param == "walk":
        monkeypatch.setenv("SOCKSCOPE_NO_OPENAT2", "1")
    else:
        monkeypatch.delenv("SOCKSCOPE_NO_OPENAT2", raising=False)
        if not _has_openat2():
            pytest.skip("this kernel has no openat2 (or a seccomp filter refuses it)")
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "www", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (root / "inside.txt").write_bytes(INSIDE)
    (root / "sub").mkdir()
    (root / "sub" / "deep.txt").write_bytes(b"deep")
    (root / "sub" / "up").symlink_to("../inside.txt")  # a relative link that stays inside
    (root / "abs-inside").symlink_to(root / "inside.txt")  # absolute: refused even though it points inside
    (root / "rel-out").symlink_to("../outside/secret")
    (root / "abs-out").symlink_to(outside / "secret")
    (root / "dir-out").symlink_to(outside)
    (root / "loop").symlink_to("loop")
    (root / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(root / "fifo")
    return root, outside


def _open(root: Path, kernel: bool, path: str) -> bytes | None:
    root_dir = jail.Root(str(root), kernel=kernel)
    try:
        parts = path.strip("/").split("/")  # raw: `..` reaches the jail itself
        try:
            fd = root_dir.open(parts)
        except OSError:
            return None
        try:
            return os.read(fd, 1000)
        finally:
            os.close(fd)
    finally:
        root_dir.close()


@pytest.mark.parametrize("kernel", [True, False], ids=["openat2", "walk"])
def test_links_inside_work_and_links_outside_do_not(tree: tuple[Path, Path], kernel: bool) -> None:
    root, _outside = tree
    if kernel and not _has_openat2():
        pytest.skip("no openat2 here")
    assert _open(root, kernel, "/inside.txt") == INSIDE
    assert _open(root, kernel, "/sub/up") == INSIDE
    assert _open(root, kernel, "/sub/deep.txt") == b"deep"
    for escape in ("/rel-out", "/abs-out", "/dir-out/secret", "/passwd", "/loop", "/abs-inside", "/sub/../../outside/secret"):
        assert _open(root, kernel, escape) is None, escape


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


@pytest.fixture
def served(tree: tuple[Path, Path], way: str) -> Iterator[tuple[Served, int, Path]]:
    p = port()
    with serving(str(p), "--mode", "http", "--root", str(tree[0]), "--quiet") as server:
        yield server, p, tree[0]


def test_served_links_and_listing(served: tuple[Served, int, Path]) -> None:
    _server, p, _root = served
    conn = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
    assert _get(conn, "/sub/up") == (200, INSIDE)
    for escape in ("/rel-out", "/abs-out", "/dir-out/secret", "/passwd", "/loop"):
        assert _get(conn, escape)[0] == 404, escape
    assert _get(conn, "/fifo")[0] == 403  # opened without blocking, and refused as not a regular file
    status, body = _get(conn, "/")
    rows = {line.split(b'">')[1].split(b"<")[0]: line for line in body.split(b"\n") if line.startswith(b"<tr><td><a")}
    assert rows[b"abs-out"].endswith(b"<td></td><td></td></tr>")  # a link out of the root shows no size or date
    assert rows[b"passwd"].endswith(b"<td></td><td></td></tr>")
    assert status == 200 and b"sub/" in rows and b"<td>15</td>" in rows[b"inside.txt"]
    conn.close()


def test_swapping_a_file_for_a_link_never_serves_what_the_link_points_to(served: tuple[Served, int, Path]) -> None:
    _server, p, root = served
    target = root / "x"
    link = root / "x.link"
    conn = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
    for i in range(200):  # the same name within one second: nothing remembered about it may leak
        target.write_bytes(INSIDE)
        assert _get(conn, "/x") == (200, INSIDE)
        link.symlink_to("../outside/secret" if i % 2 else "/etc/passwd")
        link.replace(target)
        status, body = _get(conn, "/x")
        assert status == 404 and SECRET not in body and b"root:" not in body
        target.unlink()
    conn.close()


def test_a_link_flipped_while_requested_never_escapes(served: tuple[Served, int, Path]) -> None:
    _server, p, root = served
    (root / "d").mkdir()
    (root / "d" / "secret").write_bytes(INSIDE)  # the same name inside and outside the root
    stop = threading.Event()
    flips = [0]

    def flip() -> None:
        targets = [("f", "inside.txt"), ("f", "../outside/secret"), ("f", "/etc/passwd"), ("dd", "d"), ("dd", "../outside")]
        while not stop.is_set() and flips[0] < 200_000:
            name, points_to = targets[flips[0] % len(targets)]
            temporary = root / f".{name}.new"
            temporary.symlink_to(points_to)
            temporary.replace(root / name)
            flips[0] += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    seen: dict[int, int] = {}
    conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=10) for _ in range(2)]
    try:
        i, started = 0, time.monotonic()
        while (i < 300 or flips[0] < 200) and time.monotonic() - started < 8:  # at least 300 requests and 200 flips
            i += 1
            for conn, path in zip(conns, ("/f", "/dd/secret"), strict=True):
                status, body = _get(conn, path)
                assert SECRET not in body and b"root:" not in body, f"escaped after {i} requests"
                assert status in (200, 404)
                seen[status] = seen.get(status, 0) + 1
    finally:
        stop.set()
        flipper.join()
        for conn in conns:
            conn.close()
    print(f"{flips[0]} flips, answers {seen}")
    assert seen.get(200, 0) > 0 and flips[0] >= 200  # the race was real: the link moved and was followed when inside

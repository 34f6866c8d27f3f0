"""`serve --mode http` facing file names chosen to attack whoever reads the listing in a terminal."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

from serving import port, serving


def test_a_listing_shows_control_characters_and_bytes_that_are_not_utf8_escaped(tmp_path: Path) -> None:
    name = b"title\x1b]0;pwned\x07\xff\x9b.txt"
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as handle:
        handle.write(b"inside\n")
    number = port()
    with serving(f"127.0.0.1:{number}", "--mode", "http", "--root", str(tmp_path), "-q"):
        conn = http.client.HTTPConnection("127.0.0.1", number, timeout=10)
        conn.request("GET", "/")
        body = conn.getresponse().read()
        text = body.decode("utf-8")  # the page says charset=utf-8: it must be
        assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text), text
        assert "title\\x1b]0;pwned\\x07\\xff\\x9b.txt" in text
        conn.request("GET", "/title%1B%5D0%3Bpwned%07%FF%9B.txt")  # the link still leads to the file
        assert conn.getresponse().read() == b"inside\n"
        conn.close()


def test_a_root_removed_and_made_again_is_served_anew(tmp_path: Path) -> None:
    # static site generators do `rm -rf site && mkdir site` on each build
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.txt").write_bytes(b"first build\n")
    number = port()
    with serving(f"127.0.0.1:{number}", "--mode", "http", "--root", str(root), "-q"):
        conn = http.client.HTTPConnection("127.0.0.1", number, timeout=10)
        conn.request("GET", "/index.txt")
        assert conn.getresponse().read() == b"first build\n"
        (root / "index.txt").unlink()
        root.rmdir()
        root.mkdir()
        (root / "index.txt").write_bytes(b"second build\n")
        conn.request("GET", "/index.txt")
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, b"second build\n")
        conn.close()


def test_a_file_asked_for_as_a_directory_is_not_found(tmp_path: Path) -> None:
    # as open("a.txt/") fails with ENOTDIR; served, its relative links would resolve under a.txt/
    (tmp_path / "a.txt").write_bytes(b"inside\n")
    number = port()
    with serving(f"127.0.0.1:{number}", "--mode", "http", "--root", str(tmp_path), "-q"):
        conn = http.client.HTTPConnection("127.0.0.1", number, timeout=10)
        for target, status in (("/a.txt", 200), ("/a.txt/", 404), ("/a.txt/.", 404)):
            conn.request("GET", target)
            answer = conn.getresponse()
            answer.read()
            assert answer.status == status, target
        conn.close()

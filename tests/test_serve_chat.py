"""`serve --mode chat` under bad clients: receivers that never read, lines too long in one read."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import have
from serving import port, serving


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def test_receivers_that_never_read_are_dropped_while_a_reader_gets_every_line(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "chat.sock")
    lines = 25000
    with serving(f"unix:{path}", "--mode", "chat", "-q") as served:
        silent = []
        for _ in range(20):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            silent.append(sock)
        reader, talker = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
        reader.connect(path)
        talker.connect(path)
        for _ in range(22):
            served.wait_for("connect")
        heard: list[bytes] = []

        def read() -> None:
            reader.settimeout(20)
            chunks, tail, last = [], b"", b"] %05d" % (lines - 1)
            while last not in tail:
                chunk = reader.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                tail = tail[-200:] + chunk[-200:]
            heard.append(b"".join(chunks))

        thread = threading.Thread(target=read)
        thread.start()
        for number in range(lines):
            talker.sendall(b"%05d " % number + b"x" * 94 + b"\n")
        thread.join(30)
        said = [line.split(b"] ", 1)[1][:5] for line in heard[0].split(b"\n") if line.startswith(b"[")]
        assert said == [b"%05d" % n for n in range(lines)], "the reader gets every line, in order"
        dropped = [served.wait_for("close", timeout=10) for _ in silent]
        assert all("too slow" in event["detail"] for event in dropped)
        assert _rss_kib(served.process.pid) < 150 * 1024
        for sock in (*silent, reader, talker):
            sock.close()


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_max_line_holds_for_a_long_line_that_arrives_in_one_read() -> None:
    p = port()
    with serving(str(p), "--mode", "chat", "--max-line", "100") as served, socket.create_connection(("127.0.0.1", p)) as listener:
        served.wait_for("connect")
        listener.settimeout(0.5)
        long_line = b"y" * 5000 + b"\n"
        sent = subprocess.run(["nc", "-N", "127.0.0.1", str(p)], input=b"short\n" + long_line, capture_output=True, timeout=10, check=False)
        assert b"line too long" in sent.stdout
        assert "line longer than 100" in served.wait_for("close", detail="line longer than 100 bytes")["detail"]
        time.sleep(0.3)
        heard = b""
        try:
            while True:
                chunk = listener.recv(65536)
                if not chunk:
                    break
                heard += chunk
        except TimeoutError:
            pass
        assert b"y" * 101 not in heard, "the long line is not relayed"


def test_datagram_chat_sends_one_datagram_per_datagram_and_forgets_a_peer_that_never_reads(tmp_path: object) -> None:
    directory = str(tmp_path)
    path = os.path.join(directory, "chat.sock")
    with serving(f"unix-dgram:{path}", "--mode", "chat", "-q") as served:
        peers = {}
        for name in ("silent", "reader", "talker"):
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            peer.bind(os.path.join(directory, name))
            peer.sendto(b"hello\n", path)
            served.wait_for("connect")
            peers[name] = peer
        reader = peers["reader"]
        reader.settimeout(5)
        while b"hello" in (got := reader.recv(70000)) and b"talker" not in got:
            pass  # the silent peer's greeting, then the talker's
        peers["talker"].sendto(b"one\ntwo\n", path)
        both = reader.recv(70000)
        assert both.startswith(b"[" + os.path.join(directory, "talker").encode()) and b"] one\n[" in both and both.endswith(b"] two\n")
        for number in range(200):
            peers["talker"].sendto(b"line %d\n" % number, path)
            if number % 8 == 0:
                with contextlib.suppress(TimeoutError):
                    reader.settimeout(0.01)
                    while reader.recv(70000):
                        pass
        gone = served.wait_for("close", timeout=10)
        assert "/silent pid" in gone["peer"] and "too slow" in gone["detail"]
        for peer in peers.values():
            peer.close()

"""`serve --mode chat` against a flood of empty lines: each is a message of its own in the room."""

from __future__ import annotations

import contextlib
import re
import socket
import time

from serving import port, serving


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def test_a_flood_of_empty_lines_while_others_never_read_keeps_memory_bounded() -> None:
    number = port()
    with serving(f"127.0.0.1:{number}", "--mode", "chat", "-q") as served:
        silent = [socket.create_connection(("127.0.0.1", number)) for _ in range(30)]
        flooders = [socket.create_connection(("127.0.0.1", number)) for _ in range(4)]
        reader = socket.create_connection(("127.0.0.1", number))
        for sock in (*flooders, reader):
            sock.setblocking(False)
        flood = b"\n" * 65536
        peak = sent = heard = 0
        end = time.monotonic() + 4
        while time.monotonic() < end:
            for sock in flooders:
                with contextlib.suppress(BlockingIOError, ConnectionError):
                    sent += sock.send(flood)
            for sock in (*flooders, reader):
                try:
                    while chunk := sock.recv(1 << 20):
                        heard += len(chunk) if sock is reader else 0
                except (BlockingIOError, ConnectionError):
                    pass
            peak = max(peak, _rss_kib(served.process.pid))
        for sock in (*silent, *flooders, reader):
            sock.close()
        assert heard > 1 << 20, "a reader that reads is still served"
        assert peak < 200 * 1024, f"{sent >> 20} MiB of empty lines made the server {peak >> 10} MiB large"


def test_lines_sent_just_before_the_end_still_reach_a_reader() -> None:
    number = port()
    lines = 100_000
    with serving(f"127.0.0.1:{number}", "--mode", "chat", "-q") as served:
        reader = socket.create_connection(("127.0.0.1", number))
        talker = socket.create_connection(("127.0.0.1", number))
        served.wait_for("connect")
        served.wait_for("connect")
        talker.sendall(b"".join(b"%d\n" % n for n in range(lines)))
        talker.shutdown(socket.SHUT_WR)
        reader.settimeout(10)
        got = b""
        while b"] %d\n" % (lines - 1) not in got[-64:]:
            chunk = reader.recv(1 << 20)
            assert chunk, "the reader was closed before it got every line"
            got += chunk
        said = [line.split(b"] ", 1)[1] for line in got.split(b"\n") if line.startswith(b"[")]
        assert said == [b"%d" % n for n in range(lines)]
        assert served.wait_for("close", conn=2)["detail"] == "client closed"
        reader.close()
        talker.close()


def test_udp_chat_answers_a_datagram_with_at_most_one_datagram_per_peer() -> None:
    number = port()
    with serving(f"udp://127.0.0.1:{number}", "--mode", "chat", "-q") as served:
        talker, listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        for sock in (listener, talker):
            sock.bind(("127.0.0.1", 0))
            sock.sendto(b"hi\n", ("127.0.0.1", number))
            served.wait_for("connect")
        listener.settimeout(5)
        assert b"] hi\n" in listener.recv(70000)  # the talker's greeting
        talker.sendto(b"\n" * 65507, ("127.0.0.1", number))  # 65,507 lines, each to be sent after the talker's name
        listener.settimeout(1)
        received = []
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(listener.recv(70000))
        assert len(received) == 1 and len(received[0]) <= 65507, f"{len(received)} datagrams, {sum(map(len, received))} bytes"
        assert received[0].startswith(b"[127.0.0.1:") and received[0].endswith(b"] \n")
        talker.close()
        listener.close()


def test_a_flooder_does_not_keep_other_talkers_out_of_the_chat() -> None:
    number = port()
    with serving(f"127.0.0.1:{number}", "--mode", "chat", "-q") as served:
        flooders = [socket.create_connection(("127.0.0.1", number)) for _ in range(3)]
        talker = socket.create_connection(("127.0.0.1", number))
        reader = socket.create_connection(("127.0.0.1", number))
        for _ in range(5):
            served.wait_for("connect")
        for sock in (*flooders, reader, talker):
            sock.setblocking(False)
        talker_name = talker.getsockname()[1]
        said = 0
        heard: set[bytes] = set()
        tail = b""
        end = time.monotonic() + 4
        next_line = time.monotonic()
        while time.monotonic() < end:
            for sock in flooders:
                with contextlib.suppress(BlockingIOError, ConnectionError):
                    sock.send(b"\n" * 65536)
            if time.monotonic() >= next_line:
                with contextlib.suppress(BlockingIOError):
                    talker.send(b"talking %d\n" % said)
                    said += 1
                next_line += 0.1
            for sock in (*flooders, talker, reader):
                with contextlib.suppress(BlockingIOError, ConnectionError):
                    while chunk := sock.recv(1 << 20):
                        if sock is reader:
                            text = tail + chunk
                            heard.update(re.findall(b":%d] talking (\\d+)\n" % talker_name, text))
                            tail = text[-64:]
        for sock in (*flooders, talker, reader):
            sock.close()
        assert said > 20 and len(heard) >= said - 10, f"the reader heard {len(heard)} of the {said} lines the talker said"

"""UDP serving against a flood of sources that each send one datagram (spoofed, or many sockets)."""

from __future__ import annotations

import socket
import time

from sockscope.address import Address
from sockscope.net.datagram import DatagramServer
from sockscope.net.hub import Hub, Settings


def test_each_new_source_costs_the_same_however_many_peers_are_known() -> None:
    events: list[str] = []
    hub = Hub(Settings(Address("udp", "127.0.0.1", 1), mode="discard", max_conns=8192, data_events=False), lambda event: events.append(event.kind))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        server = DatagramServer(hub, sock)
        start = time.monotonic()
        for number in range(30_000):
            server.datagram(b"x", ("127.0.0.2", 1024 + number), None, False)
        took = time.monotonic() - start
    assert len(server.peers) == 8192
    assert events.count("close") == 30_000 - 8192  # the least recently heard made room
    # a scan of every known peer for each new one took 6 s here; a constant cost takes 0.15 s
    assert took < 2.0, f"30,000 new sources took {took:.1f}s"


def test_an_empty_seqpacket_message_is_not_taken_for_the_end(tmp_path: object) -> None:
    import os

    from serving import serving

    path = os.path.join(str(tmp_path), "p.sock")
    with serving(f"seqpacket:{path}", "--mode", "echo") as served:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as client:
            client.connect(path)
            client.settimeout(5)
            client.send(b"")
            client.send(b"after")
            answers = [client.recv(100), client.recv(100)]
        assert answers == [b"", b"after"]
        assert served.wait_for("close")["received"] == 5


def test_connect_over_seqpacket_goes_on_after_an_empty_message(tmp_path: object) -> None:
    import os
    import subprocess
    import sys
    import threading

    path = os.path.join(str(tmp_path), "q.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
        server.bind(path)
        server.listen()

        def peer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.send(b"")
                time.sleep(0.2)
                conn.send(b"after\n")

        thread = threading.Thread(target=peer)
        thread.start()
        done = subprocess.run(
            [sys.executable, "-m", "sockscope", "connect", f"seqpacket:{path}"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False
        )
        thread.join(5)
    assert (done.returncode, done.stdout) == (0, b"after\n"), done.stderr

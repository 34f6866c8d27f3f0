"""`sockscope events` names the client of connections that live under a millisecond (eBPF, as root)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import IS_ROOT
from sockscope.errors import SourceUnavailable
from sockscope.live import bpf
from sockscope.model import Endpoint, Family, NetId, Socket, State
from test_events import port_filter, watching

needs_root_bpf = pytest.mark.skipif(not IS_ROOT, reason="needs root (loading an eBPF program takes CAP_BPF and CAP_PERFMON)")

# connect, send a few bytes, close: each connection lives well under a millisecond on loopback;
# the client prints its pid, then the median life it measured (ns), then waits for a line on stdin
CLIENT = """
import os, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
print(os.getpid(), flush=True)
lives = []
for _ in range(count):
    start = time.monotonic_ns()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"hey!!")
    s.close()
    lives.append(time.monotonic_ns() - start)
print(sorted(lives)[len(lives) // 2], flush=True)
sys.stdin.readline()
"""

FORMAT = """name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
"""


@contextmanager
def sink() -> Iterator[int]:
    """A listener that takes every connection and reads it to the end; gives its port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _peer = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                while conn.recv(4096):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def run_client(port: int, count: int) -> tuple[subprocess.Popen[str], int, int]:
    """Start the client, let it make `count` connections; give it (waiting on stdin), its pid and the median life in ns."""
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    pid = int(client.stdout.readline())
    median = int(client.stdout.readline())
    return client, pid, median


def closes(out: str, port: int) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in events if e["kind"] == "close" and e["direction"] == "out" and e["peer"]["port"] == port]


def finish(events: subprocess.Popen[str]) -> tuple[str, str]:
    """Give what the watcher wrote once it stopped by itself (at --duration: a close held for its other end is written then)."""
    return events.communicate(timeout=30)


@needs_root_bpf
def test_every_close_of_200_short_connections_names_the_client() -> None:
    with sink() as port, watching("--jsonl", "-t", "--interval", "30", "-d", "4", *port_filter(port)) as events:
        client, pid, median = run_client(port, 200)
        with open(f"/proc/{pid}/comm") as handle:
            name = handle.read().strip()
        out, err = finish(events)
        client.communicate("\n", timeout=10)
    assert median < 1_000_000, f"half the connections lived over {median / 1e6:.1f} ms"
    found = closes(out, port)
    assert len(found) == 200, err
    named = [e for e in found if e["process"] and e["process"]["pid"] == pid and e["process"]["how"] == "ebpf"]
    assert len(named) == 200, [e for e in found if e not in named][:3]
    assert all(e["process"]["name"] == name and "exited" not in e["reason"] for e in named)
    assert all(e["tx_bytes"] == 5 and e["rx_bytes"] == 0 for e in found)
    assert "may go unnamed" not in err


@needs_root_bpf
def test_with_no_bpf_they_are_unnamed_and_say_why() -> None:
    with sink() as port, watching("--jsonl", "-t", "--no-bpf", "--interval", "30", "-d", "4", *port_filter(port)) as events:
        client, _pid, _median = run_client(port, 50)
        out, err = finish(events)
        client.communicate("\n", timeout=10)
    found = closes(out, port)
    assert len(found) == 50, err
    assert all(e["process"] is None and "before a dump saw it open" in e["process_unknown"] for e in found)
    assert "may go unnamed" not in err  # asked for: no note


@needs_root_bpf
def test_a_client_that_exited_is_named_and_said_to_have_exited() -> None:
    with sink() as port, watching("--jsonl", "-t", "--interval", "30", "-d", "4", *port_filter(port)) as events:
        os.kill(events.pid, signal.SIGSTOP)  # the closes are read only after the client is gone
        try:
            client, pid, _median = run_client(port, 5)
            client.communicate("\n", timeout=10)
            time.sleep(0.2)
        finally:
            os.kill(events.pid, signal.SIGCONT)
        out, _err = finish(events)
    found = closes(out, port)
    assert len(found) == 5
    assert all(e["process"]["pid"] == pid and e["process"]["how"] == "ebpf" and "exited" in e["reason"] for e in found)


@needs_root_bpf
def test_closes_nobody_asks_for_stay_bounded() -> None:
    with bpf.Connectors(closed_entries=64) as connectors, sink() as port:
        client, _pid, _median = run_client(port, 200)
        client.communicate("\n", timeout=10)
        time.sleep(0.2)
        waiting = connectors.waiting()
        assert 0 < waiting <= 64
        own = socket.create_connection(("127.0.0.1", port))
        ends = own.getsockname(), own.getpeername()
        own.close()
        time.sleep(0.2)
        sock = Socket(NetId.TCP, Family.INET, State.UNCONN, 0, 0, Endpoint(*ends[0]), Endpoint(*ends[1]), 0, None)
        told = connectors.take(sock)
        assert told is not None and told.pid == os.getpid()
        assert connectors.take(sock) is None  # taken once
    assert connectors.fds == []


def test_unprivileged_it_says_why_and_the_events_still_come() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    user = "65534" if IS_ROOT else None
    with watching("--jsonl", "-t", "--interval", "0.2", "-d", "3", *port_filter(port), user=user) as events:
        assert events.stderr is not None
        note = events.stderr.readline()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _peer = listener.accept()
        client.sendall(b"abc")
        accepted.recv(10)
        client.close()
        accepted.close()
        out, err = finish(events)
    listener.close()
    assert "may go unnamed" in note and ("root" in note or not IS_ROOT), note
    assert "Traceback" not in err
    assert [e for e in closes(out, port) if e["tx_bytes"] == 3]


def test_the_tracepoint_format_gives_the_offsets() -> None:
    fields = bpf.read_format(FORMAT, "2287\n")
    assert fields.event_id == 2287
    assert (fields.offsets["skaddr"], fields.offsets["newstate"], fields.offsets["saddr_v6"]) == (8, 20, 40)
    with pytest.raises(SourceUnavailable, match="saddr_v6"):
        bpf.read_format(FORMAT.replace("saddr_v6", "src6"), "2287")
    with pytest.raises(SourceUnavailable, match="no id"):
        bpf.read_format(FORMAT, "")


def test_the_key_of_an_ipv4_connection_holds_v4_mapped_addresses() -> None:
    sock = Socket(NetId.TCP, Family.INET, State.UNCONN, 0, 0, Endpoint("127.0.0.1", 40000), Endpoint("127.0.0.2", 80), 0, None)
    key = bpf.key_of(sock)
    assert key is not None
    assert key[:8] == (40000).to_bytes(2, sys.byteorder) + (80).to_bytes(2, sys.byteorder) + (2).to_bytes(2, sys.byteorder) + (6).to_bytes(2, sys.byteorder)
    assert key[8:24] == bytes(10) + b"\xff\xff\x7f\x00\x00\x01"
    six = sock._replace(family=Family.INET6, local=Endpoint("::1", 1), peer=Endpoint("fe80::1%lo", 2))
    assert bpf.key_of(six) is not None
    assert bpf.key_of(sock._replace(local=Endpoint("not an address", 1))) is None

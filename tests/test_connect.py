"""`sockscope connect` and `sockscope listen` against real peers: our server, nc, socat."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import have, sockscope, sockscope_bytes
from serving import port, serving
from sockscope.errors import ExitCode
from sockscope.net.stdio import CrLf, HexDump


def test_100_mib_through_connect_to_an_echo_server_keeps_its_sha256(tmp_path: object) -> None:
    data_path = os.path.join(str(tmp_path), "random.bin")
    with open(data_path, "wb") as handle:
        for _ in range(100):
            handle.write(os.urandom(1 << 20))
    with open(data_path, "rb") as handle:
        expected = hashlib.sha256(handle.read()).hexdigest()
    p = port()
    with serving(str(p), "--mode", "echo", "-q"), open(data_path, "rb") as stdin:
        proc = subprocess.Popen([sys.executable, "-m", "sockscope", "connect", f"127.0.0.1:{p}"], stdin=stdin, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        digest = hashlib.sha256()
        size = 0
        while chunk := proc.stdout.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        assert proc.wait(60) == 0
        proc.stdout.close()
    assert size == 100 << 20 and digest.hexdigest() == expected


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_input_eof_half_closes_and_reading_goes_on_until_the_peer_closes() -> None:
    p = port()
    # the peer answers only after it has seen our EOF: proof that we shut down writing and kept reading
    peer = subprocess.Popen(["socat", f"TCP-LISTEN:{p},bind=127.0.0.1,reuseaddr", "SYSTEM:'cat >/dev/null; echo after-eof'"])
    try:
        _wait_port(p)
        result = sockscope_bytes("connect", f"127.0.0.1:{p}", data=b"some input\n", timeout=20)
        assert result.returncode == 0 and result.stdout == b"after-eof\n"
    finally:
        peer.kill()
        peer.wait()


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_no_shutdown_keeps_writing_open_and_q_quits() -> None:
    p = port()
    peer = subprocess.Popen(["socat", f"TCP-LISTEN:{p},bind=127.0.0.1,reuseaddr", "SYSTEM:'cat >/dev/null; echo after-eof'"])
    try:
        _wait_port(p)
        started = time.monotonic()
        result = sockscope_bytes("connect", f"127.0.0.1:{p}", "--no-shutdown", "-q", "0.5", data=b"x\n", timeout=20)
        assert result.returncode == 0 and result.stdout == b""  # the peer never saw EOF, so never answered
        assert 0.4 < time.monotonic() - started < 5
    finally:
        peer.kill()
        peer.wait()


def _wait_port(p: int, udp: bool = False) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        listing = subprocess.run(["ss", "-Hln" + ("u" if udp else "t"), f"sport = :{p}"], capture_output=True, text=True, check=False).stdout
        if listing.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {p}")


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_connect_talks_to_nc_listen() -> None:
    p = port()
    peer = subprocess.Popen(["nc", "-l", "127.0.0.1", str(p)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        _wait_port(p)
        result = sockscope_bytes("connect", f"127.0.0.1:{p}", data=b"to nc\n", timeout=20)
        assert result.returncode == 0
        assert peer.stdout is not None and peer.stdout.read() == b"to nc\n"
    finally:
        peer.kill()
        peer.wait()
        if peer.stdout:
            peer.stdout.close()


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_listen_takes_nc_and_k_takes_the_next() -> None:
    p = port()
    listener = subprocess.Popen([sys.executable, "-m", "sockscope", "listen", str(p), "-k", "--recv-only"], stdout=subprocess.PIPE)
    try:
        _wait_port(p)
        for text in (b"first client\n", b"second client\n"):
            subprocess.run(["nc", "-N", "127.0.0.1", str(p)], input=text, check=True, timeout=10)
        time.sleep(0.3)
    finally:
        listener.terminate()
        out = listener.communicate(timeout=10)[0]
    assert out == b"first client\nsecond client\n"


def test_listen_bridges_both_ways_and_ends_with_the_client() -> None:
    p = port()
    listener = subprocess.Popen([sys.executable, "-m", "sockscope", "listen", str(p)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _wait_port(p)
        with socket.create_connection(("127.0.0.1", p)) as client:
            assert listener.stdin is not None
            listener.stdin.write(b"from the listener\n")
            listener.stdin.flush()
            client.settimeout(5)
            assert client.recv(100) == b"from the listener\n"
            client.sendall(b"from the client\n")
        out, _ = listener.communicate(timeout=10)
        assert out == b"from the client\n" and listener.returncode == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()


def test_udp_connect_to_our_udp_echo() -> None:
    p = port()
    with serving(f"udp://127.0.0.1:{p}", "--mode", "echo"):
        result = sockscope_bytes("connect", "-u", f"127.0.0.1:{p}", "-q", "0.5", data=b"one datagram\n", timeout=20)
    assert result.returncode == 0 and result.stdout == b"one datagram\n"


def test_udp_to_a_closed_port_says_refused() -> None:
    result = sockscope_bytes("connect", "-u", f"127.0.0.1:{port()}", data=b"anyone?\n", timeout=20)
    assert result.returncode == ExitCode.NOTHING_FOUND and b"refused" in result.stderr


@pytest.mark.parametrize("kind", ["unix", "seqpacket", "unix-dgram"])
def test_unix_kinds(tmp_path: object, kind: str) -> None:
    path = os.path.join(str(tmp_path), "k.sock")
    with serving(f"{kind}:{path}", "--mode", "echo"):
        result = sockscope_bytes("connect", f"{kind}:{path}", "-q", "0.5", data=b"over unix\n", timeout=20)
    assert result.returncode == 0 and result.stdout == b"over unix\n", result.stderr


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_connect_to_a_socat_unix_listener(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "socat.sock")
    peer = subprocess.Popen(["socat", f"UNIX-LISTEN:{path}", "SYSTEM:'tr a-z A-Z'"])
    try:
        end = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < end:
            time.sleep(0.05)
        result = sockscope_bytes("connect", f"unix:{path}", data=b"shout\n", timeout=20)
        assert result.stdout == b"SHOUT\n"
    finally:
        peer.kill()
        peer.wait()


def test_zero_io_checks_ports_and_the_exit_status_tells() -> None:
    p = port()
    closed = port()
    with serving(str(p), "--mode", "echo") as served:
        good = sockscope("connect", "-z", "127.0.0.1", str(p))
        assert good.returncode == 0 and "open" in good.stdout
        mixed = sockscope("connect", "-z", f"127.0.0.1:{p}", str(closed))
        assert mixed.returncode == ExitCode.NOTHING_FOUND
        assert f"127.0.0.1:{p} open" in mixed.stdout and f"127.0.0.1:{closed} closed" in mixed.stdout
        time.sleep(0.2)
        assert not [e for e in served.events if e["event"] == "data"]  # zero I/O: nothing was sent


def test_refused_and_bad_targets_get_one_line() -> None:
    refused = sockscope("connect", f"127.0.0.1:{port()}")
    assert refused.returncode == ExitCode.NOTHING_FOUND and "refused" in refused.stderr
    for args in (["300.1.1.1:80"], ["localhost"], ["127.0.0.1:0"], ["-z", "127.0.0.1", "20-10"], ["127.0.0.1:80", "--send-only", "--recv-only"]):
        result = sockscope("connect", *args)
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = sockscope("connect", "unix:/nonexistent/sock")
    assert missing.returncode == ExitCode.NOTHING_FOUND and "no such socket" in missing.stderr


def test_listen_on_a_port_in_use_names_the_holder() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        result = sockscope("listen", str(holder.getsockname()[1]))
    assert result.returncode == ExitCode.ADDRESS_IN_USE and f"pid {os.getpid()}" in result.stderr


def test_send_only_and_recv_only() -> None:
    p = port()
    with serving(str(p), "--mode", "echo"):
        sent = sockscope_bytes("connect", f"127.0.0.1:{p}", "--send-only", data=b"ignored echo\n", timeout=20)
        assert sent.returncode == 0 and sent.stdout == b""
    with socket.socket() as server_sock:
        server_sock.bind(("127.0.0.1", 0))
        server_sock.listen()

        def speak() -> None:
            conn, _ = server_sock.accept()
            with conn:
                conn.sendall(b"only this\n")

        thread = threading.Thread(target=speak)
        thread.start()
        received = sockscope_bytes("connect", f"127.0.0.1:{server_sock.getsockname()[1]}", "--recv-only", data=b"never sent", timeout=20)
        thread.join(10)
    assert received.stdout == b"only this\n"


def test_hex_and_crlf() -> None:
    p = port()
    with serving(str(p), "--mode", "echo"):
        result = sockscope_bytes("connect", f"127.0.0.1:{p}", "--hex", "--crlf", data=b"ab\n", timeout=20)
    assert result.stdout.decode().splitlines() == [
        "> 00000000  61 62 0d 0a                                      |ab..|",
        "< 00000000  61 62 0d 0a                                      |ab..|",
    ]


def test_crlf_across_chunks_and_hexdump_offsets() -> None:
    convert = CrLf()
    assert convert(b"a\nb\r") + convert(b"\nc\n") == b"a\r\nb\r\nc\r\n"
    lines: list[bytes] = []
    dump = HexDump(lines.append)
    dump("<", bytes(range(20)))
    dump("<", b"x")
    text = b"".join(lines).decode().splitlines()
    assert text[0].startswith("< 00000000  00 01") and text[1].startswith("< 00000010  10 11") and text[2].startswith("< 00000014  78")

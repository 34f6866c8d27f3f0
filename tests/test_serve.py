"""`sockscope serve` with real peers (nc, socat, our own sockets): every mode and socket kind, limits, errors."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import IS_ROOT, have, sockscope, sockscope_bytes
from serving import port, serving
from sockscope.errors import ExitCode


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_echo_answers_nc_and_reports_its_ephemeral_port() -> None:
    p = port()
    with serving(f"127.0.0.1:{p}", "--mode", "echo") as served:
        out = subprocess.run(["nc", "-N", "127.0.0.1", str(p)], input=b"hello from nc\n", capture_output=True, timeout=10, check=True)
        assert out.stdout == b"hello from nc\n"
        connect = served.wait_for("connect")
        peer_port = int(connect["peer"].rsplit(":", 1)[1])
        assert 1024 <= peer_port <= 65535 and peer_port != p
        close = served.wait_for("close")
        assert close["received"] == close["sent"] == 14 and close["conn"] == connect["conn"]


def test_print_mode_logs_connect_data_and_close() -> None:
    p = port()
    with serving(str(p)) as served, socket.create_connection(("127.0.0.1", p)) as client:
        local_port = client.getsockname()[1]
        assert served.wait_for("connect")["peer"] == f"127.0.0.1:{local_port}"
        client.sendall(b"line one\n")
        data = served.wait_for("data")
        assert data["text"] == "line one\n" and data["size"] == 9
        client.close()
        assert served.wait_for("close")["received"] == 9


def test_many_clients_at_once_each_get_their_own_answers() -> None:
    p = port()
    errors: list[str] = []

    def client(number: int) -> None:
        payload = f"client {number} ".encode() * (number + 1) * 50
        with socket.create_connection(("127.0.0.1", p)) as sock:
            for _ in range(5):
                if roundtrip(sock, payload) != payload:
                    errors.append(f"client {number} got someone else's bytes")

    with serving(str(p), "--mode", "echo"):
        threads = [threading.Thread(target=client, args=(n,)) for n in range(60)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []


def test_udp_echo_many_peers() -> None:
    p = port()
    with serving(f"udp://127.0.0.1:{p}", "--mode", "echo") as served:
        peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
        try:
            for number, peer in enumerate(peers):
                peer.settimeout(5)
                peer.sendto(f"datagram {number}".encode(), ("127.0.0.1", p))
            for number, peer in enumerate(peers):
                data, source = peer.recvfrom(100)
                assert data == f"datagram {number}".encode() and source == ("127.0.0.1", p)
        finally:
            for peer in peers:
                peer.close()
        connects = [served.wait_for("connect") for _ in peers]
        assert len({c["peer"] for c in connects}) == 5


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_udp_echo_answers_socat() -> None:
    p = port()
    with serving(f"udp://127.0.0.1:{p}", "--mode", "echo"):
        out = subprocess.run(["socat", "-t", "1", "-", f"UDP:127.0.0.1:{p}"], input=b"over udp\n", capture_output=True, timeout=10, check=True)
        assert out.stdout == b"over udp\n"


@pytest.mark.parametrize("kind", ["unix", "seqpacket"])
def test_unix_stream_and_seqpacket_report_peer_credentials(tmp_path: object, kind: str) -> None:
    path = os.path.join(str(tmp_path), "s.sock")
    with serving(f"{kind}:{path}", "--mode", "echo") as served:
        sock_type = socket.SOCK_STREAM if kind == "unix" else socket.SOCK_SEQPACKET
        with socket.socket(socket.AF_UNIX, sock_type) as client:
            client.connect(path)
            client.sendall(b"first")
            client.sendall(b"second")
            if kind == "seqpacket":  # message boundaries are kept
                assert client.recv(100) == b"first" and client.recv(100) == b"second"
            else:
                assert roundtrip(client, b"") + client.recv(100) in (b"firstsecond", b"first")
        connect = served.wait_for("connect")
        assert connect["pid"] == os.getpid() and connect["uid"] == os.getuid()
    assert not os.path.exists(path), "the socket file is removed on exit"


def test_unix_datagram_echo_with_credentials(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "d.sock")
    with serving(f"unix-dgram:{path}", "--mode", "echo") as served, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.bind(os.path.join(str(tmp_path), "client.sock"))
        client.settimeout(5)
        client.sendto(b"a datagram", path)
        assert client.recv(100) == b"a datagram"
        assert served.wait_for("connect")["pid"] == os.getpid()


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_unix_stream_answers_socat(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "s.sock")
    with serving(f"unix:{path}", "--mode", "echo"):
        out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{path}"], input=b"via socat\n", capture_output=True, timeout=10, check=True)
        assert out.stdout == b"via socat\n"


def _lines(sock: socket.socket, count: int) -> list[bytes]:
    sock.settimeout(5)
    data = b""
    while data.count(b"\n") < count:
        data += sock.recv(4096)
    return data.split(b"\n")[:count]


def test_chat_relays_lines_to_the_others_with_the_sender() -> None:
    p = port()
    with serving(str(p), "--mode", "chat") as served:
        a, b, c = (socket.create_connection(("127.0.0.1", p)) for _ in range(3))
        for _ in range(3):
            served.wait_for("connect")
        _lines(a, 2)  # a hears b and c join
        _lines(b, 1)
        a.sendall(b"hello all\n")
        sender = f"127.0.0.1:{a.getsockname()[1]}".encode()
        assert _lines(b, 1) == [b"[" + sender + b"] hello all"]
        assert _lines(c, 1) == [b"[" + sender + b"] hello all"]
        a.settimeout(0.3)
        with pytest.raises(TimeoutError):
            a.recv(100)  # the sender does not hear itself
        for sock in (a, b, c):
            sock.close()


def test_chat_drops_a_line_that_is_too_long() -> None:
    p = port()
    with serving(str(p), "--mode", "chat", "--max-line", "100") as served, socket.create_connection(("127.0.0.1", p)) as client:
        client.sendall(b"x" * 500)
        assert "line longer" in served.wait_for("close")["detail"]


def test_port_in_use_names_the_holder_and_exits_4() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = sockscope("serve", f"127.0.0.1:{taken}")
    assert result.returncode == ExitCode.ADDRESS_IN_USE
    assert f"pid {os.getpid()}" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run the check as another user")
def test_privileged_port_without_privilege_explains_and_exits_3() -> None:
    result = sockscope("serve", "127.0.0.1:80", user="65534", env={"PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == ExitCode.PERMISSION, result.stderr
    assert "privileged" in result.stderr and "CAP_NET_BIND_SERVICE" in result.stderr


def test_stale_unix_socket_is_replaced_but_a_live_one_is_not(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nothing answers
    with serving(f"unix:{path}", "--mode", "echo"), socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
        assert roundtrip(client, b"fresh") == b"fresh"
        live = sockscope("serve", f"unix:{path}")
        assert live.returncode == ExitCode.ADDRESS_IN_USE and "in use" in live.stderr
    plain = os.path.join(str(tmp_path), "plain")
    with open(plain, "w") as handle:
        handle.write("data")
    refused = sockscope("serve", f"unix:{plain}")
    assert refused.returncode == ExitCode.USAGE and "not a socket" in refused.stderr
    with open(plain) as handle:
        assert handle.read() == "data"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_lets_clients_finish_then_exits_0(signum: int) -> None:
    p = port()
    with serving(str(p), "--mode", "echo", "--grace", "0.5") as served:
        client = socket.create_connection(("127.0.0.1", p))
        served.wait_for("connect")
        started = time.monotonic()
        assert served.stop(signum) == 0
        assert time.monotonic() - started < 5
        client.settimeout(5)
        assert client.recv(10) == b""  # closed by the server after the grace period
        client.close()
        kinds = [e["event"] for e in served.events]
        assert "stopping" in kinds and kinds[-1] == "stopped"
        assert next(e for e in served.events if e["event"] == "close")["detail"] == "server stopped"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", p)) != 0


def test_max_conns_refuses_the_extra_client() -> None:
    p = port()
    with serving(str(p), "--mode", "echo", "--max-conns", "2") as served:
        keep = [socket.create_connection(("127.0.0.1", p)) for _ in range(2)]
        for _ in keep:
            served.wait_for("connect")
        with socket.create_connection(("127.0.0.1", p)) as extra:
            extra.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert extra.recv(10) == b""
        assert "max-conns" in served.wait_for("refused")["detail"]
        assert roundtrip(keep[0], b"still served") == b"still served"
        for sock in keep:
            sock.close()


def test_idle_timeout_drops_a_silent_client() -> None:
    p = port()
    with serving(str(p), "--mode", "echo", "--idle-timeout", "0.5") as served, socket.create_connection(("127.0.0.1", p)) as client:
        client.settimeout(5)
        assert client.recv(10) == b""
        assert "idle" in served.wait_for("close")["detail"]


def test_trace_narrates_the_socket_lifecycle() -> None:
    p = port()
    with serving(str(p), "--mode", "echo", "--trace") as served:
        with socket.create_connection(("127.0.0.1", p)) as client:
            assert roundtrip(client, b"traced") == b"traced"
        served.wait_for("close")
        time.sleep(0.1)
    narrated = [e["detail"] for e in served.events if e["event"] == "trace"]
    expected = [
        "socket(AF_INET, SOCK_STREAM",
        "setsockopt(",
        "SO_REUSEADDR",
        f"bind(fd 3, 127.0.0.1:{p}) = 0",
        "listen(fd 3",
        "accept() = fd",
        "recv(fd",
        "send(fd",
        "close(fd",
    ]
    text = "\n".join(narrated)
    for piece in expected:
        assert piece in text, piece


def test_workers_share_the_port_through_so_reuseport() -> None:
    p = port()
    with serving(str(p), "--mode", "echo", "--workers", "2") as served:
        listeners = subprocess.run(["ss", "-Htln", f"sport = :{p}"], capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(listeners) == 2
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", p)) as client:
                assert roundtrip(client, b"w") == b"w"
        time.sleep(0.3)
        workers = {e.get("worker") for e in served.events if e["event"] == "connect"}
        assert workers <= {1, 2} and workers
        assert served.stop() == 0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if not have("openssl"):
        pytest.skip("needs openssl to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_echo_with_verification(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    p = port()
    with serving(str(p), "--mode", "echo", "--tls", cert, key):
        trusted = sockscope("connect", f"127.0.0.1:{p}", "--tls", "--ca-file", cert, "-q", "1")
        assert trusted.returncode == 0, trusted.stderr
        untrusted = sockscope("connect", f"127.0.0.1:{p}", "--tls")
        assert untrusted.returncode == ExitCode.NOTHING_FOUND and "not trusted" in untrusted.stderr
        proc = sockscope_bytes("connect", f"127.0.0.1:{p}", "--tls", "--insecure", "-q", "1", data=b"secret")
        assert proc.stdout == b"secret", proc.stderr


def test_bad_input_gets_one_line_and_exit_2(tmp_path: object) -> None:
    for args in (
        ["nonsense:port"],
        ["127.0.0.1:0"],
        ["127.0.0.1:70000"],
        ["--mode", "http", "--root", "/nonexistent"],
        ["udp://:9", "--mode", "http"],
        ["--workers", "x"],
        ["--mode", "chat", "--workers", "2"],
    ):
        result = sockscope("serve", *args)
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_thousands_of_connect_close_cycles_leak_no_descriptors() -> None:
    p = port()
    with serving(str(p), "--mode", "echo", "-q") as served:
        pid = served.process.pid
        with socket.create_connection(("127.0.0.1", p)) as warm:
            roundtrip(warm, b"x")
        time.sleep(0.2)
        before = len(os.listdir(f"/proc/{pid}/fd"))
        for number in range(3000):
            with socket.create_connection(("127.0.0.1", p)) as client:
                if number % 3 == 0:
                    client.sendall(b"ping")
                if number % 5 == 0:  # some vanish with a reset, mid-conversation
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{pid}/fd")) > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(os.listdir(f"/proc/{pid}/fd")) <= before
        with socket.create_connection(("127.0.0.1", p)) as client:
            assert roundtrip(client, b"alive") == b"alive"

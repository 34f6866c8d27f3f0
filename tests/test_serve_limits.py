"""`sockscope serve` limits under silent clients: TLS handshakes inside --max-conns and --request-timeout, --max-per-client."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time

import pytest

from conftest import have
from serving import port, serving


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if not have("openssl"):
        pytest.skip("needs openssl to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", *subject], check=True, capture_output=True
    )
    return cert, key


def _openssl_echo(p: int, text: bytes) -> bytes:
    """Send `text` through `openssl s_client` and give what came back (the client waits for the answer before it leaves)."""
    client = subprocess.Popen(
        ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{p}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write(text)
        client.stdin.flush()
        got = b""
        end = time.monotonic() + 15
        while len(got) < len(text) and time.monotonic() < end:
            ready, _, _ = select.select([client.stdout], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = os.read(client.stdout.fileno(), 4096)
            if not chunk:
                break
            got += chunk
        return got
    finally:
        client.kill()
        client.wait()
        client.stdin.close()
        client.stdout.close()


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_silent_tls_connections_count_against_max_conns_and_are_cut_after_request_timeout(
    certificate: tuple[str, str], loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if loop == "asyncio":
        monkeypatch.setenv("SOCKSCOPE_NO_UVLOOP", "1")
    cert, key = certificate
    p = port()
    args = ["--mode", "echo", "--tls", cert, key, "--max-conns", "210", "--max-per-client", "1000", "--request-timeout", "2", "-q"]
    with serving(f"127.0.0.1:{p}", *args) as served:
        silent = [socket.create_connection(("127.0.0.1", p)) for _ in range(200)]
        try:
            for _ in silent:
                served.wait_for("connect")
            assert _openssl_echo(p, b"served while 200 wait\n") == b"served while 200 wait\n"
            extra = [socket.create_connection(("127.0.0.1", p)) for _ in range(20)]
            refused = [served.wait_for("refused") for _ in range(10)]
            assert all("--max-conns 210" in event["detail"] for event in refused)
            started = time.monotonic()
            assert all(_closed(sock) for sock in silent), "each silent connection is cut"
            assert 1.0 <= time.monotonic() - started < 6
            for _ in range(200):
                served.wait_for("close", detail="TLS handshake not done within 2s")
            assert _openssl_echo(p, b"and after\n") == b"and after\n"
        finally:
            for sock in silent + locals().get("extra", []):
                sock.close()


@pytest.mark.skipif(not have("ncat"), reason="needs ncat")
def test_a_failed_handshake_is_told_and_ncat_ssl_is_served(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    p = port()
    with serving(f"127.0.0.1:{p}", "--mode", "echo", "--tls", cert, key) as served:
        with socket.create_connection(("127.0.0.1", p)) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert _closed(plain)
        assert served.wait_for("close")["detail"].startswith("TLS handshake failed: ")
        done = subprocess.run(["ncat", "--ssl", "127.0.0.1", str(p)], input=b"over ncat --ssl\n", capture_output=True, timeout=15, check=False)
        assert done.stdout == b"over ncat --ssl\n"


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_max_per_client_refuses_one_address_while_another_gets_in() -> None:
    p = port()
    with serving(f"127.0.0.1:{p}", "--mode", "echo", "--max-per-client", "3") as served:
        held = [socket.create_connection(("127.0.0.1", p)) for _ in range(3)]
        for _ in held:
            served.wait_for("connect")
        with socket.create_connection(("127.0.0.1", p)) as fourth, contextlib.suppress(ConnectionResetError):
            assert _closed(fourth)
        refused = served.wait_for("refused")
        assert refused["detail"] == "--max-per-client 3 reached" and refused["peer"].startswith("127.0.0.1:")
        other = subprocess.run(["nc", "-N", "-s", "127.0.0.2", "127.0.0.1", str(p)], input=b"from 127.0.0.2\n", capture_output=True, timeout=10, check=False)
        assert other.stdout == b"from 127.0.0.2\n"
        held[0].close()
        served.wait_for("close")
        with socket.create_connection(("127.0.0.1", p)) as again:
            again.sendall(b"room again")
            again.settimeout(5)
            assert again.recv(20) == b"room again"
        for sock in held[1:]:
            sock.close()


@pytest.mark.parametrize("kind", ["unix", "seqpacket"])
def test_max_per_client_over_unix_counts_by_uid(tmp_path: object, kind: str) -> None:
    path = os.path.join(str(tmp_path), "s.sock")
    sock_type = socket.SOCK_STREAM if kind == "unix" else socket.SOCK_SEQPACKET
    with serving(f"{kind}:{path}", "--mode", "echo", "--max-per-client", "2") as served:
        held = []
        for _ in range(3):
            client = socket.socket(socket.AF_UNIX, sock_type)
            client.connect(path)
            held.append(client)
        refused = served.wait_for("refused")
        assert refused["detail"] == "--max-per-client 2 reached" and f"uid {os.getuid()}" in refused["peer"]
        assert _closed(held[2])
        held[0].sendall(b"kept")
        held[0].settimeout(5)
        assert held[0].recv(10) == b"kept"
        for client in held:
            client.close()


@pytest.mark.skipif(not have("ncat"), reason="needs ncat")
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_chat_over_tls_relays_lines_between_ncat_ssl_clients(certificate: tuple[str, str], loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if loop == "asyncio":
        monkeypatch.setenv("SOCKSCOPE_NO_UVLOOP", "1")
    cert, key = certificate
    p = port()
    with serving(f"127.0.0.1:{p}", "--mode", "chat", "--tls", cert, key) as served:
        listener = subprocess.Popen(["ncat", "--ssl", "127.0.0.1", str(p)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert listener.stdin is not None and listener.stdout is not None
        heard = b""
        try:
            served.wait_for("connect")
            talker = subprocess.run(["ncat", "--ssl", "127.0.0.1", str(p)], input=b"first\nsecond\n", capture_output=True, timeout=10, check=False)
            assert talker.returncode == 0
            end = time.monotonic() + 10
            while b"second" not in heard and time.monotonic() < end:
                if select.select([listener.stdout], [], [], 0.2)[0]:
                    heard += os.read(listener.stdout.fileno(), 4096)
        finally:
            listener.kill()
            listener.wait()
            listener.stdin.close()
            listener.stdout.close()
    assert b"] first\n[" in heard and b"] second\n" in heard and heard.count(b"joined") == 1

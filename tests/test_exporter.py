"""`sockscope exporter` as Prometheus and an operator meet it: scraped, checked by promtool, guarded."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from conftest import free_port, have, sockscope, stop

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")


@contextlib.contextmanager
def exporter(*args: str, port: int | None = None) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run the exporter until the body is done; yield it and its port once it says it serves."""
    port = port or free_port()
    words = ["--listen", f"127.0.0.1:{port}", *args] if "--listen" not in args else list(args)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockscope", "exporter", "--interval", "0.2", "--top", "1000", *words],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving metrics at" in line, line + proc.stderr.read()
        yield proc, port
    finally:
        stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def scrape(port: int, path: str = "/metrics", headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def sample(text: str, name: str, **labels: str) -> float | None:
    """Give the value of the first sample of `name` whose labels include `labels`."""
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(key) == value for key, value in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def until(check: object, seconds: float = 40.0) -> object:
    """Give the first truthy result of check() within `seconds` (the last result otherwise).

    Generous: a refresh of a busy shared host (150,000 sockets, load 4 on 2 cores) takes 10 s.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = check()  # type: ignore[operator]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@contextlib.contextmanager
def pending_connections(count: int) -> Iterator[int]:
    """Yield the port of a listener with `count` connections completed and never accepted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(count)]
    try:
        yield listener.getsockname()[1]
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_a_listener_with_three_pending_connections_shows_an_accept_queue_of_three() -> None:
    with pending_connections(3) as port, exporter() as (_proc, metrics_port):
        value = until(lambda: sample(scrape(metrics_port), "sockscope_listener_accept_queue", port=str(port)) == 3.0)
        text = scrape(metrics_port)
        assert value, text
        assert sample(text, "sockscope_listener_accept_queue_limit", port=str(port)) == 16.0
        assert sample(text, "sockscope_listener_connections", port=str(port), state="ESTAB") == 3.0
        assert (sample(text, "sockscope_sockets", netid="tcp", state="LISTEN") or 0) >= 1


# A process whose name holds a quote, a backslash, a newline and a byte that is not UTF-8: label
# values must still come out escaped and valid.
ODD_NAME = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b'we"ir\\\\d\\nn\\xff', 0, 0, 0)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(5)
client = socket.create_connection(listener.getsockname())
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not have("promtool"), reason="promtool (Debian package prometheus) is not installed")
def test_promtool_finds_nothing_to_say_about_the_metrics() -> None:
    odd = subprocess.Popen([sys.executable, "-c", ODD_NAME], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert odd.stdout is not None and odd.stdin is not None
    try:
        odd_port = odd.stdout.readline().strip()
        with pending_connections(2), exporter() as (_proc, port):
            assert until(lambda: sample(scrape(port), "sockscope_listener_accept_queue", port=odd_port) == 1.0)
            text = scrape(port)
    finally:
        odd.stdin.close()
        odd.wait(timeout=10)
        odd.stdout.close()
    assert 'process="we\\"ir\\\\d\\nn' in text  # escaped as the exposition format says
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked.stdout + checked.stderr


def test_bytes_of_closed_connections_stay_in_the_process_counters() -> None:
    me = str(os.getpid())
    with socket.socket() as listener, exporter() as (_proc, port):
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            server, _peer = listener.accept()
            with server:
                client.sendall(b"x" * 100_000)
                got = 0
                while got < 100_000:
                    got += len(server.recv(65536))
                # seen open by a refresh, then closed: the bytes must stay counted
                assert until(lambda: (sample(scrape(port), "sockscope_process_tcp_received_bytes_total", pid=me) or 0) >= 100_000)
        assert until(lambda: (sample(scrape(port), "sockscope_process_tcp_connections_closed_total", pid=me) or 0) >= 2)
        text = scrape(port)
        assert (sample(text, "sockscope_process_tcp_received_bytes_total", pid=me) or 0) >= 100_000
        assert (sample(text, "sockscope_process_tcp_sent_bytes_total", pid=me) or 0) >= 100_000
        assert (sample(text, "sockscope_process_tcp_connections_opened_total", pid=me) or 0) >= 2
        assert (sample(text, "sockscope_process_tcp_connection_duration_seconds_count", pid=me) or 0) >= 2


def test_the_landing_page_links_the_metrics() -> None:
    with exporter() as (_proc, port):
        page = scrape(port, "/")
    assert 'href="metrics"' in page


def test_a_port_in_use_is_one_line_and_exit_4() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        done = sockscope("exporter", "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 4
    assert "in use" in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--listen", "0.0.0.0:1"], "--token"),
        (["--listen", "unix:/tmp/x"], "TCP"),
        (["--interval", "0"], "--interval"),
        (["--interval", "nan"], "seconds"),
        (["--top", "0"], "--top"),
        (["--tls-key", "/nonexistent"], "--tls-cert"),
        (["--tls-cert", "/nonexistent"], "cannot load"),
        (["--token", "a b"], "token"),
        (["--token-file", "/nonexistent"], "cannot read"),
        (["--netns", "no-such-namespace"], "no-such-namespace"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], words: str) -> None:
    done = sockscope("exporter", *args)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_beyond_loopback_a_bearer_token_is_required() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".token") as token:
        token.write("s3cret-token\n")
        token.flush()
        port = free_port()
        with exporter("--listen", f"0.0.0.0:{port}", "--token-file", token.name, port=port) as (_proc, _port):
            with pytest.raises(urllib.error.HTTPError) as refused:
                scrape(port)
            assert refused.value.code == 401
            refused.value.close()
            with pytest.raises(urllib.error.HTTPError) as wrong:
                scrape(port, headers={"Authorization": "Bearer s3cret-tokeN"})
            assert wrong.value.code == 401
            wrong.value.close()
            assert "sockscope_sockets" in scrape(port, headers={"Authorization": "Bearer s3cret-token"})


@pytest.mark.skipif(not (have("openssl") and have("curl")), reason="needs openssl and curl")
def test_client_certificates_guard_https() -> None:
    with tempfile.TemporaryDirectory() as where:

        def openssl(*words: str) -> None:
            subprocess.run(["openssl", *words], cwd=where, check=True, capture_output=True, timeout=60)

        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test ca", "-days", "1")
        for name, cn in (("server", "127.0.0.1"), ("client", "prometheus")):
            openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
            with open(os.path.join(where, f"{name}.ext"), "w") as ext:
                ext.write("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
            signed = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext"]
            openssl("x509", "-req", "-in", f"{name}.csr", *signed, "-out", f"{name}.pem")
        port = free_port()
        tls = ["--tls-cert", f"{where}/server.pem", "--tls-key", f"{where}/server.key", "--tls-client-ca", f"{where}/ca.pem"]
        with exporter("--listen", f"0.0.0.0:{port}", *tls, port=port):
            url = f"https://127.0.0.1:{port}/metrics"
            curl = ["curl", "-sS", "--max-time", "10", "--cacert", f"{where}/ca.pem"]
            without = subprocess.run([*curl, url], capture_output=True, text=True, check=False)
            assert without.returncode != 0 and "sockscope_sockets" not in without.stdout
            cert = ["--cert", f"{where}/client.pem", "--key", f"{where}/client.key"]
            allowed = subprocess.run([*curl, *cert, url], capture_output=True, text=True, check=False)
            assert allowed.returncode == 0 and "sockscope_sockets" in allowed.stdout, allowed.stderr

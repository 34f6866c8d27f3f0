"""The exporter and the web page together: one way of serving, the kernel's close events feeding both."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import have, sockscope, stop

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

from sockscope.cli import exporter as exporter_command
from sockscope.cli import httpd
from sockscope.cli import web as web_command
from sockscope.errors import UsageError
from test_exporter import free_port, sample, scrape, until

PAYLOAD = 50_000


@contextlib.contextmanager
def running(command: str, *args: str, said: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run `sockscope COMMAND` on a free loopback port until the body is done; yield it and its port once it serves."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockscope", command, "--listen", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stream = proc.stdout if command == "web" else proc.stderr
        assert stream is not None
        line = stream.readline()
        while line.startswith("sockscope: note:") and said not in line:  # e.g. close events unavailable
            line = stream.readline()
        assert said in line, line
        yield proc, port
    finally:
        stop(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def one_short_connection() -> int:
    """Open a connection from nc to a socat listener, send PAYLOAD bytes, close both; give the listener's port."""
    port = free_port()
    socat = subprocess.Popen(["socat", "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "OPEN:/dev/null"], stderr=subprocess.DEVNULL)
    try:
        listening = ["ss", "-Htln", f"sport = :{port}"]
        until(lambda: subprocess.run(listening, capture_output=True, text=True, check=False).stdout.strip(), 5)  # noqa: PLW0108
        subprocess.run(["nc", "-N", "127.0.0.1", str(port)], input=b"x" * PAYLOAD, timeout=10, check=True)
        socat.wait(timeout=10)
    finally:
        if socat.poll() is None:
            socat.kill()
            socat.wait()
    return port


def totals(text: str, name: str) -> float:
    """Give the sum of every sample of `name` (every process label)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.skipif(not (have("socat") and have("nc")), reason="needs socat and nc")
def test_a_connection_shorter_than_the_interval_is_counted_by_the_exporter_with_its_bytes() -> None:
    with running("exporter", "--interval", "5", "--top", "1000", said="serving metrics at") as (_proc, port):
        before = scrape(port)
        stamp = sample(before, "sockscope_refresh_timestamp_seconds")
        one_short_connection()
        assert until(lambda: sample(scrape(port), "sockscope_refresh_timestamp_seconds") != stamp, 12)
        after = scrape(port)
    names = ("opened", "closed")
    grown = {
        name: totals(after, f"sockscope_process_tcp_connections_{name}_total") - totals(before, f"sockscope_process_tcp_connections_{name}_total")
        for name in names
    }
    assert grown["opened"] >= 2 and grown["closed"] >= 2, grown  # both ends of the connection
    received = totals(after, "sockscope_process_tcp_received_bytes_total") - totals(before, "sockscope_process_tcp_received_bytes_total")
    assert received >= PAYLOAD
    assert sample(after, "sockscope_close_events_lost_total") == 0.0


@pytest.mark.skipif(not (have("socat") and have("nc")), reason="needs socat and nc")
def test_a_close_reaches_the_page_at_once_with_its_bytes() -> None:
    from aiohttp import ClientSession

    async def watch(port: int) -> dict[str, Any]:
        async with ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            await ws.receive_json(timeout=10)  # hello: the board as it is
            loop = asyncio.get_running_loop()
            listener = await loop.run_in_executor(None, one_short_connection)
            closed_at = time.monotonic()
            while time.monotonic() - closed_at < 4:  # the next refresh is 5 s away
                message = await ws.receive_json(timeout=4)
                for event in message.get("events", []):
                    local, peer = event["socket"]["local"], event["socket"]["peer"]
                    if event["kind"] == "close" and listener in (local.get("port"), peer.get("port")) and event.get("bytes"):
                        return dict(event, after=time.monotonic() - closed_at)
            raise AssertionError("no close with bytes came before the next refresh")

    with running("web", "--interval", "5", "--no-metrics", said="serving the live page on") as (_proc, port):
        event = asyncio.run(watch(port))
    assert max(event["bytes"]) >= PAYLOAD, event
    assert event["after"] < 2.0, event


@pytest.mark.skipif(not have("promtool"), reason="needs promtool")
def test_the_web_command_serves_metrics_that_promtool_accepts() -> None:
    with running("web", said="serving the live page on") as (_proc, port):
        text = scrape(port)
        page = scrape(port, "/")
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0 and checked.stdout.strip() == checked.stderr.strip() == "", checked.stdout + checked.stderr
    assert "sockscope_sockets{" in text and "sockscope_close_events_lost_total" in text
    assert "<html" in page.lower()  # `/` stays the page


def test_without_metrics_the_web_command_serves_no_metrics() -> None:
    import urllib.error

    with running("web", "--no-metrics", said="serving the live page on") as (_proc, port), pytest.raises(urllib.error.HTTPError) as refused:
        scrape(port)
    refused.value.close()
    assert refused.value.code == 404


@pytest.fixture(scope="module")
def certificates() -> Iterator[str]:
    if not have("openssl"):
        pytest.skip("needs openssl")
    with tempfile.TemporaryDirectory() as where:
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
        subprocess.run(
            ["openssl", "req", "-x509", *key, "-keyout", "k.pem", "-out", "c.pem", "-subj", "/CN=127.0.0.1"], cwd=where, check=True, capture_output=True
        )
        with open(os.path.join(where, "token"), "w") as token:
            token.write("s3cret\n")
        yield where


GUARD_RULES = [
    # (options, None when it may serve, else words of the one-line refusal)
    ([], None),
    (["--listen", "localhost:8730"], None),
    (["--listen", "[::1]:8730"], None),
    (["--listen", "0.0.0.0:8730"], "--token"),
    (["--listen", "[::]:8730"], "--token"),
    (["--listen", "0.0.0.0:8730", "--token", "s3cret"], None),
    (["--listen", "0.0.0.0:8730", "--token-file", "{d}/token"], None),
    (["--listen", "0.0.0.0:8730", "--tls-cert", "{d}/c.pem", "--tls-key", "{d}/k.pem"], "--token"),
    (["--listen", "0.0.0.0:8730", "--tls-cert", "{d}/c.pem", "--tls-key", "{d}/k.pem", "--tls-client-ca", "{d}/c.pem"], None),
    (["--listen", "0.0.0.0:8730", "--tls", "{d}/c.pem", "{d}/k.pem", "--tls-client-ca", "{d}/c.pem"], None),
    (["--tls-client-ca", "{d}/c.pem"], "--tls-cert"),
    (["--tls-cert", "/nonexistent"], "cannot load"),
    (["--token", "s3cret", "--token-file", "{d}/token"], "not both"),
    (["--token", "a b"], "--token"),
    (["--token", ""], "--token"),
    (["--token-file", "/nonexistent"], "cannot read"),
    (["--listen", "unix:/tmp/x"], "TCP"),
]


@pytest.mark.parametrize(("options", "refused"), GUARD_RULES)
def test_the_rules_of_who_may_connect_are_the_same_on_both_commands(certificates: str, options: list[str], refused: str | None) -> None:
    words = [word.format(d=certificates) for word in options]
    outcomes = []
    for command in (exporter_command, web_command):
        parser = argparse.ArgumentParser()
        command.add_parser(parser.add_subparsers(dest="command"))
        name = "exporter" if command is exporter_command else "web"
        args = parser.parse_args([name, *words])
        try:
            serving = httpd.guarded(args)
        except UsageError as error:
            outcomes.append(error.message)
        else:
            outcomes.append(serving.guard())
    assert outcomes[0] == outcomes[1]
    if refused is None:
        assert "required" in outcomes[0] or "loopback" in outcomes[0], outcomes[0]
    else:
        assert refused in outcomes[0], outcomes[0]


@pytest.mark.parametrize("command", ["exporter", "web"])
def test_an_unguarded_address_beyond_loopback_is_refused_in_one_line_by_both(command: str) -> None:
    done = sockscope(command, "--listen", "0.0.0.0:1")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--token" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_exit_4_on_both() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        for command in ("exporter", "web"):
            done = sockscope(command, "--listen", f"127.0.0.1:{port}")
            assert done.returncode == 4 and done.stderr.count("\n") == 1 and str(port) in done.stderr, done.stderr

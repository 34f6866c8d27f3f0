"""A real Prometheus scrapes exporters watching two network namespaces and answers PromQL with what was set up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from conftest import free_port, have, needs_root

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

pytestmark = [needs_root, pytest.mark.skipif(not (have("prometheus") and have("ip")), reason="needs prometheus (Debian package) and ip")]

# Listens on 127.0.0.1:7000 inside the namespace, completes N connections it never accepts, waits for EOF.
HOLDER = """
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 7000))
listener.listen(16)
clients = [socket.create_connection(("127.0.0.1", 7000)) for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
sys.stdin.read()
"""


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def namespace(name: str, pending: int) -> Iterator[None]:
    """A network namespace with loopback up and a listener holding `pending` unaccepted connections."""
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    holder = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        holder = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", HOLDER, str(pending)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield
    finally:
        if holder is not None:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            stop(holder)
            holder.stdout.close()
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@contextlib.contextmanager
def running(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            result: list[dict[str, object]] = json.load(answer)["data"]["result"]
            return result
    except OSError:
        return []  # Prometheus still starting


def test_prometheus_sees_each_namespace_accept_queue() -> None:
    tag = f"ssx{os.getpid()}"
    spaces = {f"{tag}a": 3, f"{tag}b": 2}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as where:
        targets = []
        for name, pending in spaces.items():
            stack.enter_context(namespace(name, pending))
            port = free_port()
            command = [sys.executable, "-m", "sockscope", "exporter", "--netns", name, "--listen", f"127.0.0.1:{port}", "--interval", "0.5"]
            stack.enter_context(running(command))
            targets.append(f"127.0.0.1:{port}")
        config = os.path.join(where, "prometheus.yml")
        with open(config, "w") as handle:
            json.dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [{"job_name": "sockscope", "static_configs": [{"targets": targets}]}]}, handle)
        web = free_port()
        prometheus = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={where}/data", f"--web.listen-address=127.0.0.1:{web}"]
        server = stack.enter_context(running(prometheus))
        deadline = time.monotonic() + 30
        found: dict[str, float] = {}
        while time.monotonic() < deadline and len(found) < len(spaces):
            assert server.poll() is None, server.stderr.read() if server.stderr else "prometheus exited"
            time.sleep(0.5)
            answers = query(web, 'sockscope_listener_accept_queue{port="7000",address="127.0.0.1"}')
            found = {str(a["metric"]["netns"]): float(a["value"][1]) for a in answers}  # type: ignore[index]
        assert found == {name: float(pending) for name, pending in spaces.items()}
        # the kernel's counters arrive per namespace too, and up is 1 for both exporters
        assert len(query(web, 'up{job="sockscope"} == 1')) == 2
        assert {str(a["metric"]["netns"]) for a in query(web, "sockscope_tcp_passive_opens_total")} == set(spaces)  # type: ignore[index]

"""Benchmark one scrape of `sockscope exporter` against node_exporter's tcpstat collector, side by side.

    sudo python bench/exporter.py [--pairs 25000] [--scrapes 30] [--interval 15] [--isolated]

With --isolated everything runs in a new network namespace of its own, so that sockets other
programs hold on this host (a shared machine) are in neither tool's count.

Holds PAIRS established loopback connections (2 sockets each), starts Debian's
prometheus-node-exporter with only --collector.tcpstat and `sockscope exporter`, each on its
own loopback port, and scrapes them in turn (alternating, so both see the same host). Prints the
median scrape time of each and their ratio, the exporter's resident memory (now and peak), how
long its background refresh takes and the CPU it spends per second. The goal: a scrape no
slower than node_exporter's, RSS under 150 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from pairs import hold_pairs

PY = sys.executable
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    # not from bench/, whose http.py would hide the standard library's from aiohttp
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env, cwd=os.path.dirname(SRC))
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scrape(url: str) -> tuple[float, bytes]:
    """Give the seconds one GET of url took (connect to last byte) and the body.

    By hand over a socket: bench/http.py hides the standard library's http package here.
    """
    host, _sep, rest = url.removeprefix("http://").partition("/")
    address, port = host.rsplit(":", 1)
    started = time.perf_counter()
    with socket.create_connection((address, int(port)), timeout=30) as conn:
        conn.sendall(f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(1 << 20):
            chunks.append(chunk)
    took = time.perf_counter() - started
    head, _sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        raise RuntimeError(f"{url}: {head[:80]!r}")
    if b"chunked" in head.lower():
        body = _unchunk(body)
    return took, body


def _unchunk(body: bytes) -> bytes:
    out = []
    while body:
        size_text, _sep, body = body.partition(b"\r\n")
        size = int(size_text.split(b";")[0], 16)
        if size == 0:
            break
        out.append(body[:size])
        body = body[size + 2 :]
    return b"".join(out)


def wait_for(url: str, needle: bytes, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if needle in scrape(url)[1]:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} never showed {needle!r}")


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # utime, stime, and those of waited-for children (each refresh takes the inventory in one)
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def sample(body: bytes, name: bytes) -> float:
    for line in body.splitlines():
        if line.startswith(name + b" "):
            return float(line.split()[1])
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=25000)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--isolated", action="store_true", help="run in a network namespace of its own")
    parser.add_argument("--serving", action="store_true", help="compare aiohttp with prometheus_client's own server instead")
    opts = parser.parse_args()
    if opts.serving:
        serving()
        return
    if opts.isolated:
        name = f"sockscope-bench-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            rest = [arg for arg in sys.argv[1:] if arg != "--isolated"]
            subprocess.run(["ip", "netns", "exec", name, PY, os.path.abspath(__file__), *rest], check=True)
        finally:
            subprocess.run(["ip", "netns", "del", name], check=False)
        return
    node_port, our_port = free_port(), free_port()
    node = ["prometheus-node-exporter", "--collector.disable-defaults", "--collector.tcpstat", f"--web.listen-address=127.0.0.1:{node_port}"]
    ours = [PY, "-m", "sockscope", "exporter", "--listen", f"127.0.0.1:{our_port}", "--interval", str(opts.interval)]
    env = dict(os.environ, PYTHONPATH=SRC)
    node_url, our_url = f"http://127.0.0.1:{node_port}/metrics", f"http://127.0.0.1:{our_port}/metrics"
    with hold_pairs(opts.pairs), running(node) as _node, running(ours, env) as exporter:
        wait_for(node_url, b"node_tcp_connection_states")
        wait_for(our_url, b"sockscope_listener_accept_queue")
        time.sleep(opts.interval * 2)  # a refresh that saw every pair
        cpu_before, wall_before = cpu_seconds(exporter.pid), time.monotonic()
        times: dict[str, list[float]] = {"node_exporter tcpstat": [], "sockscope exporter": []}
        sizes: dict[str, int] = {}
        last = b""
        for _ in range(opts.scrapes):
            for name, url in (("node_exporter tcpstat", node_url), ("sockscope exporter", our_url)):
                took, body = scrape(url)
                times[name].append(took)
                sizes[name] = len(body)
                if name == "sockscope exporter":
                    last = body
            time.sleep(0.2)
        # over two intervals at least, so that refreshes (which cost the CPU) fall inside
        time.sleep(max(0.0, wall_before + 2 * opts.interval - time.monotonic()))
        cpu = (cpu_seconds(exporter.pid) - cpu_before) / (time.monotonic() - wall_before)
        rss, peak = status_kb(exporter.pid, "VmRSS"), status_kb(exporter.pid, "VmHWM")
    node_ms = statistics.median(times["node_exporter tcpstat"]) * 1000
    our_ms = statistics.median(times["sockscope exporter"]) * 1000
    print(f"{opts.pairs} pairs ({2 * opts.pairs} established sockets), {opts.scrapes} scrapes each, alternating")
    for name, taken in times.items():
        print(f"  {name:24} median {statistics.median(taken) * 1000:8.2f} ms   max {max(taken) * 1000:8.2f} ms   {sizes[name]} bytes")
    print(f"  ratio sockscope / node_exporter (medians): {our_ms / node_ms:.3g}")
    seen = sum(float(line.split()[1]) for line in last.splitlines() if line.startswith(b"sockscope_sockets{"))
    print(f"  sockets the exporter saw (every kind, this host): {seen:.0f}")
    print(f"  sockscope exporter: RSS {rss / 1024:.1f} MB (peak {peak / 1024:.1f} MB), refresh {sample(last, b'sockscope_refresh_duration_seconds'):.2f} s")
    print(f"  sockscope exporter CPU: {cpu * 100:.1f}% of one core (refresh every {opts.interval:g} s)")


SERVE_PROMETHEUS_CLIENT = """
import sys, time
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry
body = open(sys.argv[2], "rb").read()
class Fixed:
    def collect(self):
        return iter(())
registry = CollectorRegistry()
import prometheus_client.exposition as exposition
exposition.generate_latest = lambda registry=None, escaping=None: body  # the same cached text as ours
start_http_server(int(sys.argv[1]), "127.0.0.1", registry)
time.sleep(3600)
"""

SERVE_AIOHTTP = """
import sys
sys.path.insert(0, sys.argv[3])
from aiohttp import web
from sockscope.cli.exporter import build_app
from sockscope.net.listeners import open_inet
from sockscope.address import parse_address
body = open(sys.argv[2], "rb").read()
sockets = open_inet(parse_address("127.0.0.1:" + sys.argv[1]), backlog=128, reuse_port=False, narrate=None)
from sockscope.cli.exporter import serve
serve(build_app(lambda: body), sockets, None, web)
"""


def serving(seconds: int = 5) -> None:
    """Compare the two ways of serving the same cached metrics text with wrk (1 thread, 10 connections)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".prom") as cached:
        cached.write(b"# HELP x x\n# TYPE x gauge\n" + b"".join(b'x{n="%d"} 1\n' % n for n in range(1000)))
        cached.flush()
        for name, script in (("prometheus_client start_http_server", SERVE_PROMETHEUS_CLIENT), ("aiohttp (sockscope exporter)", SERVE_AIOHTTP)):
            port = free_port()
            with running([PY, "-c", script, str(port), cached.name, SRC]):
                wait_for(f"http://127.0.0.1:{port}/metrics", b'x{n="999"}', 20)
                out = subprocess.run(
                    ["wrk", "-t1", "-c10", f"-d{seconds}s", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True, check=True
                ).stdout
            rate = next(line for line in out.splitlines() if "Requests/sec" in line)
            latency = next(line for line in out.splitlines() if line.strip().startswith("Latency"))
            print(f"  {name:38} {rate.strip():28} {' '.join(latency.split()[:2])}")


if __name__ == "__main__":
    main()

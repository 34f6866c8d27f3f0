"""Memory of `serve --mode http` under clients that never read: RSS idle, at peak, and 10 s after they leave.

Two loads, one after the other, against one server:
  readers-never  N clients each ask for a 10 MB file and never read a byte (default 1,000)
  pipeliners     M clients each pipeline GETs of a 1 KiB file as long as the socket takes them, never reading (default 400)
Every load is bounded: it holds for --hold seconds, then all its sockets are closed. The server's
RSS (VmRSS of /proc/PID/status) is sampled every 0.1 s.

    python bench/hostile_http.py [--clients 1000] [--pipeliners 400] [--hold 5] [--src DIR]

--src runs the server from another checkout's src/ (to compare with older code).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

from echo import free_port, wait_up
from ls import PY


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def watch(pid: int, seconds: float) -> int:
    """Give the highest RSS (KiB) seen over `seconds`."""
    peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.1)
    return peak


def never_readers(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(sock)
    return socks


def pipeliners(pid: int, port: int, count: int, seconds: float) -> tuple[list[socket.socket], int, int]:
    """Open `count` clients that send pipelined requests until the server stops taking them (bounded by time and bytes)."""
    request = b"GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 64
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    sent = peak = 0
    end = time.monotonic() + seconds
    sampled = 0.0
    open_ones = list(socks)
    while open_ones and time.monotonic() < end:
        still = []
        for sock in open_ones:
            try:
                sent += sock.send(request)
                still.append(sock)
            except BlockingIOError:
                continue  # this one is full: the server stopped reading it
            except OSError:
                continue
        open_ones = still
        if time.monotonic() - sampled > 0.1:
            peak, sampled = max(peak, rss_kib(pid)), time.monotonic()
        if sent > 4 << 30:
            break
    return socks, sent, max(peak, watch(pid, max(0.0, end - time.monotonic())))


def leave(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset: no waiting for unread data
        sock.close()


def after(pid: int, idle: int) -> tuple[int, float | None]:
    """Give the RSS 10 s after the clients left, and how long until it fell under twice the idle RSS (None: it did not)."""
    left = time.monotonic()
    fell = None
    while time.monotonic() - left < 10:
        if fell is None and rss_kib(pid) < 2 * idle:
            fell = time.monotonic() - left
        time.sleep(0.1)
    return rss_kib(pid), fell


def report(name: str, idle: int, peak: int, later: int, fell: float | None) -> None:
    shown = f"after {fell:.1f} s" if fell is not None else "NOT within 10 s"
    print(f"{name}: peak {peak / 1024:.1f} MiB; 10 s after they left {later / 1024:.1f} MiB (under 2x idle {shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--pipeliners", type=int, default=400)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--src", help="run the server from this src/ directory")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.path.abspath(args.src)
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "big.bin"), "wb") as handle:
            handle.write(os.urandom(10 * 1000 * 1000))
        with open(os.path.join(root, "small.bin"), "wb") as handle:
            handle.write(os.urandom(1024))
        port = free_port()
        command = [PY, "-m", "sockscope", "serve", f"127.0.0.1:{port}", "--mode", "http", "--root", root, "--quiet"]
        command += ["--max-conns", "4096", "--max-per-client", "4096"]
        server = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL)
        try:
            wait_up(port)
            warm = socket.create_connection(("127.0.0.1", port))
            warm.sendall(b"GET /small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while warm.recv(65536):
                pass
            warm.close()
            time.sleep(0.5)
            idle = rss_kib(server.pid)
            print(f"idle RSS {idle / 1024:.1f} MiB")
            socks = never_readers(port, args.clients)
            peak = watch(server.pid, args.hold)
            leave(socks)
            report(f"{args.clients} clients never reading a 10 MB file", idle, peak, *after(server.pid, idle))
            socks, sent, peak = pipeliners(server.pid, port, args.pipeliners, args.hold)
            leave(socks)
            report(f"{args.pipeliners} clients pipelining {sent / 1e6:,.0f} MB of requests, never reading", idle, peak, *after(server.pid, idle))
        finally:
            server.terminate()
            server.wait(15)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

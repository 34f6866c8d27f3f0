"""`serve --mode chat` over a unix socket with CLIENTS clients that join and never read: the server's
peak RSS, its CPU time, how many silent clients it dropped as too slow, and whether two fresh
clients can still talk afterwards.

    python bench/chat.py [--clients 5000] [--talk 200]

--talk: lines of 100 bytes sent by one of the silent clients after everyone joined (more fan-out).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import tempfile
import time

from ls import SOCKSCOPE


def status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {key}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, limit: float) -> float:
    """Wait until the server uses no CPU for half a second (at most `limit` seconds); give its CPU time."""
    end = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < end:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.01:
            return now
        last = now
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--talk", type=int, default=200)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.clients + 256)), hard))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "chat.sock")
        limit = str(args.clients + 100)
        command = [*SOCKSCOPE.split(), "serve", f"unix:{path}", "--mode", "chat", "--max-conns", limit, "--max-per-client", limit, "-q"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        clients: list[socket.socket] = []
        try:
            end = time.monotonic() + 10
            while not os.path.exists(path) and time.monotonic() < end:
                time.sleep(0.05)
            idle_rss = status(server.pid, "VmRSS")
            base = len(os.listdir(f"/proc/{server.pid}/fd"))  # the loop, the log, the listener, ...
            started = time.monotonic()
            for _ in range(args.clients):
                client = socket.socket(socket.AF_UNIX)
                client.connect(path)
                clients.append(client)
            joined = time.monotonic() - started
            clients[0].settimeout(5)
            talked = 0
            try:
                for number in range(args.talk):
                    clients[0].sendall(b"%04d " % number + b"x" * 95 + b"\n")
                    talked += 1
            except OSError:  # the talker never reads either: it may be dropped as too slow
                pass
            cpu = settle(server.pid, 120)
            peak = status(server.pid, "VmHWM")
            rss = status(server.pid, "VmRSS")
            held = len(os.listdir(f"/proc/{server.pid}/fd"))
            with socket.socket(socket.AF_UNIX) as a, socket.socket(socket.AF_UNIX) as b:
                a.connect(path)
                b.connect(path)
                b.settimeout(10)
                time.sleep(0.5)
                a.sendall(b"still talking\n")
                heard = b""
                while b"still talking" not in heard:
                    chunk = b.recv(65536)
                    if not chunk:
                        break
                    heard += chunk
            print(f"{args.clients} silent chat clients over unix, {talked} of {args.talk} lines of 100 bytes sent")
            print(f"  all connected in {joined:.1f}s; server CPU time {cpu:.1f}s")
            print(f"  server RSS: idle {idle_rss / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, after {rss / 1024:.0f} MiB")
            print(f"  clients still held: {held - base} of {args.clients} (the others were dropped as too slow)")
            print(f"  two fresh clients can still talk: {'yes' if b'still talking' in heard else 'NO'}")
        finally:
            for client in clients:
                client.close()
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


if __name__ == "__main__":
    main()

"""Memory of `serve --mode http` under clients that ask for a large file and never read it, and
whether it comes back once they leave.

    python bench/slow_readers.py [--clients 1000] [--size-mb 10]

Prints the server's RSS idle, with every client waiting, and each second for 10 s after they left
(goal: under 300 MB with them, back under twice idle within 10 s).
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


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--size-mb", type=int, default=10)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.clients + 256)), hard))
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "big.bin"), "wb") as handle:
            handle.write(os.urandom(1 << 20) * args.size_mb)
        port = free_port()
        limit = str(args.clients + 100)
        command = [*SOCKSCOPE.split(), "serve", f"127.0.0.1:{port}", "--mode", "http", "--root", root, "--max-conns", limit, "--max-per-client", limit, "-q"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        clients: list[socket.socket] = []
        try:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            time.sleep(0.5)
            idle = rss_mib(server.pid)
            for _ in range(args.clients):
                client = socket.create_connection(("127.0.0.1", port))
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                clients.append(client)
            peak = 0.0
            for _ in range(10):
                time.sleep(0.5)
                peak = max(peak, rss_mib(server.pid))
            print(f"{args.clients} clients that never read a {args.size_mb} MB file")
            print(f"  server RSS idle {idle:.0f} MiB, with them {peak:.0f} MiB")
            for client in clients:
                client.close()
            clients.clear()
            after = []
            for _ in range(10):
                time.sleep(1)
                after.append(rss_mib(server.pid))
            print("  after they left, each second: " + " ".join(f"{value:.0f}" for value in after) + " MiB")
            print(f"  back under 2x idle ({2 * idle:.0f} MiB) within 10 s: {'yes' if after[-1] < 2 * idle else 'NO'}")
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

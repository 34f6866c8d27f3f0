"""A process that listens, for tests: prints `PORT PID [CHILD_PID]` once ready, then sleeps.

python listener.py tcp4|tcp6only|dual|udp4|unix:PATH [--fork] [--ignore-term] [--child-closes]
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def main() -> None:
    kind, flags = sys.argv[1], set(sys.argv[2:])
    if "--ignore-term" in flags:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if kind == "tcp4":
        sock = socket.create_server(("127.0.0.1", 0))
    elif kind == "tcp6only":
        sock = socket.socket(socket.AF_INET6)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::1", 0))
        sock.listen()
    elif kind == "dual":
        sock = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    elif kind == "udp4":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    elif kind.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(kind[5:])
        sock.listen()
    else:
        raise SystemExit(f"unknown kind {kind}")
    port = sock.getsockname()[1] if sock.family != socket.AF_UNIX else 0
    child = 0
    if "--fork" in flags:
        child = os.fork()
        if child == 0:
            if "--child-closes" in flags:
                sock.close()
            while True:
                time.sleep(60)
    print(port, os.getpid(), child, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()

"""`sockscope connect` against `ncat`: SIZE MiB of random bytes to an echo server and back.

The same echo server (bench/bare_echo.py, uvloop when installed) serves both clients, the rounds
interleaved; each client's stdin is one file and its stdout a pipe read to the end, and every
round's output is checked byte for byte (SHA-256) outside the timing. Prints the medians and the
ratio sockscope / ncat (lower is better).

    python bench/bridge.py [--rounds 5] [--size 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from echo import free_port, wait_up

HERE = os.path.dirname(os.path.abspath(__file__))


def run_once(command: list[str], source: str, expected: str) -> float:
    """Give the seconds one client took to send the file and read all of its echo."""
    digest = hashlib.sha256()
    with open(source, "rb") as stdin:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            digest.update(chunk)
        code = proc.wait(120)
        took = time.perf_counter() - started
        proc.stdout.close()
    if code != 0 or digest.hexdigest() != expected:
        raise SystemExit(f"{command[0]}: exit {code}, output differs from the input")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=100, help="MiB")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "bare_echo.py"), str(port)])
    times: dict[str, list[float]] = {"sockscope": [], "ncat": []}
    commands = {"sockscope": [sys.executable, "-m", "sockscope", "connect", f"127.0.0.1:{port}"], "ncat": ["ncat", "127.0.0.1", str(port)]}
    with tempfile.NamedTemporaryFile(prefix="bridge-bench-") as data:
        digest = hashlib.sha256()
        for _ in range(args.size):
            block = os.urandom(1 << 20)
            digest.update(block)
            data.write(block)
        data.flush()
        try:
            wait_up(port)
            for _ in range(args.rounds):
                for name, command in commands.items():
                    times[name].append(run_once(command, data.name, digest.hexdigest()))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:10} median {medians[name]:.3f}s  rounds {' '.join(f'{v:.3f}' for v in values)}")
    print(f"ratio sockscope/ncat {medians['sockscope'] / medians['ncat']:.2f} ({args.size} MiB each way, byte-exact)")


if __name__ == "__main__":
    main()

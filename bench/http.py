"""`serve --mode http` against `python3 -m http.server`: a 1 KiB file, `wrk -c 32`, rounds interleaved.

Both servers log every request as they do by default (to /dev/null). Any socket error or non-2xx
answer reported by wrk against sockscope fails the run; those against http.server (whose listen
backlog is 5) are shown.

    python bench/http.py [--rounds 5] [--seconds 5] [--connections 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

from echo import free_port, start, stop
from ls import PY, SOCKSCOPE, compile_bytecode


def wrk(url: str, connections: int, threads: int, seconds: float) -> tuple[float, str]:
    """Give requests per second and wrk's error lines ("" when none)."""
    out = subprocess.run(["wrk", "-c", str(connections), "-t", str(threads), "-d", f"{seconds:g}s", url], capture_output=True, text=True, check=True).stdout
    errors = " ".join(line.strip() for line in out.splitlines() if "Socket errors" in line or "Non-2xx" in line)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise SystemExit(f"no figure in wrk's output:\n{out}")
    return float(found.group(1)), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "file.bin"), "wb") as handle:
            handle.write(os.urandom(1024))
        port = free_port()
        servers = {
            "sockscope serve --mode http": [*SOCKSCOPE.split(), "serve", f"127.0.0.1:{port}", "--mode", "http", "--root", root],
            "python3 -m http.server": [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", root],
        }
        results: dict[str, list[float]] = {name: [] for name in servers}
        for round_number in range(args.rounds):
            for name, command in servers.items():
                process = start(command, port, cwd=root)  # not bench/, whose http.py would shadow the standard library's
                try:
                    value, errors = wrk(f"http://127.0.0.1:{port}/file.bin", args.connections, args.threads, args.seconds)
                finally:
                    stop(process)
                if errors and name.startswith("sockscope"):
                    raise SystemExit(f"wrk reported errors against {name}: {errors}")
                results[name].append(value)
                # http.server listens with a backlog of 5: wrk's 32 connections can time out on it; told, not fatal
                shown = f" ({errors})" if errors else ""
                print(f"round {round_number + 1} {name}: {value:,.0f} requests/s{shown}", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in results.items()}
    ours = medians["sockscope serve --mode http"]
    print(f"\n1 KiB file, wrk -c {args.connections} -t {args.threads}, median of {args.rounds} x {args.seconds:g}s, no errors from sockscope")
    for name, value in medians.items():
        print(f"  {name:<30} {value:>10,.0f} requests/s   sockscope / this = {ours / value:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark `sockscope who PORT` against lsof, fuser and ss, side by side in one run.

    python bench/who.py [--pairs 25000] [--runs 10]

Holds PAIRS established loopback connections (2 sockets each) in helper processes, starts one
listener in a separate process on a port from `sockscope free`, and times each tool answering
"who holds this port?" with hyperfine (median of RUNS). Prints ratios sockscope / anchor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ls import PY, SOCKSCOPE, compile_bytecode, medians
from pairs import hold_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=25000)
    parser.add_argument("--runs", type=int, default=10)
    opts = parser.parse_args()
    compile_bytecode()
    port = int(subprocess.run([*SOCKSCOPE.split(), "free", "--range", "20000-29999"], capture_output=True, text=True, check=True).stdout)
    listener = subprocess.Popen([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run([*SOCKSCOPE.split(), "wait", f"127.0.0.1:{port}", "-q", "-t", "20"], check=True)
        with hold_pairs(opts.pairs):
            # every tool must find the listener, or the comparison means nothing
            for check in ([*SOCKSCOPE.split(), "who", str(port)], ["lsof", "-nP", f"-i:{port}"], ["fuser", f"{port}/tcp"]):
                found = subprocess.run(check, capture_output=True, text=True, check=False)
                assert str(listener.pid) in found.stdout + found.stderr, (check, found.stdout, found.stderr)
            times = medians(
                {
                    "sockscope who": f"{SOCKSCOPE} who {port}",
                    "lsof -nP -i": f"lsof -nP -i :{port}",
                    "fuser": f"fuser {port}/tcp",
                    "ss -ltnp sport": f"ss -ltnp 'sport = :{port}'",
                },
                opts.runs,
            )
    finally:
        listener.terminate()
        listener.wait()
    for name, seconds in times.items():
        print(f"{name:16} {seconds * 1000:8.1f} ms")
    print()
    ours = times["sockscope who"]
    for anchor, goal in (("lsof -nP -i", "<= 0.3"), ("fuser", "< 1"), ("ss -ltnp sport", "< 1")):
        print(f"who / {anchor:16} {ours / times[anchor]:.3f}  (goal {goal})")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, ".")
    main()

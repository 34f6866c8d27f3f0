"""Benchmark `sockscope ls -i` (TCP internals) against `ss -ti`, side by side in one run.

    python bench/internals.py [--pairs 25000] [--runs 7] [--baseline SRC]

Holds PAIRS established loopback connections (bench/pairs.py), then times with hyperfine
(median of RUNS, output to a pipe):
  ls -tin            against ss -tin             (goal <= 1.0)
  ls -tinp --json    against ss -tinp            (goal < 1)
  ls -tan            against the same command run from SRC, the code before internals (goal: not slower)
and, in this process, the dump live views are built on: inventory.take(Query(internals={"info"},
owners=True)) against ss -tinp (goal < 0.5). Run it as root (owners of every process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from pairs import hold_pairs

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def command(src: str, args: str) -> str:
    """Give a shell-free command line running `sockscope ARGS` from the package in `src`."""
    return f"env PYTHONPATH={src} {PY} -m sockscope {args}"


def medians(commands: dict[str, str], runs: int) -> dict[str, float]:
    """Give name -> median wall seconds, timed by hyperfine in one interleaved run."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        args = ["hyperfine", "-N", "-w", "1", "-r", str(runs), "--export-json", out.name, "--output=pipe"]
        for name, line in commands.items():
            args += ["-n", name, line]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        with open(out.name) as handle:
            results = json.load(handle)["results"]
    return {r["command"]: r["median"] for r in results}


def take_seconds(runs: int) -> float:
    """Give the median seconds of the inventory dump a live view refreshes from (tcp_info and owners)."""
    sys.path.insert(0, SRC)
    from sockscope.inventory import Query, take
    from sockscope.model import NetId

    query = Query(netids=frozenset({NetId.TCP}), owners=True, internals=frozenset({"info"}))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        found = take(query).sockets
        times.append(time.perf_counter() - start)
        assert found and found[-1].internals is not None
    return statistics.median(times)


def compile_bytecode(src: str) -> None:
    subprocess.run([PY, "-m", "compileall", "-q", os.path.join(src, "sockscope")], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=25000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", metavar="SRC", help="a src/ directory holding the sockscope to compare `ls -tan` with")
    opts = parser.parse_args()
    compile_bytecode(SRC)
    commands = {
        "ss -tin": "ss -tin",
        "ls -tin": command(SRC, "ls -tin"),
        "ss -tinp": "ss -tinp",
        "ls -tinp --json": command(SRC, "ls -tinp --json"),
        "ls -tan": command(SRC, "ls -tan"),
    }
    if opts.baseline:
        compile_bytecode(opts.baseline)
        commands["ls -tan (baseline)"] = command(opts.baseline, "ls -tan")
    with hold_pairs(opts.pairs):
        times = medians(commands, opts.runs)
        taken = take_seconds(opts.runs)
    for name, seconds in times.items():
        print(f"{name:22} {seconds * 1000:8.1f} ms")
    print(f"{'take(info, owners)':22} {taken * 1000:8.1f} ms")
    print()
    print(f"ls -tin / ss -tin                  {times['ls -tin'] / times['ss -tin']:.2f}  (goal <= 1.0)")
    print(f"ls -tinp --json / ss -tinp         {times['ls -tinp --json'] / times['ss -tinp']:.2f}  (goal < 1)")
    print(f"take(info, owners) / ss -tinp      {taken / times['ss -tinp']:.2f}  (goal < 0.5)")
    if opts.baseline:
        print(f"ls -tan / ls -tan (baseline)       {times['ls -tan'] / times['ls -tan (baseline)']:.2f}  (goal <= 1.0)")


if __name__ == "__main__":
    os.chdir(HERE)
    main()

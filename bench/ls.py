"""Benchmark `sockscope ls` against ss, netstat, lsof and psutil, side by side in one run.

    python bench/ls.py [--pairs 25000] [--runs 7]

Holds PAIRS established loopback connections (2 sockets each) in helper processes, then times
every command with hyperfine (median of RUNS, output to a pipe) and prints ratios against the
anchors. Also: peak memory (max RSS), growth with the socket count, and start-up time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile

from pairs import hold_pairs

PY = sys.executable
# The console script pip installed beside this interpreter (not a version manager's shim,
# which would add its own start-up to every run), else `python -m sockscope`.
_SCRIPT = os.path.join(sysconfig.get_path("scripts"), "sockscope")
SOCKSCOPE = _SCRIPT if os.access(_SCRIPT, os.X_OK) else f"{PY} -m sockscope"


def compile_bytecode() -> None:
    """Write sockscope's .pyc files, as `pip install` does, even if PYTHONDONTWRITEBYTECODE is set."""
    import compileall

    import sockscope

    compileall.compile_dir(os.path.dirname(sockscope.__file__), quiet=1)


def medians(commands: dict[str, str], runs: int, prefix: tuple[str, ...] = ()) -> dict[str, float]:
    """Give name -> median wall seconds, timed by hyperfine in one interleaved run.

    `prefix` runs hyperfine itself under another command (`ip netns exec NAME`).
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        args = [*prefix, "hyperfine", "-N", "-w", "1", "-r", str(runs), "--export-json", out.name, "--output=pipe"]
        for name, command in commands.items():
            args += ["-n", name, command]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        with open(out.name) as handle:
            results = json.load(handle)["results"]
    return {r["command"]: r["median"] for r in results}


def peak_rss_mb(command: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=25000)
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    psutil_cmd = f"{PY} -c \"import psutil; psutil.net_connections('tcp')\""
    compile_bytecode()
    with hold_pairs(opts.pairs):
        times = medians(
            {
                "ss -tan": "ss -tan",
                "sockscope ls -tan": f"{SOCKSCOPE} ls -tan",
                "ss -tanp": "ss -tanp",
                "sockscope ls -tanp": f"{SOCKSCOPE} ls -tanp",
                "sockscope ls -tanp --json": f"{SOCKSCOPE} ls -tanp --json",
                "netstat -tanp": "netstat -tanp",
                "lsof -nP -iTCP": "lsof -nP -iTCP",
                "psutil.net_connections": psutil_cmd,
            },
            opts.runs,
        )
        rss = peak_rss_mb([*SOCKSCOPE.split(), "ls", "-tanp", "--json"])
    for name, seconds in times.items():
        print(f"{name:28} {seconds * 1000:8.1f} ms")
    print()
    print(f"ls -tan        / ss -tan          {times['sockscope ls -tan'] / times['ss -tan']:.2f}  (goal <= 1.5)")
    for anchor in ("ss -tanp", "netstat -tanp", "lsof -nP -iTCP", "psutil.net_connections"):
        goal = "< 0.8" if anchor == "ss -tanp" else "< 0.5"
        print(f"ls -tanp       / {anchor:22} {times['sockscope ls -tanp'] / times[anchor]:.2f}  (goal {goal})")
    print(f"ls -tanp --json / ss -tanp        {times['sockscope ls -tanp --json'] / times['ss -tanp']:.2f}  (goal < 1)")
    print(f"peak RSS of ls -tanp --json: {rss:.0f} MB (goal < 150)")
    start = medians({"python -c pass": f"{PY} -c pass", "sockscope --version": f"{SOCKSCOPE} --version"}, 20)
    print(f"start-up: sockscope --version / python -c pass = {start['sockscope --version'] / start['python -c pass']:.2f} (goal <= 2)")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()

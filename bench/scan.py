"""`sockscope scan 127.0.0.1 -p-` against `nmap -sT -p- -n -Pn 127.0.0.1` (and ::1), side by side in one hyperfine run.

Listeners on known ports (inside and outside the ephemeral range) are started first; after the
timing, one more run of each checks that both found exactly those ports.

    python bench/scan.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile

from ls import SOCKSCOPE, compile_bytecode

KNOWN = (2222, 8080, 33000, 45678, 60000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    compile_bytecode()
    held = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for port in KNOWN:
            sock = socket.socket(family)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(1024)  # never accepts
            held.append(sock)
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "scan.json")
        subprocess.run(
            ["hyperfine", "-N", "--warmup", "2", "--runs", str(args.runs), "--export-json", out,
             f"{SOCKSCOPE} scan 127.0.0.1 -p-", "nmap -sT -p- -n -Pn 127.0.0.1",
             f"{SOCKSCOPE} scan ::1 -p-", "nmap -6 -sT -p- -n -Pn ::1"],
            check=True,
        )  # fmt: skip
        with open(out) as handle:
            results = {r["command"]: r["median"] for r in json.load(handle)["results"]}
    names = list(results)
    print(f"\nmedians of {args.runs}: ")
    for ours, theirs in ((names[0], names[1]), (names[2], names[3])):
        print(f"  {ours}: {results[ours] * 1000:.0f} ms, {theirs}: {results[theirs] * 1000:.0f} ms, ratio {results[ours] / results[theirs]:.2f}")
    for address in ("127.0.0.1", "::1"):
        document = json.loads(subprocess.run([*SOCKSCOPE.split(), "scan", address, "-p-", "--json"], capture_output=True, text=True, check=True).stdout)
        opened = {p["port"] for p in document["hosts"][0]["ports"]}
        print(f"  {address}: known listeners all found: {set(KNOWN) <= opened}; open set {sorted(opened)}")
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()

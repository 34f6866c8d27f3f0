"""`sockscope scan` against nmap, side by side, pair by pair, on 127.0.0.1 and ::1.

Pairs (hyperfine medians):
- connect: `scan ADDR -p-` / `nmap -sT -p- -n -Pn ADDR`
- syn (root): `scan ADDR -p- --syn` / `nmap -sS -p- -n -Pn ADDR`
- udp (root, for nmap): `scan ADDR --udp --top-ports 1000` / `nmap -sU --top-ports 1000 -n -Pn ADDR`

The bench first starts TCP listeners that never accept on known ports (inside and outside the
ephemeral range), UDP responders on 53 and 123 (they answer every datagram) and silent UDP
ports on 161 and 40001. After the timing, one more run of each tool checks that both found
exactly those ports.

    python bench/scan.py [--runs 10] [--only connect,syn,udp]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import threading

from ls import SOCKSCOPE, compile_bytecode

KNOWN_TCP = (2222, 8080, 33000, 45678, 60000)
ANSWERING_UDP = (53, 123)
SILENT_UDP = (161, 40001)
ADDRESSES = ("127.0.0.1", "::1")


def _start() -> list[socket.socket]:
    held = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for port in KNOWN_TCP:
            sock = socket.socket(family)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(1024)  # never accepts
            held.append(sock)
        for port in ANSWERING_UDP + SILENT_UDP:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind((address, port))
            held.append(sock)
            if port in ANSWERING_UDP:
                threading.Thread(target=_answer, args=(sock,), daemon=True).start()
    return held


def _answer(sock: socket.socket) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(4096)
            sock.sendto(b"answer:" + data[:32], peer)
        except OSError:
            return


def _pairs(address: str) -> dict[str, tuple[str, str]]:
    six = " -6" if ":" in address else ""
    return {
        "connect": (f"{SOCKSCOPE} scan {address} -p-", f"nmap{six} -sT -p- -n -Pn {address}"),
        "syn": (f"{SOCKSCOPE} scan {address} -p- --syn", f"nmap{six} -sS -p- -n -Pn {address}"),
        "udp": (f"{SOCKSCOPE} scan {address} --udp --top-ports 1000", f"nmap{six} -sU --top-ports 1000 -n -Pn {address}"),
    }


def _medians(commands: tuple[str, str], runs: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "scan.json")
        subprocess.run(["hyperfine", "-N", "--warmup", "2", "--runs", str(runs), "--export-json", out, *commands], check=True, capture_output=True)
        with open(out) as handle:
            results = {r["command"]: r["median"] for r in json.load(handle)["results"]}
    return results[commands[0]], results[commands[1]]


def _ours(command: str) -> dict[int, str]:
    document = json.loads(subprocess.run([*command.split(), "--json"], capture_output=True, text=True, check=True).stdout)
    return {p["port"]: p["state"] for p in document["hosts"][0]["ports"]}


def _theirs(command: str) -> dict[int, str]:
    out = subprocess.run([*command.split(), "-oG", "-"], capture_output=True, text=True, check=True).stdout
    states = {}
    for line in out.splitlines():
        if "Ports:" in line:
            for item in line.split("Ports:")[1].split("Ignored")[0].split(","):
                fields = item.strip().split("/")
                states[int(fields[0])] = fields[1]
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", default="connect,syn,udp")
    args = parser.parse_args()
    kinds = args.only.split(",")
    if os.geteuid() != 0:
        kinds = [kind for kind in kinds if kind == "connect"]
        print("not root: only the connect scan is measured")
    compile_bytecode()
    held = _start()
    try:
        for kind in kinds:
            for address in ADDRESSES:
                ours, theirs = _pairs(address)[kind]
                mine, nmap = _medians((ours, theirs), args.runs)
                same = _ours(ours) == _theirs(theirs)
                print(f"{kind:8} {address:10} sockscope {mine * 1000:6.0f} ms   nmap {nmap * 1000:6.0f} ms   ratio {mine / nmap:.2f}   same answer: {same}")
    finally:
        for sock in held:
            sock.close()


if __name__ == "__main__":
    main()

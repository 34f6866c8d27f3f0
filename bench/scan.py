"""`sockscope scan` against nmap, side by side, pair by pair, on 127.0.0.1 and ::1, and over veth.

Pairs (hyperfine medians):
- connect: `scan ADDR -p-` / `nmap -sT -p- -n -Pn ADDR`
- syn (root): `scan ADDR -p- --syn` / `nmap -sS -p- -n -Pn ADDR`
- udp (root, for nmap): `scan ADDR --udp --top-ports 1000` / `nmap -sU --top-ports 1000 -n -Pn ADDR`

The bench first starts TCP listeners that never accept on known ports (inside and outside the
ephemeral range), UDP responders on 53 and 123 (they answer every datagram) and silent UDP
ports on 161 and 40001. After the timing, one more run of each tool checks that both found
exactly those ports.

A loopback is not a link: as root, the bench also builds a test host in a network namespace
behind a veth pair (listeners on a few ports, an nftables rule dropping others, so timeouts are
real) and times the default 1,000 ports and -p- against it, connect and SYN (pairs veth-connect,
veth-connect-all, veth-syn, veth-syn-all).

    python bench/scan.py [--runs 10] [--only connect,syn,udp,veth]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator

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


VETH_OPEN = (22, 80, 443, 3306, 8080)
VETH_DROPPED = "21, 25, 110, 4000-4099"
VETH_SERVER = f"""
import socket, sys
held = [socket.create_server(("0.0.0.0", port)) for port in {VETH_OPEN}]
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def veth_host() -> Iterator[str]:
    """A test host behind veth in its own namespace: some ports listen, some are dropped; give its address."""
    ns, outside, inside = f"sbench{os.getpid()}", "sbencha", "sbenchb"
    inns = ["ip", "netns", "exec", ns]
    rules = f"table inet bench {{ chain input {{ type filter hook input priority 0; policy accept; tcp dport {{ {VETH_DROPPED} }} drop\n }}\n }}\n"
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
        ["ip", "link", "set", inside, "netns", ns],
        ["ip", "addr", "add", "10.215.0.1/30", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        [*inns, "ip", "addr", "add", "10.215.0.2/30", "dev", inside],
        [*inns, "ip", "link", "set", inside, "up"],
    ]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=30)
        subprocess.run([*inns, "nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True, timeout=30)
        server = subprocess.Popen([*inns, sys.executable, "-c", VETH_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield "10.215.0.2"
    finally:
        if server is not None:
            server.kill()
            server.communicate()
        subprocess.run(["ip", "link", "del", outside], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _veth_pairs(address: str) -> dict[str, tuple[str, str]]:
    return {
        "veth-connect": (f"{SOCKSCOPE} scan {address}", f"nmap -sT -n -Pn {address}"),
        "veth-connect-all": (f"{SOCKSCOPE} scan {address} -p-", f"nmap -sT -p- -n -Pn {address}"),
        "veth-syn": (f"{SOCKSCOPE} scan {address} --syn", f"nmap -sS -n -Pn {address}"),
        "veth-syn-all": (f"{SOCKSCOPE} scan {address} -p- --syn", f"nmap -sS -p- -n -Pn {address}"),
    }


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
    """Our state of every port."""
    document = json.loads(subprocess.run([*command.split(), "--json", "--all"], capture_output=True, text=True, check=True).stdout)
    return {p["port"]: p["state"] for p in document["hosts"][0]["ports"]}


def _same(ours: dict[int, str], command: str) -> bool:
    """Tell whether nmap's XML says what we said: each port it lists, and how many ports of each state it sums up."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(subprocess.run([*command.split(), "-oX", "-"], capture_output=True, text=True, check=True).stdout)
    listed = {int(port.get("portid", "0")): port.find("state").get("state", "") for port in root.iter("port")}  # type: ignore[union-attr]
    summed = {extra.get("state", ""): int(extra.get("count", "0")) for extra in root.iter("extraports")}
    unlisted = Counter(state for port, state in ours.items() if port not in listed)
    return all(ours.get(port) == state for port, state in listed.items()) and unlisted == Counter(summed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", default="connect,syn,udp,veth")
    args = parser.parse_args()
    kinds = args.only.split(",")
    if os.geteuid() != 0:
        kinds = [kind for kind in kinds if kind == "connect"]
        print("not root: only the connect scan on loopback is measured")
    compile_bytecode()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} cores")
    held = _start() if any(kind != "veth" for kind in kinds) else []
    try:
        for kind in kinds:
            if kind == "veth":
                continue
            for address in ADDRESSES:
                _compare(kind, address, _pairs(address)[kind], args.runs)
    finally:
        for sock in held:
            sock.close()
    if "veth" in kinds:
        with veth_host() as address:
            for name, pair in _veth_pairs(address).items():
                _compare(name, address, pair, args.runs)


def _compare(kind: str, address: str, pair: tuple[str, str], runs: int) -> None:
    mine, nmap = _medians(pair, runs)
    same = _same(_ours(pair[0]), pair[1])
    print(f"{kind:16} {address:10} sockscope {mine * 1000:6.0f} ms   nmap {nmap * 1000:6.0f} ms   ratio {mine / nmap:.2f}   same answer: {same}")


if __name__ == "__main__":
    main()

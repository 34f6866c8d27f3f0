"""`scan` against a test host in its own network namespace behind a veth pair, with a firewall.

The host (namespace) listens on TCP and UDP ports; its nftables rules drop some ports and
reject others with ICMP administratively prohibited, so `filtered` is real. Every kind of scan
is checked against the truth and against nmap's answer for the same ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from conftest import have, needs_root, nmap_states
from sockscope.scan import hosts, parse_ports, scan

# ports inside the namespace
OPEN, DROPPED, REJECTED, CLOSED = 2201, 2202, 2203, 2204
U_ANSWER, U_SILENT, U_DROPPED, U_REJECTED, U_CLOSED = 5301, 5302, 5303, 5304, 5305

SERVER = f"""
import socket, sys, threading
def echo(sock):
    while True:
        data, peer = sock.recvfrom(4096)
        sock.sendto(b"answer", peer)
held = []
for port in ({OPEN}, {DROPPED}, {REJECTED}):
    s = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    held.append(s)
for port in ({U_ANSWER}, {U_SILENT}, {U_DROPPED}, {U_REJECTED}):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    held.append(s)
    if port == {U_ANSWER}:
        threading.Thread(target=echo, args=(s,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

RULES = f"""
table inet testhost {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {DROPPED} drop
    tcp dport {REJECTED} reject with icmpx type admin-prohibited
    udp dport {U_DROPPED} drop
    udp dport {U_REJECTED} reject with icmpx type admin-prohibited
  }}
}}
"""


class Target(NamedTuple):
    v4: str
    v6: str


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def testhost() -> Iterator[Target]:
    yield from _testhost(RULES, icmp_ratelimit=False)


def _testhost(rules: str, icmp_ratelimit: bool) -> Iterator[Target]:
    """A namespace host behind veth with `rules`; its ICMP rate limit off, or left at the kernel's defaults."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, veth, nftables)")
    if not have("nft"):
        pytest.skip("needs nft (nftables)")
    tag = (os.getpid() + (1 if icmp_ratelimit else 0)) % 200 + 20
    ns, outside, inside = f"sscan{os.getpid()}{'r' if icmp_ratelimit else ''}", f"ssa{tag}", f"ssb{tag}"
    v4_host, v4_test, v6_host, v6_test = f"10.213.{tag}.1", f"10.213.{tag}.2", f"fd00:5c:{tag}::1", f"fd00:5c:{tag}::2"
    _run("ip", "netns", "add", ns)
    server = None
    try:
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", ns)
        _run("ip", "addr", "add", f"{v4_host}/30", "dev", outside)
        _run("ip", "-6", "addr", "add", f"{v6_host}/64", "dev", outside, "nodad")
        _run("ip", "link", "set", outside, "up")
        inns = ("ip", "netns", "exec", ns)
        _run(*inns, "ip", "addr", "add", f"{v4_test}/30", "dev", inside)
        _run(*inns, "ip", "-6", "addr", "add", f"{v6_test}/64", "dev", inside, "nodad")
        _run(*inns, "ip", "link", "set", inside, "up")
        _run(*inns, "ip", "link", "set", "lo", "up")
        for setting in ("net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0") if not icmp_ratelimit else ():
            _run(*inns, "sysctl", "-qw", setting)  # the test host answers every probe
        subprocess.run([*inns, "nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True, timeout=30)
        server = subprocess.Popen([*inns, sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield Target(v4_test, v6_test)
    finally:
        if server is not None:
            server.kill()
            server.communicate()
        subprocess.run(["ip", "link", "del", outside], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


TCP_TRUTH = {OPEN: "open", DROPPED: "filtered", REJECTED: "filtered", CLOSED: "closed"}
UDP_TRUTH = {U_ANSWER: "open", U_SILENT: "open|filtered", U_DROPPED: "open|filtered", U_REJECTED: "filtered", U_CLOSED: "closed"}
TCP_SPEC = ",".join(map(str, TCP_TRUTH))
UDP_SPEC = ",".join(map(str, UDP_TRUTH))


@needs_root
@pytest.mark.parametrize("kind", ["connect", "syn"])
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_tcp_filtered_is_real(testhost: Target, kind: str, family: str) -> None:
    address = getattr(testhost, family)
    report = scan(hosts([address]), parse_ports(TCP_SPEC), kind=kind)
    got = {p.port: p for p in report.hosts[0].ports}
    assert {port: p.state for port, p in got.items()} == TCP_TRUTH
    assert got[DROPPED].reason == "no-response"
    # a connect learns only the errno: ICMPv4 "prohibited" arrives as EHOSTUNREACH, ICMPv6's as EACCES
    assert got[REJECTED].reason == ("host-unreach" if (kind, family) == ("connect", "v4") else "admin-prohibited")
    assert got[CLOSED].reason == ("reset" if kind == "syn" else "conn-refused")
    if have("nmap"):
        assert nmap_states("-sS" if kind == "syn" else "-sT", address, TCP_SPEC) == TCP_TRUTH


@needs_root
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_udp_filtered_is_real(testhost: Target, family: str) -> None:
    address = getattr(testhost, family)
    report = scan(hosts([address]), parse_ports(UDP_SPEC, "udp"))
    got = {p.port: p for p in report.hosts[0].ports}
    assert {port: p.state for port, p in got.items()} == UDP_TRUTH
    assert (got[U_REJECTED].reason, got[U_CLOSED].reason, got[U_ANSWER].reason) == ("admin-prohibited", "port-unreach", "udp-response")
    if have("nmap"):
        assert nmap_states("-sU", address, UDP_SPEC) == UDP_TRUTH


@needs_root
def test_mixed_scan_of_the_test_host_from_the_command(testhost: Target) -> None:
    from conftest import sockscope

    result = sockscope("scan", testhost.v4, "--syn", "-p", f"T:{TCP_SPEC},U:{UDP_SPEC}", "--all", "--csv")
    assert result.returncode == 0, result.stderr
    rows = {(line.split(",")[2], int(line.split(",")[1])): line.split(",")[3] for line in result.stdout.splitlines()[1:]}
    assert rows == {**{("tcp", p): s for p, s in TCP_TRUTH.items()}, **{("udp", p): s for p, s in UDP_TRUTH.items()}}


# The kernel's own ICMP rate limit (a burst of about 6 per destination, then one a second for
# IPv4): more closed ports than the burst, and dropped ports among them.
RL_REJECTED = range(2300, 2310)  # TCP: reject, which sends ICMP port unreachable
RL_DROPPED = range(2310, 2314)
RL_UDP_CLOSED = range(5400, 5410)  # UDP: nothing listens; the kernel answers port unreachable
RL_UDP_DROPPED = range(5410, 5414)
RL_RULES = f"""
table inet testhost {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {RL_REJECTED.start}-{RL_REJECTED.stop - 1} reject
    tcp dport {RL_DROPPED.start}-{RL_DROPPED.stop - 1} drop
    udp dport {RL_UDP_DROPPED.start}-{RL_UDP_DROPPED.stop - 1} drop
  }}
}}
"""


@pytest.fixture(scope="module")
def limited_host() -> Iterator[Target]:
    yield from _testhost(RL_RULES, icmp_ratelimit=True)


@needs_root
def test_connect_scan_through_rate_limited_rejects_is_right(limited_host: Target) -> None:
    spec = f"{RL_REJECTED.start}-{RL_DROPPED.stop - 1},{OPEN}"
    truth = {**dict.fromkeys(RL_REJECTED, "closed"), **dict.fromkeys(RL_DROPPED, "filtered"), OPEN: "open"}
    started = time.monotonic()
    report = scan(hosts([limited_host.v4]), parse_ports(spec))
    ours = time.monotonic() - started
    assert {p.port: p.state for p in report.hosts[0].ports} == truth
    if have("nmap"):
        _against_nmap("-sT", limited_host.v4, spec, truth, ours)


@needs_root
def test_udp_scan_through_rate_limited_port_unreachables_is_right(limited_host: Target) -> None:
    time.sleep(1.5)  # the bucket refills after the previous test
    spec = f"{RL_UDP_CLOSED.start}-{RL_UDP_DROPPED.stop - 1},{U_ANSWER}"
    truth = {**dict.fromkeys(RL_UDP_CLOSED, "closed"), **dict.fromkeys(RL_UDP_DROPPED, "open|filtered"), U_ANSWER: "open"}
    started = time.monotonic()
    report = scan(hosts([limited_host.v4]), parse_ports(spec, "udp"))
    ours = time.monotonic() - started
    assert {p.port: p.state for p in report.hosts[0].ports} == truth
    if have("nmap"):
        _against_nmap("-sU", limited_host.v4, spec, truth, ours)


def _against_nmap(kind: str, address: str, spec: str, truth: dict[int, str], ours: float) -> None:
    """nmap on the same ports: when it is right, it must have taken longer than we did; when wrong, we were right anyway."""
    time.sleep(1.5)  # let the host's bucket refill, so nmap starts as we did
    started = time.monotonic()
    theirs = nmap_states(kind, address, spec)
    seconds = time.monotonic() - started
    if theirs == truth:
        assert ours < seconds, f"nmap was right in {seconds:.1f}s, we took {ours:.1f}s"
    else:
        wrong = {port: state for port, state in theirs.items() if truth.get(port) != state}
        print(f"nmap {kind} got {len(wrong)} of {len(truth)} ports wrong in {seconds:.1f}s; we were right in {ours:.1f}s")


@needs_root
def test_stopping_while_asking_again_keeps_every_port_and_says_so(limited_host: Target) -> None:
    time.sleep(1.5)
    spec = f"{RL_REJECTED.start}-{RL_DROPPED.stop - 1}"
    until = time.monotonic() + 1.0  # the fast pass takes milliseconds; the rate-limited rest takes seconds
    report = scan(hosts([limited_host.v4]), parse_ports(spec), stop=lambda: time.monotonic() > until)
    assert report.interrupted and len(report.hosts[0].ports) == len(RL_REJECTED) + len(RL_DROPPED)
    assert any("interrupted while asking again" in note for note in report.notes), report.notes
    # what was said is never wrong: a port called closed is one of the rejected ones
    assert {p.port for p in report.hosts[0].ports if p.state == "closed"} <= set(RL_REJECTED)

"""`scan --syn`, `--udp`, `--banner`, the async face and Ctrl-C: against real listeners, responders and nmap."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from conftest import have, needs_root, nmap_states, sockscope
from sockscope.errors import ExitCode
from sockscope.scan import hosts, parse_ports, scan, scan_async, scan_iter
from sockscope.scan.probes import UDP_PAYLOADS, identify, udp_payload


@pytest.fixture
def tcp_listeners() -> Iterator[dict[str, set[int]]]:
    """Listeners that never accept, on kernel-chosen ports (inside the ephemeral range), IPv4 and IPv6."""
    made = []
    found: dict[str, set[int]] = {"127.0.0.1": set(), "::1": set()}
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, 0))
        sock.listen(8)
        made.append(sock)
        found[address].add(sock.getsockname()[1])
    yield found
    for sock in made:
        sock.close()


def _others(address: str, udp: bool = False) -> set[int]:
    """Ports other processes hold right now on this address (the test cannot own the whole host)."""
    out = subprocess.run(["ss", "-Hn", "-u" if udp else "-t", "-l", "-6" if ":" in address else "-4"], capture_output=True, text=True, check=True).stdout
    held = set()
    for line in out.splitlines():
        host, _colon, port = line.split()[3].rpartition(":")
        if host.strip("[]").split("%")[0] in (address, "0.0.0.0", "*", "::"):
            held.add(int(port))
    return held


@needs_root
def test_syn_open_set_is_exactly_the_listeners(tcp_listeners: dict[str, set[int]]) -> None:
    for _ in range(2):
        report = scan(hosts(["127.0.0.1", "::1"]), parse_ports("-"), kind="syn")
        assert report.kind == "syn" and not report.interrupted and report.notes == ()
        for host in report.hosts:
            opened = {p.port for p in host.ports if p.state == "open"}
            assert tcp_listeners[host.address] <= opened and opened - tcp_listeners[host.address] <= _others(host.address)
            assert len(host.ports) == 65535 and {p.reason for p in host.ports if p.state == "closed"} == {"reset"}
            assert {p.state for p in host.ports} <= {"open", "closed"}


@needs_root
def test_syn_leaves_nothing_behind(tcp_listeners: dict[str, set[int]]) -> None:
    """Targets keep no half-open connection (we reset them), the firewall rule is gone, no descriptor stays."""
    ports = ",".join(map(str, tcp_listeners["127.0.0.1"] | tcp_listeners["::1"]))
    before = len(os.listdir("/proc/self/fd"))
    scan(hosts(["127.0.0.1", "::1"]), parse_ports(ports), kind="syn")
    assert len(os.listdir("/proc/self/fd")) == before
    half_open = subprocess.run(["ss", "-Htn", "state", "syn-recv"], capture_output=True, text=True, check=True).stdout
    assert not any(line.split()[2].rpartition(":")[2] in ports.split(",") for line in half_open.splitlines())
    assert "sockscope_scan_" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


@needs_root
def test_syn_kernel_resets_are_held_back(tcp_listeners: dict[str, set[int]]) -> None:
    """On the wire (lo), an answered SYN gets exactly one reset from the scanning side: ours, not also the kernel's."""
    port = min(tcp_listeners["127.0.0.1"])
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    capture.bind(("lo", 0))
    capture.settimeout(0.2)
    resets: list[int] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                frame, address = capture.recvfrom(256)
            except TimeoutError:
                continue
            if address[2] != socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_TCP:
                continue
            tcp = frame[14 + (frame[14] & 15) * 4 :]
            if int.from_bytes(tcp[2:4], "big") == port and tcp[13] & 0x04:
                resets.append(int.from_bytes(tcp[0:2], "big"))

    thread = threading.Thread(target=listen)
    thread.start()
    try:
        report = scan(hosts(["127.0.0.1"]), parse_ports(str(port)), kind="syn")
        time.sleep(0.3)
    finally:
        done.set()
        thread.join()
        capture.close()
    assert [p.state for p in report.hosts[0].ports] == ["open"]
    assert len(resets) == 1, resets


@needs_root
@pytest.mark.skipif(not have("nmap"), reason="needs nmap")
def test_syn_agrees_withnmap_states(tcp_listeners: dict[str, set[int]]) -> None:
    for address in ("127.0.0.1", "::1"):
        spec = ",".join(map(str, sorted(tcp_listeners[address]))) + ",1-3"
        ours = {p.port: p.state for p in scan(hosts([address]), parse_ports(spec), kind="syn").hosts[0].ports}
        assert ours == nmap_states("-sS", address, spec)


def test_syn_without_root_says_so() -> None:
    as_user = {"user": "65534", "env": {"PYTHONPATH": os.pathsep.join(sys.path)}} if os.geteuid() == 0 else {}
    result = sockscope("scan", "127.0.0.1", "-p", "1", "--syn", **as_user)  # type: ignore[arg-type]
    assert result.returncode == ExitCode.PERMISSION and "root" in result.stderr and len(result.stderr.strip().splitlines()) == 1


class _Responders:
    """UDP ports on 127.0.0.1 and ::1: some answer every datagram (echo), some stay silent."""

    def __init__(self) -> None:
        self.answering: dict[str, set[int]] = {"127.0.0.1": set(), "::1": set()}
        self.silent: dict[str, set[int]] = {"127.0.0.1": set(), "::1": set()}
        self.socks: list[socket.socket] = []
        self.heard: list[bytes] = []
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for kind in ("answering", "answering", "silent", "silent"):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.bind((address, 0))
                getattr(self, kind)[address].add(sock.getsockname()[1])
                self.socks.append(sock)
                if kind == "answering":
                    threading.Thread(target=self._echo, args=(sock,), daemon=True).start()

    def _echo(self, sock: socket.socket) -> None:
        while True:
            try:
                data, peer = sock.recvfrom(4096)
                self.heard.append(data)
                sock.sendto(b"pong:" + data, peer)
            except OSError:
                return

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


@pytest.fixture
def responders() -> Iterator[_Responders]:
    made = _Responders()
    yield made
    made.close()


def test_udp_states_are_the_truth(responders: _Responders) -> None:
    for address in ("127.0.0.1", "::1"):
        answering, silent = responders.answering[address], responders.silent[address]
        closed = {1, 2, 3}
        spec = ",".join(map(str, sorted(answering | silent | closed)))
        report = scan(hosts([address]), parse_ports(spec, "udp"), kind="connect")
        assert report.kind == "udp"
        got = {p.port: (p.state, p.reason) for p in report.hosts[0].ports}
        assert got == {
            **dict.fromkeys(answering, ("open", "udp-response")),
            **dict.fromkeys(silent, ("open|filtered", "no-response")),
            **dict.fromkeys(closed, ("closed", "port-unreach")),
        }
        assert all(p.banner and p.banner.startswith("pong:") for p in report.hosts[0].ports if p.state == "open")


def test_udp_full_range_finds_every_responder(responders: _Responders) -> None:
    """All 65535 UDP ports of 127.0.0.1: the answering and silent ports are told apart from the closed ones."""
    report = scan(hosts(["127.0.0.1"]), parse_ports("-", "udp"))
    host = report.hosts[0]
    assert len(host.ports) == 65535
    opened = {p.port for p in host.ports if p.state == "open"}
    maybe = {p.port for p in host.ports if p.state == "open|filtered"}
    others = _others("127.0.0.1", udp=True)
    assert responders.answering["127.0.0.1"] <= opened and opened - responders.answering["127.0.0.1"] <= others
    assert responders.silent["127.0.0.1"] <= maybe and maybe - responders.silent["127.0.0.1"] <= others


@pytest.mark.skipif(not (have("nmap") and os.geteuid() == 0), reason="nmap -sU needs nmap and root")
def test_udp_agrees_withnmap_states(responders: _Responders) -> None:
    for address in ("127.0.0.1", "::1"):
        spec = ",".join(map(str, sorted(responders.answering[address] | responders.silent[address] | {1, 2})))
        ours = {p.port: p.state for p in scan(hosts([address]), parse_ports(spec, "udp")).hosts[0].ports}
        assert ours == nmap_states("-sU", address, spec)


def test_udp_payloads_reach_well_known_ports() -> None:
    """A DNS-port responder gets our DNS query (a valid header asking one question), not an empty datagram."""
    assert udp_payload(53)[4:6] == b"\x00\x01" and udp_payload(40000) == b""
    assert UDP_PAYLOADS[123][0] & 7 == 3  # NTP mode 3: client
    snmp = UDP_PAYLOADS[161]
    assert snmp[0] == 0x30 and snmp[1] == len(snmp) - 2 and b"public" in snmp
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.2", 53))
    except OSError:
        pytest.skip("127.0.0.2 port 53 is taken")
    got: list[bytes] = []

    def answer() -> None:
        data, peer = sock.recvfrom(512)
        got.append(data)
        sock.sendto(data[:2] + b"\x81\x80" + data[4:], peer)

    thread = threading.Thread(target=answer)
    thread.start()
    report = scan(hosts(["127.0.0.2"]), parse_ports("53", "udp"))
    thread.join(5)
    sock.close()
    assert got == [udp_payload(53)]
    assert [(p.state, p.service) for p in report.hosts[0].ports] == [("open", "domain")]


def test_mixed_protocols_from_the_command(responders: _Responders, tcp_listeners: dict[str, set[int]]) -> None:
    udp_port = min(responders.answering["127.0.0.1"])
    tcp_port = min(tcp_listeners["127.0.0.1"])
    result = sockscope("scan", "127.0.0.1", "-p", f"U:{udp_port},1,T:{tcp_port},1", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["scan"]["kind"] == "connect+udp" and document["scan"]["ports"] == 4
    host = document["hosts"][0]
    assert sorted((p["proto"], p["port"], p["state"]) for p in host["ports"]) == [("tcp", tcp_port, "open"), ("udp", udp_port, "open")]
    assert host["not_shown"] == {"closed": 2}
    table = sockscope("scan", "127.0.0.1", "-sU", "-p", f"{udp_port},1,2").stdout
    assert "Not shown: 2 closed udp ports (port-unreach)" in table and f"{udp_port}/udp" in table and "pong:" in table


def _talker(greeting: bytes | None, http: bool = False) -> tuple[socket.socket, threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _peer = server.accept()
            except OSError:
                return
            with conn:
                try:
                    if greeting:
                        conn.sendall(greeting)
                    if http and conn.recv(4096).startswith(b"GET / "):
                        conn.sendall(b"HTTP/1.0 200 OK\r\nServer: testd/1.2\r\nContent-Length: 2\r\n\r\nhi")
                    conn.recv(1)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_banners_name_services() -> None:
    ssh, _ = _talker(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    smtp, _ = _talker(b"220 mail.example ESMTP Postfix\r\n")
    web, _ = _talker(None, http=True)
    quiet, _ = _talker(None)
    ports = {sock.getsockname()[1]: name for sock, name in ((ssh, "ssh"), (smtp, "smtp"), (web, "http"), (quiet, None))}
    try:
        result = sockscope("scan", "127.0.0.1", "-p", ",".join(map(str, ports)), "--banner", "--banner-timeout", "1", "--json")
    finally:
        for sock in (ssh, smtp, web, quiet):
            sock.close()
    assert result.returncode == 0, result.stderr
    found = {p["port"]: p for p in json.loads(result.stdout)["hosts"][0]["ports"]}
    assert set(found) == set(ports)
    for port, name in ports.items():
        if name is not None:
            assert found[port]["service"] == name
    ssh_port, web_port, quiet_port = (next(p for p, n in ports.items() if n == want) for want in ("ssh", "http", None))
    assert found[ssh_port]["banner"] == "SSH-2.0-OpenSSH_9.2p1 Debian-2"
    assert found[web_port]["banner"] == "HTTP/1.0 200 OK (testd/1.2)"
    assert found[quiet_port]["banner"] is None


def test_identify() -> None:
    assert identify(b"SSH-2.0-dropbear\r\n") == ("ssh", "SSH-2.0-dropbear")
    assert identify(b"220 ProFTPD Server ready.\r\n") == ("ftp", "220 ProFTPD Server ready.")
    assert identify(b"+OK Dovecot ready.\r\n")[0] == "pop3" and identify(b"* OK [CAPABILITY] ready\r\n")[0] == "imap"
    assert identify(b"-ERR unknown command 'GET'\r\n")[0] == "redis"
    assert identify(b"J\x00\x00\x00\x0a8.0.36\x00rest")[0] == "mysql"
    assert identify(b"\x00\x01binary\x7f\x80") == (None, "..binary..")
    assert identify(b"\x12\x34\x81\x80\x00\x01\x00\x00", "udp") == (None, "[8 bytes]")
    assert identify(b"") == (None, "")


def test_async_face(tcp_listeners: dict[str, set[int]]) -> None:
    spec = ",".join(map(str, sorted(tcp_listeners["127.0.0.1"]))) + ",1-200"

    async def main() -> tuple[set[int], set[int], float]:
        report = await scan_async(hosts(["127.0.0.1"]), parse_ports(spec))
        streamed = {state.port async for _host, state in scan_iter(hosts(["127.0.0.1"]), parse_ports(spec)) if state.state == "open"}
        started = time.monotonic()
        slow = asyncio.ensure_future(scan_async(hosts(["127.0.0.1"]), parse_ports("-"), timing=None, workers=1))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return {p.port for p in report.hosts[0].ports if p.state == "open"}, streamed, time.monotonic() - started

    opened, streamed, cancel_seconds = asyncio.run(main())
    assert opened == streamed == tcp_listeners["127.0.0.1"]
    assert cancel_seconds < 1.0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_prints_what_was_found_and_exits_130(tcp_listeners: dict[str, set[int]], workers: str) -> None:
    """Interrupted after about 1.5 s at 200 ports/s: the listener (scanned first) and the closed ports heard so far are printed."""
    port = min(tcp_listeners["127.0.0.1"])
    process = subprocess.Popen(
        [sys.executable, "-m", "sockscope", "scan", "127.0.0.1", "-p", f"{port},1-65535", "--rate", "200", "--workers", workers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    assert process.returncode == ExitCode.INTERRUPTED
    assert f"{port}/tcp" in out and "open" in out and "interrupted" in err and "Traceback" not in err
    closed = int(out.split("Not shown: ")[1].split()[0])
    assert 100 <= closed <= 400, out
    footer = out.strip().splitlines()[-1]
    assert footer.startswith("Interrupted after ") and f"{closed + 1} of 65535 ports of 1 host probed" in footer, footer

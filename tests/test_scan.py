"""`sockscope scan`: the open set equals the listeners, every time; specs, targets, output; compared with nmap."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import have, sockscope
from sockscope.errors import ExitCode, UsageError
from sockscope.scan import hosts, parse_ports, scan, top_ports
from sockscope.scan.targets import expand


def _listen(family: int, address: str, port: int, backlog: int = 128) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


@pytest.fixture
def listeners() -> Iterator[dict[str, set[int]]]:
    """IPv4 listeners at ports outside and inside the ephemeral range (none ever accepts), and IPv6 ones."""
    made: list[socket.socket] = []
    v4: set[int] = set()
    v6: set[int] = set()
    for port in (0, 0, 0):  # kernel-chosen ports: inside the ephemeral range
        made.append(_listen(socket.AF_INET, "127.0.0.1", port))
        v4.add(made[-1].getsockname()[1])
    for port in (0, 0):
        made.append(_listen(socket.AF_INET6, "::1", port))
        v6.add(made[-1].getsockname()[1])
    yield {"127.0.0.1": v4, "::1": v6}
    for sock in made:
        sock.close()


def _others(address: str) -> set[int]:
    """Ports that other processes listen on right now (the test cannot own the whole host)."""
    flag = "-4" if ":" not in address else "-6"
    out = subprocess.run(["ss", "-Htln", flag], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        local = line.split()[3]
        host, _sep, port = local.rpartition(":")
        if host.strip("[]") in (address, "0.0.0.0", "*", "::", "[::]") or host.strip("[]") == address:
            found.add(int(port))
    return found


def test_open_set_is_exactly_the_listeners_every_run(listeners: dict[str, set[int]]) -> None:
    for _ in range(3):
        # other people's tests open and close listeners on this host meanwhile: those seen before or after count as theirs
        before = {address: _others(address) for address in listeners}
        report = scan(hosts(["127.0.0.1", "::1"]), parse_ports("-"))
        for host in report.hosts:
            others = before[host.address] | _others(host.address)
            opened = {p.port for p in host.ports if p.state == "open"}
            assert listeners[host.address] <= opened
            assert opened - listeners[host.address] <= others
            assert len(host.ports) == 65535 and {p.state for p in host.ports} <= {"open", "closed"}


def test_no_time_wait_and_no_descriptors_left(listeners: dict[str, set[int]]) -> None:
    ports = ",".join(str(p) for p in listeners["127.0.0.1"])
    before = len(os.listdir("/proc/self/fd"))
    scan(hosts(["127.0.0.1"]), parse_ports(ports + ",1-2000"))
    assert len(os.listdir("/proc/self/fd")) == before
    for port in listeners["127.0.0.1"]:
        waiting = subprocess.run(["ss", "-Htan", "state", "time-wait", f"dport = :{port}"], capture_output=True, text=True, check=True).stdout
        assert waiting.strip() == ""


@pytest.mark.skipif(not have("nmap"), reason="needs nmap")
def test_agrees_with_nmap(listeners: dict[str, set[int]]) -> None:
    ports = [*sorted(listeners["127.0.0.1"]), 1, 2, 3]
    spec = ",".join(map(str, ports))
    out = subprocess.run(["nmap", "-sT", "-n", "-Pn", "-p", spec, "127.0.0.1", "-oG", "-"], capture_output=True, text=True, check=True).stdout
    nmap_open = {int(item.split("/")[0]) for line in out.splitlines() if "Ports:" in line for item in line.split("Ports:")[1].split(",") if "/open/" in item}
    ours = {p.port for p in scan(hosts(["127.0.0.1"]), parse_ports(spec)).hosts[0].ports if p.state == "open"}
    assert ours == nmap_open == listeners["127.0.0.1"]


def test_command_json_and_table(listeners: dict[str, set[int]]) -> None:
    port = min(listeners["127.0.0.1"])
    result = sockscope("scan", "127.0.0.1", "-p", f"{port},1-3", "--json")
    document = json.loads(result.stdout)
    assert result.returncode == 0 and document["scan"]["ports"] == 4
    host = document["hosts"][0]
    assert [p["port"] for p in host["ports"]] == [port] and host["ports"][0]["reason"] == "syn-ack"
    assert host["not_shown"] == {"closed": 3}
    table = sockscope("scan", "127.0.0.1", "-p", f"{port},1-3").stdout
    assert "Not shown: 3 closed tcp ports (conn-refused)" in table and f"{port}/tcp" in table
    csv_out = sockscope("scan", "127.0.0.1", "-p", str(port), "--csv").stdout.splitlines()
    assert csv_out[0] == "host,port,proto,state,reason,service,banner" and csv_out[1].startswith(f"127.0.0.1,{port},tcp,open,syn-ack,")


@pytest.mark.parametrize(
    "args",
    [
        ["300.1.1.1"],
        ["127.0.0.1", "-p", "0"],
        ["127.0.0.1", "-p", "80-20"],
        ["127.0.0.1", "-p", "70000"],
        ["10.0.0.0/33"],
        [],
        ["127.0.0.1", "--top-ports", "0"],
    ],
)
def test_bad_targets_and_specs_exit_2_with_one_line(args: list[str]) -> None:
    result = sockscope("scan", *args)
    assert result.returncode == ExitCode.USAGE and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_port_specs() -> None:
    assert parse_ports("22,80,8000-8002") == [("tcp", 22), ("tcp", 80), ("tcp", 8000), ("tcp", 8001), ("tcp", 8002)]
    assert len(parse_ports("-")) == 65535 and parse_ports("-3") == [("tcp", 1), ("tcp", 2), ("tcp", 3)]
    assert parse_ports("U:53,T:22,25") == [("udp", 53), ("tcp", 22), ("tcp", 25)]
    assert parse_ports("22,22,21-22") == [("tcp", 22), ("tcp", 21)]
    assert len(top_ports(1000)) == 1000 and top_ports(3)[0] == ("tcp", 80)
    for bad in ("0", "80-20", "65536", "", "x-y", "1,,2"):
        with pytest.raises(UsageError):
            parse_ports(bad)


def test_targets() -> None:
    assert [h.address for h in expand("10.0.0.1-3")] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert len(expand("192.168.1.0/24")) == 254 and expand("127.0.0.1/32")[0].address == "127.0.0.1"
    assert expand("[::1]")[0].address == "::1"
    assert [h.address for h in hosts(["10.0.0.0/30", "10.0.0.1"], ["10.0.0.2"])] == ["10.0.0.1"]
    for bad in ("300.1.1.1", "10.0.0.5-1", "1.2.3.4/40", "::g"):
        with pytest.raises(UsageError):
            expand(bad)


def test_hyphenated_service_names_are_names_not_ranges() -> None:
    assert parse_ports("http-alt") == [("tcp", 8080)]
    assert parse_ports("http-alt,8000-8001,-2") == [("tcp", 8080), ("tcp", 8000), ("tcp", 8001), ("tcp", 1), ("tcp", 2)]
    with pytest.raises(UsageError, match="neither a port nor"):
        parse_ports("no-such-service")


def test_one_unresolvable_host_among_several_is_skipped_with_a_warning(listeners: dict[str, set[int]]) -> None:
    port = min(listeners["127.0.0.1"])
    result = sockscope("scan", "no-such-host.invalid", "127.0.0.1", "-p", str(port))
    assert result.returncode == ExitCode.USAGE
    assert f"{port}/tcp" in result.stdout and "open" in result.stdout
    assert "cannot resolve host 'no-such-host.invalid'" in result.stderr and "Traceback" not in result.stderr
    alone = sockscope("scan", "no-such-host.invalid", "-p", str(port))
    assert alone.returncode == ExitCode.USAGE and alone.stdout == "" and len(alone.stderr.strip().splitlines()) == 1


def test_footer_counts_in_words(listeners: dict[str, set[int]]) -> None:
    port = min(listeners["127.0.0.1"])
    assert "Scanned 1 host, 1 port each (connect)" in sockscope("scan", "127.0.0.1", "-p", str(port)).stdout
    assert "Scanned 1 host, 2 ports each (connect)" in sockscope("scan", "127.0.0.1", "-p", f"{port},1").stdout


HOLDER = """
import socket, sys, time
address, backlog = sys.argv[1], int(sys.argv[2])
if address == "dual":
    sock = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True, backlog=backlog)
else:
    sock = socket.create_server((address, 0), family=socket.AF_INET6 if ":" in address else socket.AF_INET, backlog=backlog)
print(sock.getsockname()[1], flush=True)
time.sleep(60)  # never accepts
"""


@pytest.fixture
def holder() -> Iterator[Callable[[str, int], tuple[int, int]]]:
    """Start a process that listens on ADDRESS with BACKLOG and never accepts; give (port, pid)."""
    started: list[subprocess.Popen[str]] = []

    def start(address: str, backlog: int) -> tuple[int, int]:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, address, str(backlog)], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout is not None
        return int(process.stdout.readline()), process.pid

    yield start
    for process in started:
        process.kill()
        process.communicate()


def _global_address() -> str | None:
    """An IPv4 address of one of this host's interfaces other than loopback, if it has one."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True, check=False).stdout
    words = out.split()
    return words[words.index("inet") + 1].split("/")[0] if "inet" in words else None


def test_full_accept_queue_of_this_host_is_open_and_names_its_process(holder: Callable[[str, int], tuple[int, int]]) -> None:
    port, pid = holder("127.0.0.1", 1)
    for attempt in range(4):  # a backlog-1 listener is full after two connects; scans keep saying open
        started = time.monotonic()
        result = sockscope("scan", "127.0.0.1", "-p", str(port), "--json")
        seconds = time.monotonic() - started
        (found,) = json.loads(result.stdout)["hosts"][0]["ports"]
        assert (found["state"], found["process"]) == ("open", {"pid": pid, "name": "python3", "user": pwd.getpwuid(os.geteuid()).pw_name})
        if attempt >= 2:
            assert found["reason"] == "accept-queue-full" and seconds < 1.0, (found, seconds)
    assert result.returncode == ExitCode.OK
    table = sockscope("scan", "127.0.0.1", "-p", str(port)).stdout
    assert any(line.split()[:2] == [f"{port}/tcp", "open"] and line.endswith(f"python3 (pid {pid})") for line in table.splitlines()), table


def test_dual_stack_listener_behind_every_local_address(holder: Callable[[str, int], tuple[int, int]]) -> None:
    port, pid = holder("dual", 1)
    addresses = ["127.0.0.1", "::1", *filter(None, [_global_address()])]
    for _ in range(3):
        report = scan(hosts(addresses), parse_ports(str(port)))
    for host in report.hosts:
        (found,) = host.ports
        assert found.state == "open" and found.process is not None and found.process.pid == pid, (host.address, found)


def test_a_remote_looking_silence_stays_filtered_without_a_listener() -> None:
    # nothing listens on 127.0.0.1:1, and 192.0.2.250 (TEST-NET) is not this host: no process, no guess
    report = scan(hosts(["127.0.0.1"]), parse_ports("1"))
    assert report.hosts[0].ports[0][:4] == (1, "tcp", "closed", "conn-refused") and report.hosts[0].ports[0].process is None

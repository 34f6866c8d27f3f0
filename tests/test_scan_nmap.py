"""`sockscope scan` takes nmap's habits: its flags, and -oX / -oG files that nmap's own tools read."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from conftest import have, sockscope
from sockscope.errors import ExitCode

SERVER = """
import socket, sys, time
held = [socket.create_server(("127.0.0.1", 0), backlog=128) for _ in range(3)]
print(" ".join(str(s.getsockname()[1]) for s in held), flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def listening() -> Iterator[list[int]]:
    """Three ports of 127.0.0.1 held by another process (so the scan can name it)."""
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ports = [int(word) for word in process.stdout.readline().split()]
    yield ports
    process.kill()
    process.communicate()


def _spec(ports: list[int]) -> str:
    return ",".join(map(str, ports)) + ",1-40"  # 40 closed ports: more than nmap lists one by one


def _grepable_states(text: str) -> dict[int, str]:
    states = {}
    for line in text.splitlines():
        if "Ports:" in line:
            for item in line.split("Ports: ")[1].split("\t")[0].split(", "):
                fields = item.split("/")
                states[int(fields[0])] = fields[1]
    return states


@pytest.mark.skipif(not (have("nmap") and have("ndiff") and have("xmllint")), reason="needs nmap, ndiff and xmllint (libxml2-utils)")
def test_xml_is_valid_and_ndiff_sees_no_port_differences(listening: list[int], tmp_path: object) -> None:
    ours, theirs = os.path.join(str(tmp_path), "ours.xml"), os.path.join(str(tmp_path), "theirs.xml")
    result = sockscope("scan", "127.0.0.1", "-p", _spec(listening), "-oX", ours)
    assert result.returncode == ExitCode.OK and "Scanned 1 host" in result.stdout  # the table still goes to the terminal
    subprocess.run(["nmap", "-sT", "-n", "-Pn", "-p", _spec(listening), "127.0.0.1", "-oX", theirs], capture_output=True, check=True)
    valid = subprocess.run(["xmllint", "--noout", "--dtdvalid", "/usr/share/nmap/nmap.dtd", ours], capture_output=True, text=True, check=False)
    assert valid.returncode == 0, valid.stderr
    diff = subprocess.run(["ndiff", theirs, ours], capture_output=True, text=True, check=False).stdout
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and ("/tcp" in line or "Not shown" in line)]
    assert changed == [], diff
    with open(ours, encoding="utf-8") as handle:
        text = handle.read()
    assert f'portid="{listening[0]}"><state state="open" reason="syn-ack" reason_ttl="0"/><owner name="python3"/>' in text


@pytest.mark.skipif(not have("nmap"), reason="needs nmap")
def test_grepable_output_matches_nmaps(listening: list[int], tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "ours.gnmap")
    assert sockscope("scan", "127.0.0.1", "-p", _spec(listening), "-oG", path).returncode == ExitCode.OK
    nmap = subprocess.run(["nmap", "-sT", "-n", "-Pn", "-p", _spec(listening), "127.0.0.1", "-oG", "-"], capture_output=True, text=True, check=True)
    with open(path, encoding="utf-8") as handle:
        ours = handle.read()
    assert _grepable_states(ours) == _grepable_states(nmap.stdout) == dict.fromkeys(listening, "open")
    assert "Ignored State: closed (40)" in ours and "Ignored State: closed (40)" in nmap.stdout
    to_stdout = sockscope("scan", "127.0.0.1", "-p", _spec(listening), "-oG", "-").stdout
    assert to_stdout.startswith("# sockscope ") and "Scanned" not in to_stdout and _grepable_states(to_stdout) == dict.fromkeys(listening, "open")


def test_unwritable_output_file_is_one_line() -> None:
    result = sockscope("scan", "127.0.0.1", "-p", "1", "-oX", "/nonexistent/dir/out.xml")
    assert result.returncode == ExitCode.RUNTIME and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_nmap_flags_are_accepted(listening: list[int]) -> None:
    port = str(listening[0])
    for flags in (["-Pn", "-n"], ["--open"], ["-T4"], ["-T", "insane"], ["-T5", "-Pn", "-n", "--open"]):
        result = sockscope("scan", "127.0.0.1", "-p", f"{port},1", *flags, "--json")
        assert result.returncode == ExitCode.OK, (flags, result.stderr)
        assert [p["port"] for p in json.loads(result.stdout)["hosts"][0]["ports"]] == [int(port)], flags
    paranoid = sockscope("scan", "127.0.0.1", "-p", port, "-T0", "--json")  # one probe: the first goes at once
    assert paranoid.returncode == ExitCode.OK and json.loads(paranoid.stdout)["hosts"][0]["ports"][0]["state"] == "open"
    assert sockscope("scan", "127.0.0.1", "-p", port, "-T9").returncode == ExitCode.USAGE


def test_fast_is_the_top_100(listening: list[int]) -> None:
    document = json.loads(sockscope("scan", "127.0.0.1", "-F", "--json").stdout)
    assert document["scan"]["ports"] == 100
    both = sockscope("scan", "127.0.0.1", "-F", "-p", "22")
    assert both.returncode == ExitCode.USAGE and "exclude each other" in both.stderr


def test_verbose_shows_the_reason(listening: list[int]) -> None:
    out = sockscope("scan", "127.0.0.1", "-p", str(listening[0]), "-v").stdout
    header, row = out.splitlines()[1:3]
    assert header.split()[:4] == ["PORT", "STATE", "REASON", "SERVICE"] and row.split()[:3] == [f"{listening[0]}/tcp", "open", "syn-ack"]


def test_six_takes_ipv6_names_and_refuses_ipv4() -> None:
    refused = sockscope("scan", "-6", "127.0.0.1", "-p", "1")
    assert refused.returncode == ExitCode.USAGE and "IPv4" in refused.stderr
    server = socket.socket(socket.AF_INET6)
    server.bind(("::1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        result = sockscope("scan", "-6", "localhost", "-p", str(port), "--json")
    finally:
        server.close()
    if result.returncode == ExitCode.USAGE and "cannot resolve" in result.stderr:
        pytest.skip("localhost has no IPv6 address here")
    host = json.loads(result.stdout)["hosts"][0]
    assert host["address"] == "::1" and host["ports"][0]["state"] == "open"


def test_sv_reads_banners_as_banner_does() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _peer = server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # the scan's own connect is reset at once
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        banner = json.loads(sockscope("scan", "127.0.0.1", "-p", str(port), "-sV", "--json", "--banner-timeout", "1").stdout)
    finally:
        server.close()
    (found,) = banner["hosts"][0]["ports"]
    assert (found["service"], found["banner"]) == ("ssh", "SSH-2.0-OpenSSH_9.2p1")

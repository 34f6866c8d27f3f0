"""What people type out of nc habit works with `connect` and `listen`, or gets one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import have, sockscope, sockscope_bytes
from serving import port, serving
from sockscope.errors import ExitCode
from test_connect import _wait_port

SOCKSCOPE = [sys.executable, "-m", "sockscope"]


def _services_file(tmp_path: object, name: str, number: int) -> dict[str, str]:
    path = os.path.join(str(tmp_path), "services")
    with open(path, "w") as handle:
        handle.write(f"{name}\t{number}/tcp\t\tbridge-alias\n")
    return dict(os.environ, SOCKSCOPE_SERVICES=path)


def test_host_and_port_as_two_words_and_service_names_as_ports(tmp_path: object) -> None:
    p = port()
    env = _services_file(tmp_path, "bridgetest", p)
    with serving(str(p), "--mode", "echo"):
        for target in (
            ["127.0.0.1", str(p)],
            ["127.0.0.1", "bridgetest"],
            ["127.0.0.1:bridgetest"],
            ["127.0.0.1", "bridge-alias"],
            ["-N", "-n", "127.0.0.1", str(p)],
        ):
            result = subprocess.run(
                [sys.executable, "-m", "sockscope", "connect", *target], input=b"echo me\n", capture_output=True, env=env, timeout=20, check=False
            )
            assert result.returncode == 0 and result.stdout == b"echo me\n", (target, result.stderr)
        checked = subprocess.run(
            [sys.executable, "-m", "sockscope", "connect", "-z", "127.0.0.1", "bridgetest"], capture_output=True, env=env, timeout=20, check=False
        )
    assert checked.returncode == 0 and f"127.0.0.1:{p} open".encode() in checked.stdout


def test_v_says_where_it_connected_and_what_moved() -> None:
    p = port()
    with serving(str(p), "--mode", "echo"):
        result = sockscope_bytes("connect", "-v", "127.0.0.1", str(p), data=b"12345", timeout=20)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 0 and lines[0].startswith("sockscope: connected 127.0.0.1:") and lines[0].endswith(f"-> 127.0.0.1:{p}")
    assert lines[1] == "sockscope: both sides finished; 5 bytes sent, 5 received"


def test_zero_io_over_a_range() -> None:
    p = port()
    with serving(str(p), "--mode", "echo"):
        result = sockscope("connect", "-z", "127.0.0.1", f"{p - 1}-{p + 1}")
    assert result.returncode == ExitCode.NOTHING_FOUND  # two of the three are closed
    assert f"127.0.0.1:{p} open" in result.stdout and f"127.0.0.1:{p + 1} closed" in result.stdout and len(result.stdout.splitlines()) == 3


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_U_path_is_a_unix_socket(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "u.sock")
    peer = subprocess.Popen(["socat", f"UNIX-LISTEN:{path}", "SYSTEM:'tr a-z A-Z'"])
    try:
        end = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < end:
            time.sleep(0.05)
        result = sockscope_bytes("connect", "-U", path, data=b"unix\n", timeout=20)
        assert result.returncode == 0 and result.stdout == b"UNIX\n", result.stderr
    finally:
        peer.kill()
        peer.wait()


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
@pytest.mark.parametrize("spelling", [["-l", "-p", "{}"], ["-l", "{}"], ["{}"], ["-p", "{}"], ["127.0.0.1", "{}"], ["-l", "127.0.0.1:{}"]])
def test_listen_takes_nc_spellings(spelling: list[str]) -> None:
    p = port()
    listener = subprocess.Popen(
        [sys.executable, "-m", "sockscope", "listen", *[w.format(p) for w in spelling]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_port(p)
        subprocess.run(["nc", "-N", "127.0.0.1", str(p)], input=b"hello listener\n", check=True, timeout=10)
        out, err = listener.communicate(timeout=10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert listener.returncode == 0 and out == b"hello listener\n", err


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_listen_U_takes_an_nc_U_client(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "l.sock")
    listener = subprocess.Popen([sys.executable, "-m", "sockscope", "listen", "-U", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        end = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < end:
            time.sleep(0.05)
        subprocess.run(["nc", "-N", "-U", path], input=b"over unix\n", check=True, timeout=10)
        out, _ = listener.communicate(timeout=10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert out == b"over unix\n" and not os.path.exists(path)


BAD = [
    ["connect", "127.0.0.1", "0"],
    ["connect", "127.0.0.1", "70000"],
    ["connect", "127.0.0.1", "abc"],
    ["connect", "127.0.0.1:0"],
    ["connect", "127.0.0.1:70000"],
    ["connect", "127.0.0.1:abc"],
    ["connect", "127.0.0.1:80", "81"],
    ["connect", "127.0.0.1", "80", "81"],
    ["connect", "-z", "127.0.0.1", "abc"],
    ["connect", "-z", "127.0.0.1", "0-10"],
    ["connect", "-n", "localhost", "80"],
    ["connect", "-l", "8000"],
    ["connect", "-N", "--no-shutdown", "127.0.0.1:80"],
    ["listen", "0"],
    ["listen", "70000"],
    ["listen", "abc"],
    ["listen", "-p", "abc"],
    ["listen", "-p", "8000", "127.0.0.1:8001"],
    ["listen"],
]


@pytest.mark.parametrize("args", BAD, ids=" ".join)
def test_bad_ports_and_spellings_get_one_line_and_exit_2(args: list[str]) -> None:
    result = sockscope(*args)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr and result.stderr.startswith("sockscope: ")


def test_the_one_line_says_what_to_do() -> None:
    assert "-n looks no names up" in sockscope("connect", "-n", "localhost", "80").stderr
    assert "sockscope listen" in sockscope("connect", "-l", "8000").stderr
    assert "service name" in sockscope("connect", "127.0.0.1", "abc").stderr
    assert "1-65535" in sockscope("listen", "70000").stderr


def test_an_ipv6_host_beside_its_port_needs_no_brackets() -> None:
    p = port()
    listener = subprocess.Popen([*SOCKSCOPE, "listen", "-n", "::1", str(p)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_port(p)
        result = sockscope_bytes("connect", "-v", "-n", "::1", str(p), data=b"six\n", timeout=20)
        out, err = listener.communicate(timeout=10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert result.returncode == 0 and f"-> [::1]:{p}".encode() in result.stderr
    assert listener.returncode == 0 and out == b"six\n", err

"""The bridge of `connect` and `listen` loses no byte: 10 MB each way against itself, nc and ncat, in every order."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from fcntl import ioctl

import pytest

from conftest import have
from serving import port, serving
from test_connect import _wait_port

SOCKSCOPE = [sys.executable, "-m", "sockscope"]
SIZE = 10 * 1000 * 1000


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two different 10 MB random files and /dev/null, by name."""
    folder = tmp_path_factory.mktemp("payloads")
    files = {"null": os.devnull}
    for name in ("a", "b"):
        path = str(folder / f"{name}.bin")
        with open(path, "wb") as handle:
            handle.write(os.urandom(SIZE))
        files[name] = path
    yield files
    for name in ("a", "b"):
        os.unlink(files[name])


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


LISTENERS = {
    "sockscope": [*SOCKSCOPE, "listen", "{port}"],
    "nc": ["nc", "-N", "-l", "127.0.0.1", "{port}"],
    "ncat": ["ncat", "-l", "127.0.0.1", "{port}"],
}
CLIENTS = {
    "sockscope": [*SOCKSCOPE, "connect", "127.0.0.1:{port}"],
    "nc": ["nc", "-N", "127.0.0.1", "{port}"],
    "ncat": ["ncat", "127.0.0.1", "{port}"],
}
PAIRS = [("sockscope", "sockscope"), ("nc", "sockscope"), ("ncat", "sockscope"), ("sockscope", "nc"), ("sockscope", "ncat")]
# (what the listener sends, what the client sends): one way, the other way, both at once
FLOWS = [("a", "null"), ("null", "a"), ("a", "b")]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"listener-sends-{f[0]}-client-sends-{f[1]}")
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-listens-{p[1]}-connects")
def test_10_mb_arrive_byte_exact_whichever_side_finishes_first(
    pair: tuple[str, str], flow: tuple[str, str], payloads: dict[str, str], tmp_path: object
) -> None:
    listener_tool, client_tool = pair
    for tool in pair:
        if tool != "sockscope" and not have(tool):
            pytest.skip(f"needs {tool}")
    p = port()
    outputs = {side: os.path.join(str(tmp_path), f"{side}.out") for side in ("listener", "client")}
    commands = {
        "listener": [word.format(port=p) for word in LISTENERS[listener_tool]],
        "client": [word.format(port=p) for word in CLIENTS[client_tool]],
    }
    sends = {"listener": payloads[flow[0]], "client": payloads[flow[1]]}
    for side, other in (("listener", "client"), ("client", "listener")):
        # nc and ncat stop sending once they read EOF (to each other as well): whoever faces a
        # sending one must not half-close first; their own shutdown on input EOF then ends it
        if pair[side == "client"] == "sockscope" and pair[other == "client"] != "sockscope" and sends[other] != os.devnull:
            commands[side].append("--no-shutdown")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for side in ("listener", "client"):
            with open(sends[side], "rb") as stdin, open(outputs[side], "wb") as stdout:
                processes[side] = subprocess.Popen(commands[side], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
            if side == "listener":
                _wait_port(p)
        codes = {side: process.wait(30) for side, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stderr:
                process.stderr.close()
    got = {side: os.path.getsize(path) for side, path in outputs.items()}
    assert _digest(outputs["client"]) == _digest(sends["listener"]), f"{listener_tool} -> {client_tool}: {got}"
    assert _digest(outputs["listener"]) == _digest(sends["client"]), f"{client_tool} -> {listener_tool}: {got}"
    for side, tool in (("listener", listener_tool), ("client", client_tool)):
        if tool == "sockscope":
            assert codes[side] == 0, side


def _reset_after_sending(server: socket.socket, size: int, read_all: bool) -> threading.Thread:
    """Accept once, (read everything,) send `size` bytes, wait for our peer's ACK of them, then reset."""

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            if read_all:
                while conn.recv(1 << 16):
                    pass
            conn.sendall(bytes(range(256)) * (size // 256))
            end = time.monotonic() + 5
            while struct.unpack("i", ioctl(conn, termios.TIOCOUTQ, b"\0" * 4))[0] and time.monotonic() < end:
                time.sleep(0.01)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("read_all", [False, True], ids=["peer-reads-nothing", "peer-reads-all"])
def test_what_the_peer_sent_before_a_reset_all_reaches_stdout_even_when_stdout_is_slow(read_all: bool, payloads: dict[str, str]) -> None:
    size = 512 * 1024
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        thread = _reset_after_sending(server, size, read_all)
        stdin = payloads["a"] if read_all else os.devnull
        with open(stdin, "rb") as source:
            proc = subprocess.Popen(
                [*SOCKSCOPE, "connect", "-v", f"127.0.0.1:{server.getsockname()[1]}"], stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        time.sleep(1.0)  # nobody reads our stdout meanwhile: the reset comes while data waits for it
        out, err = proc.communicate(timeout=30)
        thread.join(10)
    assert out == bytes(range(256)) * (size // 256)
    assert proc.returncode == 0, err
    assert b"reset" in err and b"Traceback" not in err


def test_a_reset_while_input_is_left_is_exit_1_with_the_count_and_the_data_still_arrives(payloads: dict[str, str]) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        thread = _reset_after_sending(server, 64 * 1024, read_all=False)
        with open(payloads["a"], "rb") as source:
            result = subprocess.run([*SOCKSCOPE, "connect", f"127.0.0.1:{server.getsockname()[1]}"], stdin=source, capture_output=True, timeout=30, check=False)
        thread.join(10)
    assert result.stdout == bytes(range(256)) * 256
    assert result.returncode == 1
    line = result.stderr.decode().strip()
    assert len(line.splitlines()) == 1 and "reset" in line and "bytes of input not delivered" in line
    assert 0 < int(line.split(": ")[-1].split()[0]) <= SIZE


def test_a_peer_that_never_reads_ends_with_w_and_the_undelivered_count() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        result = subprocess.run(
            [*SOCKSCOPE, "connect", "-w", "1", f"127.0.0.1:{server.getsockname()[1]}"],
            input=b"x" * (8 << 20),
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert b"idle for 1s" in result.stderr and b"not delivered" in result.stderr


def test_send_only_delivers_everything_to_a_peer_that_echoes_it_back(payloads: dict[str, str]) -> None:
    p = port()
    with serving(str(p), "--mode", "echo") as served, open(payloads["a"], "rb") as source:
        result = subprocess.run([*SOCKSCOPE, "connect", "--send-only", f"127.0.0.1:{p}"], stdin=source, capture_output=True, timeout=30, check=False)
        assert result.returncode == 0 and result.stdout == b"", result.stderr
        left = served.wait_for("close")
    assert left["received"] == SIZE


def test_stdout_closed_early_is_quiet_when_nothing_was_lost_and_one_line_when_input_was(payloads: dict[str, str]) -> None:
    p = port()
    with serving(str(p), "--mode", "echo"):
        echoed = subprocess.run(
            f"printf 'hello world\\n' | {sys.executable} -m sockscope connect 127.0.0.1:{p} | head -c 5; echo \" ${{PIPESTATUS[1]}}\" >&2",
            shell=True,
            executable="/bin/bash",
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert echoed.stdout == b"hello" and echoed.stderr.strip() == b"0"
        lost = subprocess.run(
            f'{sys.executable} -m sockscope connect 127.0.0.1:{p} < {payloads["a"]} | head -c 10 >/dev/null; echo " ${{PIPESTATUS[0]}}" >&2',
            shell=True,
            executable="/bin/bash",
            capture_output=True,
            timeout=30,
            check=False,
        )
    lines = lost.stderr.decode().strip().splitlines()
    assert "Traceback" not in lost.stderr.decode()
    assert len(lines) == 2 and "standard output was closed" in lines[0] and "not delivered" in lines[0] and lines[1].strip() == "1"


def _udp_receiver(family: int, host: str) -> tuple[socket.socket, list[bytes], threading.Thread]:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    got: list[bytes] = []

    def run() -> None:
        with contextlib.suppress(TimeoutError, OSError):
            while len(got) < 2:
                got.append(sock.recv(1 << 17))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return sock, got, thread


@pytest.mark.parametrize(
    ("family", "host", "target", "first"), [(socket.AF_INET, "127.0.0.1", "udp://127.0.0.1:{}", 65507), (socket.AF_INET6, "::1", "udp://[::1]:{}", 65527)]
)
def test_a_100000_byte_input_read_goes_as_two_whole_datagrams(family: int, host: str, target: str, first: int, tmp_path: object) -> None:
    if not socket.has_ipv6 and family == socket.AF_INET6:
        pytest.skip("no IPv6")
    data = os.urandom(100_000)
    path = os.path.join(str(tmp_path), "in.bin")
    with open(path, "wb") as handle:
        handle.write(data)  # a file, so that one read gives all 100,000 bytes
    receiver, got, thread = _udp_receiver(family, host)
    with receiver, open(path, "rb") as stdin:
        result = subprocess.run(
            [*SOCKSCOPE, "connect", "-q", "0", target.format(receiver.getsockname()[1])], stdin=stdin, capture_output=True, timeout=30, check=False
        )
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert [len(d) for d in got] == [first, 100_000 - first] and b"".join(got) == data


@pytest.mark.parametrize("spelling", [["udp://127.0.0.1:{}"], ["-u", "127.0.0.1:{}"], ["-u", "127.0.0.1", "{}"]])
def test_udp_ends_2_seconds_after_input_eof_however_it_is_spelled(spelling: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        started = time.monotonic()
        result = subprocess.run(
            [*SOCKSCOPE, "connect", *[w.format(receiver.getsockname()[1]) for w in spelling]], input=b"ping\n", capture_output=True, timeout=30, check=False
        )
        took = time.monotonic() - started
        receiver.settimeout(1)
        assert receiver.recv(100) == b"ping\n"
    assert result.returncode == 0 and 1.9 < took < 5, (result.stderr, took)


def test_a_big_read_to_a_unix_datagram_socket_is_cut_to_its_limit_and_arrives_in_order(tmp_path: object) -> None:
    data = os.urandom(600_000)
    path = os.path.join(str(tmp_path), "in.bin")
    with open(path, "wb") as handle:
        handle.write(data)
    address = os.path.join(str(tmp_path), "d.sock")
    got = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(address)
        receiver.settimeout(5)

        def run() -> None:
            with contextlib.suppress(TimeoutError):
                while len(got) < len(data):
                    got.extend(receiver.recv(1 << 20))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        with open(path, "rb") as stdin:
            result = subprocess.run([*SOCKSCOPE, "connect", "-q", "0", f"unix-dgram:{address}"], stdin=stdin, capture_output=True, timeout=30, check=False)
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert bytes(got) == data


def test_odd_standard_streams_a_full_disk_a_closed_stdin_and_a_stdout_nobody_drains(payloads: dict[str, str]) -> None:
    p = port()
    with serving(str(p), "--mode", "echo"):
        with open("/dev/full", "wb") as full:
            result = subprocess.run([*SOCKSCOPE, "connect", f"127.0.0.1:{p}"], input=b"echo\n", stdout=full, stderr=subprocess.PIPE, timeout=20, check=False)
        assert result.returncode == 5 and result.stderr == b"sockscope: writing standard output failed: No space left on device\n"
        # a closed stdin is empty input, not the socket that would take its descriptor
        closed = subprocess.run(f"{sys.executable} -m sockscope connect -v 127.0.0.1:{p} <&-", shell=True, capture_output=True, timeout=20, check=False)
        assert closed.returncode == 0 and b"0 bytes sent, 0 received" in closed.stderr
        with open(payloads["a"], "rb") as source:
            stuck = subprocess.Popen([*SOCKSCOPE, "connect", "-w", "1", f"127.0.0.1:{p}"], stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            started = time.monotonic()
            assert stuck.stderr is not None and stuck.stdout is not None
            err = stuck.stderr.read()  # stdout is never read: the echo fills it
            code = stuck.wait(10)
            took = time.monotonic() - started
            stuck.stdout.close()
            stuck.stderr.close()
    # the kernel and the pipe may hold all 10 MB: then what is lost is what nobody read
    assert code == 1 and took < 5 and b"idle for 1s" in err and (b"of input not delivered" in err or b"not written out" in err), err


def test_with_a_terminal_on_stdin_the_session_ends_when_the_peer_closes() -> None:
    primary, secondary = os.openpty()
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            proc = subprocess.Popen([*SOCKSCOPE, "connect", f"127.0.0.1:{server.getsockname()[1]}"], stdin=secondary, stdout=subprocess.PIPE)
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"bye\n")
            try:
                out, _ = proc.communicate(timeout=10)  # nobody types: only the peer's close can end it
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 0 and out == b"bye\n"

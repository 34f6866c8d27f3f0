"""Port tasks with real processes: who, kill, close, free, wait, services."""

from __future__ import annotations

import contextlib
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

from conftest import IS_ROOT, needs_root, sockscope
from sockscope.errors import ExitCode, UsageError
from sockscope.inventory import owners
from sockscope.ports import free, kill, who

HERE = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def listening(kind: str, *flags: str) -> Iterator[tuple[int, int, int]]:
    """Start tests/listener.py; give (port, pid, child pid or 0); stop it (and its child) afterwards."""
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "listener.py"), kind, *flags], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port, pid, child = map(int, proc.stdout.readline().split())
    try:
        yield port, pid, child
    finally:
        for victim in (child, pid):
            if victim:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        if child:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def who_json(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = sockscope("who", *args, "--json")
    return result.returncode, json.loads(result.stdout)


# ---------------------------------------------------------------- who


def test_who_finds_the_listener_with_its_pid_and_details() -> None:
    with listening("tcp4") as (port, pid, _):
        code, answer = who_json(str(port))
        assert code == ExitCode.OK
        assert answer["query"] == str(port)
        assert [p["pid"] for p in answer["processes"]] == [pid]
        process = answer["processes"][0]
        assert process["listening"] == [f"127.0.0.1:{port}"] and process["connections"] == 0
        assert process["command"][1].endswith("listener.py") and process["user"] == ("root" if IS_ROOT else process["user"])
        assert process["started"] is not None
        assert answer["sockets"][0]["owners"][0]["pid"] == pid and answer["sockets"][0]["state"] == "LISTEN"
        text = sockscope("who", f":{port}").stdout
        assert f"pid {pid}" in text and "listener.py" in text


def test_who_counts_connections_and_exits_1_when_free() -> None:
    with listening("tcp4") as (port, pid, _):
        client = socket.create_connection(("127.0.0.1", port))
        time.sleep(0.1)  # the kernel completes the handshake; the listener never accepts
        code, answer = who_json(str(port))
        client.close()
        assert code == 0
    # nothing is accepted, so the connection sits in the backlog: no process holds it yet
    assert answer["processes"][0]["pid"] == pid
    free_port = free.free_ports(1)[0]
    result = sockscope("who", str(free_port))
    assert result.returncode == ExitCode.NOTHING_FOUND and "free" in result.stdout


def test_who_lists_both_processes_after_fork() -> None:
    with listening("tcp4", "--fork") as (port, pid, child):
        code, answer = who_json(str(port))
        assert code == 0
        assert sorted(p["pid"] for p in answer["processes"]) == sorted([pid, child])
        assert sorted(o["pid"] for o in answer["sockets"][0]["owners"]) == sorted([pid, child])


@pytest.mark.parametrize("kind", ["tcp6only", "dual"])
def test_who_finds_ipv6_only_and_dual_stack_listeners(kind: str) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    with listening(kind) as (port, pid, _):
        code, answer = who_json(str(port))
        assert code == 0 and [p["pid"] for p in answer["processes"]] == [pid]
        assert answer["sockets"][0]["family"] == "inet6"
        assert answer["processes"][0]["listening"] == [f"[{'::1' if kind == 'tcp6only' else '::'}]:{port}"]


def test_who_udp_and_unix_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with listening("udp4") as (port, pid, _):
        code, answer = who_json(str(port), "--udp")
        assert code == 0 and [p["pid"] for p in answer["processes"]] == [pid]
        _code, tcp = who_json(str(port))  # as a TCP port it is not ours (others may use the number)
        assert pid not in [p["pid"] for p in tcp["processes"]]
    path = str(tmp_path / "app with space.sock")
    with listening(f"unix:{path}") as (_, pid, _child):
        code, answer = who_json(path)
        assert code == 0 and [p["pid"] for p in answer["processes"]] == [pid]
        assert answer["processes"][0]["listening"] == [path]


def test_find_holders_agrees_with_a_full_scan() -> None:
    with listening("tcp4", "--fork") as (port, _pid, _child):
        sockets = who.sockets_of(who.Target(str(port), port=port))
        wanted = {s.inode for s in sockets}
        quick = owners.find_holders(wanted)
        full = owners.scan(wanted=wanted)
        assert quick.holders == full.holders and len(next(iter(quick.holders.values()))) == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [("0", "out of range"), ("70000", "out of range"), ("abc", "neither a port"), (":", "neither a port"), ("unix:", "path is empty")],
)
def test_who_bad_input_is_one_line_and_exit_2(query: str, message: str) -> None:
    result = sockscope("who", query)
    assert result.returncode == ExitCode.USAGE
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_port_targets_as_fuser_and_ss_write_them() -> None:
    assert who.parse_target("8080/tcp") == who.Target("8080/tcp", port=8080, proto="tcp")
    assert who.parse_target(":53/UDP") == who.Target(":53/UDP", port=53, proto="udp")
    assert who.parse_target("8080").is_udp(True) and not who.parse_target("8080/tcp").is_udp(True)
    assert who.parse_target("53/udp").is_udp(False)
    for bad in ("8080/xyz", "8080/", "/tcp", "0/tcp", "65536/udp"):
        with pytest.raises(UsageError):
            who.parse_port_target(bad)


def test_who_missing_path_says_so() -> None:
    result = sockscope("who", "/nonexistent/dir/x.sock")
    assert result.returncode == ExitCode.NOTHING_FOUND and "no such file" in result.stdout


# ---------------------------------------------------------------- kill


def test_kill_frees_the_port_and_spares_a_child_that_closed_it() -> None:
    with listening("tcp4", "--fork", "--child-closes") as (port, pid, child):
        result = sockscope("kill", str(port), "--yes")
        assert result.returncode == ExitCode.OK, result.stderr
        assert f"port {port}/tcp is free" in result.stdout
        time.sleep(0.1)
        assert not alive(pid)
        assert alive(child), "a process that no longer holds the port must not be signalled"
        assert free.bindable(port, host="127.0.0.1")


def test_kill_escalates_to_sigkill_after_the_timeout() -> None:
    with listening("tcp4", "--ignore-term") as (port, pid, _):
        started = time.monotonic()
        result = sockscope("kill", str(port), "--yes", "--timeout", "0.5")
        assert result.returncode == ExitCode.OK, result.stderr
        assert "SIGKILL" in result.stderr and time.monotonic() - started < 10
        time.sleep(0.1)
        assert not alive(pid)


def test_kill_refuses_without_yes_off_a_terminal() -> None:
    with listening("tcp4") as (port, pid, _):
        result = sockscope("kill", str(port))
        assert result.returncode == ExitCode.USAGE and "--yes" in result.stderr
        assert alive(pid)


def test_kill_never_signals_itself_or_pid_1(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sockscope.inventory.processes import ProcessInfo
    from sockscope.model import Endpoint, Family, NetId, Owner, Socket, State

    def fake_who(targets, udp=False, **_kw):  # type: ignore[no-untyped-def]
        holders = [who.Holder(ProcessInfo(pid, "x", "root", (), None, None), ("127.0.0.1:1",), 0) for pid in (1, os.getpid())]
        owners_ = tuple(Owner(h.process.pid, "x", 3, "root") for h in holders)
        sock = Socket(NetId.TCP, Family.INET, State.LISTEN, 0, 0, Endpoint("127.0.0.1", 1), Endpoint("0.0.0.0", 0), 7, 0, None, owners_)
        return [who.Holding(targets[0], [sock], holders, 0)]

    monkeypatch.setattr(kill, "who", fake_who)
    found, spared, held = kill.victims(1)
    assert found == [] and held
    assert sorted(p.pid for p, _why in spared) == sorted([1, os.getpid()])
    with pytest.raises(Exception, match="never signalled"):
        kill.stop(1)


def test_kill_bad_input_and_nothing_there() -> None:
    assert sockscope("kill", "abc", "--yes").returncode == ExitCode.USAGE
    assert sockscope("kill", "0", "--yes").returncode == ExitCode.USAGE
    result = sockscope("kill", str(free.free_ports(1)[0]), "--yes")
    assert result.returncode == ExitCode.NOTHING_FOUND and "nothing listens" in result.stderr


@needs_root
def test_kill_without_permission_to_signal() -> None:
    with listening("tcp4") as (port, pid, _):
        result = sockscope("kill", str(port), "--yes", user="65534", env={"PYTHONPATH": os.pathsep.join(sys.path)})
        assert result.returncode == ExitCode.PERMISSION, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "root" in result.stderr
        assert alive(pid)


# ---------------------------------------------------------------- close


@needs_root
def test_close_resets_one_connection_only() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    first, second = socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port))
    accepted = [server.accept()[0] for _ in range(2)]
    target = first.getsockname()[1]
    # the exact pair: other connections on this host may reuse the same ephemeral port
    words = ["sport", "=", f":{target}", "and", "dport", "=", f":{port}"]
    dry = sockscope("close", *words, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.splitlines() == [f"tcp ESTAB 127.0.0.1:{target} 127.0.0.1:{port}"]
    refused = sockscope("close", *words)
    assert refused.returncode == ExitCode.USAGE
    done = sockscope("close", *words, "--yes")
    assert done.returncode == 0 and "closed 1" in done.stdout, done.stderr
    with pytest.raises(OSError):
        first.send(b"x")
        first.recv(1)
    second.sendall(b"ok")
    assert accepted[1].recv(2) == b"ok"
    for sock in (first, second, server, *accepted):
        sock.close()
    assert sockscope("close", *words, "--yes").returncode == ExitCode.NOTHING_FOUND
    assert sockscope("close", "--yes", "state", "all").returncode == ExitCode.USAGE  # no filter that picks sockets


# ---------------------------------------------------------------- free


def test_free_ports_bind_and_avoid_the_ephemeral_range() -> None:
    result = sockscope("free", "-n", "5")
    assert result.returncode == 0
    ports = [int(line) for line in result.stdout.split()]
    low, high = free.ephemeral_range()
    assert len(set(ports)) == 5 and all(1024 <= p <= 65535 and not low <= p <= high for p in ports)
    for port in ports:
        sock = socket.socket()
        sock.bind(("0.0.0.0", port))
        sock.close()


def test_free_in_a_range_and_json() -> None:
    with listening("tcp4") as (port, _pid, _):
        result = sockscope("free", "--range", f"{port}-{port}")
        assert result.returncode == ExitCode.NOTHING_FOUND and "0 of 1" in result.stderr
    answer = json.loads(sockscope("free", "-n", "2", "--udp", "--range", "20000-20100", "--json").stdout)
    assert answer["proto"] == "udp" and len(answer["ports"]) == 2 and all(20000 <= p <= 20100 for p in answer["ports"])


@pytest.mark.parametrize("args", [["--range", "80-20"], ["--range", "0-10"], ["--range", "x"], ["-n", "0"], ["--host", "not-an-ip"], ["--host", "192.0.2.1"]])
def test_free_bad_input(args: list[str]) -> None:
    result = sockscope("free", *args)
    assert result.returncode == ExitCode.USAGE and len(result.stderr.strip().splitlines()) == 1, result.stderr


# ---------------------------------------------------------------- wait


def test_wait_succeeds_when_a_port_opens_later_and_runs_the_command() -> None:
    port = free.free_ports(1)[0]
    server = socket.socket()

    def open_later() -> None:
        time.sleep(0.7)
        server.bind(("127.0.0.1", port))
        server.listen()

    threading.Thread(target=open_later).start()
    started = time.monotonic()
    result = sockscope("wait", f"127.0.0.1:{port}", "-t", "10", "--", sys.executable, "-c", "import sys; sys.exit(7)")
    server.close()
    assert result.returncode == 7, result.stderr  # the command's own status
    assert 0.5 < time.monotonic() - started < 10


def test_wait_fails_on_time_naming_what_is_down(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free.free_ports(1)[0]
    started = time.monotonic()
    result = sockscope("wait", f":{port}", f"unix:{tmp_path}/none.sock", "-t", "0.6", "-i", "0.1")
    assert result.returncode == ExitCode.NOTHING_FOUND
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in result.stderr and "none.sock" in result.stderr and "still down" in result.stderr


def test_wait_for_a_unix_socket_and_bad_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s.sock")
    with listening(f"unix:{path}"):
        assert sockscope("wait", f"unix:{path}", "-t", "5", "-q").returncode == 0
    for bad in ("host:", "[::1", "1.2.3.4:99999", "udp://127.0.0.1:53"):
        result = sockscope("wait", bad, "-t", "1")
        assert result.returncode == ExitCode.USAGE and "Traceback" not in result.stderr, (bad, result.stderr)


# ---------------------------------------------------------------- services


def test_services_by_number_name_glob_and_range() -> None:
    rows = json.loads(sockscope("services", "22", "--json").stdout)
    assert {(r["name"], r["proto"]) for r in rows} >= {("ssh", "tcp")}
    assert rows[0]["port_class"] == "well-known" and rows[0]["privileged"] == (free.unprivileged_port_start() > 22)
    assert json.loads(sockscope("services", "ssh", "--json").stdout)[0]["port"] == 22
    globbed = json.loads(sockscope("services", "postgres*", "--json").stdout)
    assert any(r["port"] == 5432 for r in globbed)
    assert all(r["proto"] == "udp" for r in json.loads(sockscope("services", "53/udp", "--json").stdout))
    assert json.loads(sockscope("services", "50000", "--json").stdout)[0]["port_class"] == "dynamic"
    assert sockscope("services", "no-such-service-name").returncode == ExitCode.NOTHING_FOUND
    assert sockscope("services", "70000").returncode == ExitCode.USAGE
    assert sockscope("services", "22/xyz").returncode == ExitCode.USAGE


def test_services_builtin_table_without_etc_services() -> None:
    result = sockscope("services", "https", "--json", env={"SOCKSCOPE_SERVICES": "/nonexistent"})
    assert {r["port"] for r in json.loads(result.stdout)} == {443}


def test_wait_keeps_trying_a_name_that_does_not_resolve_yet(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sockscope.address import parse_address
    from sockscope.errors import UsageError
    from sockscope.ports import wait

    def unresolvable(_address, passive=False):  # type: ignore[no-untyped-def]  # no DNS query leaves the host
        raise UsageError("cannot resolve host 'db': Name or service not known")

    monkeypatch.setattr(wait, "resolve", unresolvable)
    result = wait.wait_for([parse_address("db:5432")], timeout=0.3, interval=0.1)
    assert result.up == [] and "cannot resolve" in result.down[0][1]

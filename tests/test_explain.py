"""`sockscope explain`: each situation made for real, each sentence checked against ss and /proc."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import needs_root, sockscope
from sockscope.errors import ExitCode
from sockscope.ports.free import bindable, ephemeral_range

# A process that makes a situation, prints one JSON line about it, and holds it until stdin closes.
SITUATIONS = r"""
import json, os, socket, sys, time
kind = sys.argv[1]
info = {"pid": os.getpid()}
keep = []
if kind == "clients":  # a listener, one accepted client, one waiting in the queue
    server = socket.create_server(("127.0.0.1", 0), backlog=8)
    first = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    second = socket.create_connection(server.getsockname())
    keep += [server, first, accepted, second]
    info.update(port=server.getsockname()[1], clients=[first.getsockname()[1], second.getsockname()[1]],
                fds={"server": server.fileno(), "accepted": accepted.fileno(), "first": first.fileno(), "second": second.fileno()},
                inodes={"first": os.fstat(first.fileno()).st_ino, "accepted": os.fstat(accepted.fileno()).st_ino})
elif kind == "full":  # backlog 1: two connections fill the queue, and nobody accepts
    server = socket.create_server(("127.0.0.1", 0), backlog=1)
    keep.append(server)
    for _ in range(2):
        keep.append(socket.create_connection(server.getsockname()))
    info.update(port=server.getsockname()[1])
elif kind == "pair":
    a, b = socket.socketpair()
    keep += [a, b]
    info.update(inodes=[os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino], fds=[a.fileno(), b.fileno()])
elif kind.startswith("privileged:"):
    server = socket.create_server(("127.0.0.1", int(kind.split(":")[1])))
    keep.append(server)
    info.update(port=server.getsockname()[1])
elif kind == "fork":
    server = socket.create_server(("127.0.0.1", 0))
    keep.append(server)
    child = os.fork()
    if child == 0:
        sys.stdin.read()
        os._exit(0)
    info.update(port=server.getsockname()[1], child=child, fd=server.fileno())
print(json.dumps(info), flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def situation(kind: str) -> Iterator[dict[str, Any]]:
    """Run a situation in its own process; give what it printed; end it afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", SITUATIONS, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


def explain_json(*args: str, user: str | None = None) -> dict[str, Any]:
    result = sockscope("explain", *args, "--json", user=user)
    assert result.returncode == ExitCode.OK, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def ss_listener(port: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Give (Recv-Q, Send-Q, [(pid, fd)...]) of the TCP listener on `port`, as `ss -tlnpe` prints them."""
    out = subprocess.run(["ss", "-tlnpeH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    fields = out.split()
    holders = [(int(pid), int(fd)) for pid, fd in re.findall(r"pid=(\d+),fd=(\d+)", out)]
    return int(fields[1]), int(fields[2]), holders


def test_a_listener_with_clients_names_holder_descriptor_queue_and_each_client() -> None:
    with situation("clients") as made:
        port, pid = made["port"], made["pid"]
        answer = explain_json(str(port))
        listener = answer["sockets"][0]
        sock = listener["socket"]
        assert sock["state"] == "LISTEN" and sock["local"]["port"] == port
        # the holder and its descriptor, as ss and the kernel's own /proc link say
        waiting, backlog, holders = ss_listener(port)
        assert [(o["pid"], o["fd"]) for o in sock["owners"]] == holders == [(pid, made["fds"]["server"])]
        assert os.readlink(f"/proc/{pid}/fd/{made['fds']['server']}") == f"socket:[{sock['inode']}]"
        text = " ".join(listener["sentences"])
        assert f"/proc/{pid}/fd/{made['fds']['server']} -> socket:[{sock['inode']}]" in text
        assert (sock["recv_q"], sock["send_q"]) == (waiting, backlog) == (1, 8)
        assert "accept queue holds 1 connection not accepted yet, of at most 8" in text
        # each client by its ephemeral port, who serves it, and who the client is
        low, high = ephemeral_range()
        peers = {c["socket"]["peer"]["port"]: c for c in listener["connections"]}
        assert sorted(peers) == sorted(made["clients"]) and all(low <= p <= high for p in peers)
        first, second = made["clients"]
        assert f"client port {first}, in this host's ephemeral range): ESTAB, accepted by pid {pid}" in text
        assert f"client port {second}, in this host's ephemeral range): ESTAB, waiting in the accept queue" in text
        assert f"the client is pid {pid} (python3, user" in text and f"/proc/{pid}/fd/{made['fds']['first']} ->" in text
        assert peers[first]["other"]["inode"] == made["inodes"]["first"]
        assert f"sockscope connect 127.0.0.1:{port}" in text and f"sockscope kill {port}" in text
        # the plain text says the same, one sentence a line
        plain = sockscope("explain", str(port)).stdout
        assert plain.splitlines()[0].startswith(f"127.0.0.1:{port} is a TCP socket (IPv4, inode {sock['inode']}) in state LISTEN.")


def test_a_client_on_an_ephemeral_port_is_told_with_its_other_end() -> None:
    with situation("clients") as made:
        first, pid = made["clients"][0], made["pid"]
        answer = explain_json(f"127.0.0.1:{first}")
        # other programs on this host may use the same local port towards other peers: take ours
        [conn] = [s for s in answer["sockets"] if s["socket"]["peer"]["port"] == made["port"]]
        assert conn["socket"]["inode"] == made["inodes"]["first"] and conn["port"]["ephemeral"] is True
        text = " ".join(conn["sentences"])
        low, high = ephemeral_range()
        assert f"inside this host's ephemeral range {low}-{high}" in text
        assert f"Its other end is 127.0.0.1:{made['port']}, on this host: socket inode {made['inodes']['accepted']}" in text
        assert f"/proc/{pid}/fd/{made['fds']['accepted']} -> socket:[{made['inodes']['accepted']}]" in text
        assert f"'sport = :{first} and dport = :{made['port']}'" in text
        assert "came in through the listener" not in text  # the client's end came from connect()
        [served] = explain_json(f"inode:{made['inodes']['accepted']}")["sockets"]
        said = " ".join(served["sentences"])
        assert f"It came in through the listener on 127.0.0.1:{made['port']} (inode " in said
        assert f"Its other end is 127.0.0.1:{first}, on this host: socket inode {made['inodes']['first']}" in said


def test_a_full_accept_queue_is_called_full_as_ss_counts_it() -> None:
    with situation("full") as made:
        time.sleep(0.2)  # the handshakes complete in the kernel
        waiting, backlog, _ = ss_listener(made["port"])
        assert waiting > backlog  # the kernel's own measure of a full queue
        text = " ".join(explain_json(str(made["port"]))["sockets"][0]["sentences"])
        assert f"holds {waiting} connections not accepted yet, of at most {backlog}" in text
        assert "the queue is full" in text


def test_a_unix_socket_pair_names_both_ends_and_their_descriptors() -> None:
    with situation("pair") as made:
        (a, b), (fd_a, fd_b), pid = made["inodes"], made["fds"], made["pid"]
        [facts] = explain_json(f"inode:{a}")["sockets"]
        assert facts["socket"]["netid"] == "u_str" and facts["other"]["inode"] == b
        assert os.readlink(f"/proc/{pid}/fd/{fd_b}") == f"socket:[{b}]"
        text = " ".join(facts["sentences"])
        assert text.startswith(f"An unnamed unix stream socket (inode {a}) is in state ESTAB.")
        assert f"/proc/{pid}/fd/{fd_a} -> socket:[{a}]" in text and f"/proc/{pid}/fd/{fd_b} -> socket:[{b}]" in text
        # the same socket by the link text /proc shows
        assert explain_json(f"socket:[{b}]")["sockets"][0]["other"]["inode"] == a


def test_a_port_held_by_two_processes_after_fork_names_both() -> None:
    with situation("fork") as made:
        port, pid, child, fd = made["port"], made["pid"], made["child"], made["fd"]
        [facts] = explain_json(str(port))["sockets"]
        assert sorted(o["pid"] for o in facts["socket"]["owners"]) == sorted([pid, child])
        assert sorted(ss_listener(port)[2]) == sorted([(pid, fd), (child, fd)])
        text = " ".join(facts["sentences"])
        assert "held by 2 processes at once" in text
        assert f"/proc/{pid}/fd/{fd} ->" in text and f"/proc/{child}/fd/{fd} ->" in text


def _free_privileged_port() -> int:
    for port in range(900, 1000):
        if bindable(port, host="127.0.0.1"):
            return port
    pytest.skip("no free port below 1000 on 127.0.0.1")


@needs_root
def test_a_privileged_port_as_another_user_says_it_cannot_be_bound_nor_its_holder_seen() -> None:
    port = _free_privileged_port()
    with situation(f"privileged:{port}") as made:
        assert made["port"] == port
        as_root = " ".join(explain_json(str(port))["sockets"][0]["sentences"])
        assert "binding it needs root or CAP_NET_BIND_SERVICE here (ports below 1024" in as_root
        assert "this user (root, uid 0) has" in as_root and f"pid {made['pid']}" in as_root
        answer = explain_json(str(port), user="65534")
        assert answer["host"]["may_bind_privileged"] is False
        text = " ".join(answer["sockets"][0]["sentences"])
        assert "this user (nobody, uid 65534) has neither" in text or "uid 65534) has neither" in text
        assert "No holder could be seen: the socket was made by uid 0 (root)" in text
        assert f"pid {made['pid']}" not in text


@needs_root
def test_a_pid_of_another_user_is_one_line_and_exit_3() -> None:
    result = sockscope("explain", "pid:1", user="65534")
    assert result.returncode == ExitCode.PERMISSION
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "run with sudo" in result.stderr


def test_a_pid_shows_every_socket_it_holds() -> None:
    with situation("pair") as made:
        answer = explain_json(f"pid:{made['pid']}")
        assert sorted(s["socket"]["inode"] for s in answer["sockets"]) == sorted(made["inodes"])


def test_a_time_wait_socket_says_no_process_holds_it_and_when_it_goes() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    local = client.getsockname()[1]
    client.close()  # the side that closes first keeps TIME-WAIT
    accepted.close()
    server.close()
    time.sleep(0.1)
    [facts] = [s for s in explain_json(f"127.0.0.1:{local}")["sockets"] if s["socket"]["peer"]["port"] == port]
    assert facts["socket"]["state"] == "TIME-WAIT" and facts["socket"]["owners"] == []
    text = " ".join(facts["sentences"])
    assert "No process holds it" in text and re.search(r"The kernel frees it in \d+\.\d s \(its timewait timer\)", text)


@pytest.mark.parametrize(
    ("target", "code", "says"),
    [
        ("0", ExitCode.USAGE, "port 0 is out of range"),
        ("70000", ExitCode.USAGE, "port 70000 is out of range"),
        ("abc", ExitCode.USAGE, "is not something to explain"),
        ("", ExitCode.USAGE, "give what to explain"),
        ("/tmp/no\nsuch.sock", ExitCode.NOTHING_FOUND, "no unix socket is bound to /tmp/no\\nsuch.sock"),
        ("pid:4194305", ExitCode.NOTHING_FOUND, "no process with pid 4194305"),
        ("pid:x", ExitCode.USAGE, "pid is not a number"),
        ("inode:0", ExitCode.USAGE, "not an inode number"),
        ("127.0.0.1:0", ExitCode.USAGE, "out of range"),
        ("[::1", ExitCode.USAGE, "brackets"),
    ],
)
def test_odd_targets_are_one_line_with_the_right_exit_code(target: str, code: int, says: str) -> None:
    result = sockscope("explain", target)
    assert result.returncode == code and result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr and "Traceback" not in result.stderr


def test_a_path_that_is_not_utf8_is_one_escaped_line() -> None:
    result = subprocess.run([sys.executable, "-m", "sockscope", "explain", b"/tmp/\xff-not-there.sock"], capture_output=True, check=False)
    assert result.returncode == ExitCode.NOTHING_FOUND and result.stdout == b""
    # "in this network namespace (...)" when others exist (made by other tests at the same time)
    said = rb"sockscope: no unix socket is bound to /tmp/\\xff-not-there.sock (on this host|in this network namespace \([^\n]*\))\n"
    assert re.fullmatch(said, result.stderr), result.stderr


def test_a_free_port_is_one_line_with_its_facts() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = sockscope("explain", str(port))
    assert result.returncode == ExitCode.NOTHING_FOUND and result.stderr.count("\n") == 1
    # "in this network namespace" when others exist (made by other tests at the same time)
    assert re.search(f"no socket uses port {port} (on this host|in this network namespace); port {port} is", result.stderr), result.stderr
    assert "any user may bind it" in result.stderr


def test_ls_explain_adds_one_sentence_per_row() -> None:
    with situation("clients") as made:
        port, pid = made["port"], made["pid"]
        result = sockscope("ls", "-tan", "--explain", f"sport = :{port}")
        assert result.returncode == ExitCode.OK, result.stderr
        lines = result.stdout.splitlines()
        rows = [line for line in lines[1:] if not line.startswith("    ")]
        sentences = [line.strip() for line in lines[1:] if line.startswith("    ")]
        assert len(rows) == len(sentences) == 3  # the listener and its two connections
        assert f"listening on port {port}; 1 waiting to be accepted of 8; held by python3 (pid {pid}, fd {made['fds']['server']})" in sentences
        assert sum("no holder found in /proc" in s for s in sentences) == 1  # the one waiting in the queue
        rows_json = json.loads(sockscope("ls", "-tan", "--explain", "--json", f"sport = :{port}").stdout)
        assert len(rows_json) == 3 and all(row["explain"] for row in rows_json)
        refused = sockscope("ls", "--explain", "--csv")
        assert refused.returncode == ExitCode.USAGE and refused.stderr.count("\n") == 1


def test_a_unix_listener_with_a_queued_client_does_not_say_nobody_is_connected() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "queue.sock")
        with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
            server.bind(path)
            server.listen(4)
            client.connect(path)
            text = " ".join(explain_json(path)["sockets"][0]["sentences"])
            assert "holds 1 connection not accepted yet, of at most 4" in text
            assert "No connection of it is listed yet: the 1 connection in its queue show here only once accepted." in text
            accepted, _ = server.accept()
            with accepted:
                [facts] = explain_json(path)["sockets"]
                assert [link["other"]["inode"] for link in facts["connections"]] == [os.fstat(client.fileno()).st_ino]
                assert "It has 1 connection:" in facts["sentences"]


def test_a_name_with_a_newline_and_a_byte_that_is_not_utf8_stays_one_line_and_a_pastable_command() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.fsencode(folder) + b"/a\nb\xff.sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()
            result = subprocess.run([sys.executable, "-m", "sockscope", "explain", path], capture_output=True, check=False)
            data = subprocess.run([sys.executable, "-m", "sockscope", "explain", path, "--json"], capture_output=True, check=True).stdout
    assert result.returncode == ExitCode.OK
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith(f"{folder}/a\\nb\\xff.sock is a unix stream socket")
    assert all(line.endswith((".", ":")) for line in lines)  # every sentence whole on its own line
    word = re.search(r"`sockscope who (\$'[^']*')`", lines[-1])
    assert word is not None
    assert subprocess.run(["bash", "-c", f"printf %s {word[1]}"], capture_output=True, check=True).stdout == path
    answer = json.loads(data)
    assert base64.b64decode(answer["sockets"][0]["socket"]["local"]["path_b64"]) == path


def test_a_dual_stack_listener_takes_an_ipv4_address_target_and_says_so() -> None:
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            time.sleep(0.1)
            [facts] = [s for s in explain_json(f"127.0.0.1:{port}")["sockets"] if s["socket"]["state"] == "LISTEN"]
            text = " ".join(facts["sentences"])
            assert "it takes IPv4 clients too (IPV6_V6ONLY is off" in text
            assert f"From [::ffff:127.0.0.1]:{client.getsockname()[1]} (client port" in text
    with socket.socket(socket.AF_INET6) as only6:
        only6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        only6.bind(("::", 0))
        only6.listen()
        port = only6.getsockname()[1]
        assert sockscope("explain", f"127.0.0.1:{port}").returncode == ExitCode.NOTHING_FOUND
        assert "IPv6 clients only" in " ".join(explain_json(f"[::1]:{port}")["sockets"][0]["sentences"])


def test_a_socket_held_twice_by_one_process_names_both_descriptors() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        original, copy = server.fileno(), os.dup(server.fileno())
        try:
            [facts] = explain_json(str(server.getsockname()[1]))["sockets"]
        finally:
            os.close(copy)
    assert sorted(o["fd"] for o in facts["socket"]["owners"]) == sorted([original, copy])
    text = " ".join(facts["sentences"])
    assert "held by 2 descriptors of one process (duplicated by dup() or received twice)" in text
    assert f"/proc/{os.getpid()}/fd/{copy} -> socket:[{facts['socket']['inode']}]" in text

"""`sockscope explain` attacked with odd situations: it must say nothing false and never crash."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import needs_root, sockscope
from sockscope.errors import ExitCode
from sockscope.ports.free import ephemeral_range


@contextlib.contextmanager
def holding(code: str, *args: str) -> Iterator[dict[str, Any]]:
    """Run `code` in its own process (it prints one JSON line, then holds what it made until stdin closes)."""
    program = f"import json, os, socket, sys, time\n{code}\nprint(json.dumps(info), flush=True)\nsys.stdin.read()\n"
    proc = subprocess.Popen([sys.executable, "-c", program, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


def explain_json(*args: str) -> dict[str, Any]:
    result = sockscope("explain", *args, "--json")
    assert result.returncode == ExitCode.OK, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# Two listeners on one port (SO_REUSEPORT): 0.0.0.0 and 127.0.0.1; a client to 127.0.0.1 is
# taken by the listener bound to exactly that address (the kernel looks it up before the wildcard).
SPECIFIC_AND_WILDCARD = """
def listener(address, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((address, port))
    s.listen(8)
    return s
wild = listener("0.0.0.0", 0)
port = wild.getsockname()[1]
exact = listener("127.0.0.1", port)
client = socket.create_connection(("127.0.0.1", port))
accepted, _ = exact.accept()
ino = lambda s: os.fstat(s.fileno()).st_ino
info = {"port": port, "wild": ino(wild), "exact": ino(exact), "accepted": ino(accepted)}
"""

# Two listeners on the same address and port (SO_REUSEPORT): the kernel spreads clients by a
# hash and does not say which listener a connection came through.
TWO_ALIKE = """
def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    return s
first = listener(0)
port = first.getsockname()[1]
second = listener(port)
client = socket.create_connection(("127.0.0.1", port))
time.sleep(0.2)
ino = lambda s: os.fstat(s.fileno()).st_ino
info = {"port": port, "first": ino(first), "second": ino(second), "client": ino(client)}
"""


def test_a_connection_is_told_under_the_listener_that_took_it_not_also_under_the_wildcard_one() -> None:
    with holding(SPECIFIC_AND_WILDCARD) as made:
        answer = explain_json(str(made["port"]))
        by_inode = {s["socket"]["inode"]: s for s in answer["sockets"]}
        assert [c["socket"]["inode"] for c in by_inode[made["exact"]]["connections"]] == [made["accepted"]]
        assert by_inode[made["wild"]]["connections"] == []
        assert "No client is connected to it right now." in by_inode[made["wild"]]["sentences"]
        served = " ".join(explain_json(f"inode:{made['accepted']}")["sockets"][0]["sentences"])
        assert f"came in through the listener on 127.0.0.1:{made['port']} (inode {made['exact']})" in served


def test_listeners_alike_on_one_port_do_not_each_claim_the_same_connection() -> None:
    with holding(TWO_ALIKE) as made:
        answer = explain_json(str(made["port"]))
        listeners = [s for s in answer["sockets"] if s["socket"]["state"] == "LISTEN"]
        assert sorted(s["socket"]["inode"] for s in listeners) == sorted([made["first"], made["second"]])
        for listener in listeners:
            text = " ".join(listener["sentences"])
            assert listener["connections"] == [] and "No client is connected" not in text
            assert "through it or through another listener on the same address and port (SO_REUSEPORT)" in text
        # the connection's server end, asked about alone, names both listeners and claims neither
        servers = [s for s in answer["sockets"] if s["socket"]["state"] == "ESTAB" and s["socket"]["local"]["port"] == made["port"]]
        assert len(servers) == 1
        text = " ".join(servers[0]["sentences"])
        assert f"inodes {min(made['first'], made['second'])} and {max(made['first'], made['second'])}" in text
        assert "came in through the listener on" not in text


# A UDP socket connect()ed to another that is bound and not connected: the other end is that one.
UDP_CONNECTED = """
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 0))
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.connect(server.getsockname())
info = {"pid": os.getpid(), "server": os.fstat(server.fileno()).st_ino, "fd": server.fileno(), "port": client.getsockname()[1]}
"""


def test_a_connected_udp_socket_finds_the_bound_socket_at_its_other_end() -> None:
    with holding(UDP_CONNECTED) as made:
        answer = explain_json(f"{made['port']}/udp")
        facts = answer["sockets"][0]
        assert facts["socket"]["state"] == "ESTAB"
        assert facts["other"] is not None and facts["other"]["inode"] == made["server"]
        text = " ".join(facts["sentences"])
        assert "no socket here matches" not in text
        assert f"on this host: socket inode {made['server']}, held by pid {made['pid']} (python3" in text
        assert f"/proc/{made['pid']}/fd/{made['fd']} -> socket:[{made['server']}]" in text
        # a datagram is never acknowledged: Send-Q is what waits to be sent
        assert "not taken by the peer" not in text and "not acknowledged" not in text


# Unix listeners whose names were removed, replaced, or reached through a symbolic link.
UNIX_NAMES = """
folder = sys.argv[1]
def listener(name):
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(folder, name))
    s.listen()
    return s
gone = listener("gone.sock")
os.unlink(os.path.join(folder, "gone.sock"))
old = listener("again.sock")
os.unlink(os.path.join(folder, "again.sock"))
new = listener("again.sock")
real = listener("real.sock")
os.symlink(os.path.join(folder, "real.sock"), os.path.join(folder, "link.sock"))
ino = lambda s: os.fstat(s.fileno()).st_ino
info = {"gone": ino(gone), "old": ino(old), "new": ino(new), "real": ino(real)}
"""


def sentences_of(answer: dict[str, Any]) -> dict[int, str]:
    return {s["socket"]["inode"]: " ".join(s["sentences"]) for s in answer["sockets"]}


def test_a_unix_name_removed_after_bind_is_not_offered_to_connect_to(tmp_path: Any) -> None:
    with holding(UNIX_NAMES, str(tmp_path)) as made:
        text = sentences_of(explain_json(str(tmp_path / "gone.sock")))[made["gone"]]
        assert f"no file is at {tmp_path}/gone.sock as its holder sees the filesystem (it was removed or renamed after bind())" in text
        assert "sockscope connect" not in text
        # nc agrees: nobody can connect to that name
        refused = subprocess.run(["nc", "-U", "-z", str(tmp_path / "gone.sock")], capture_output=True, timeout=10, check=False)
        assert refused.returncode != 0


def test_a_unix_name_bound_again_says_which_socket_the_name_reaches_now(tmp_path: Any) -> None:
    with holding(UNIX_NAMES, str(tmp_path)) as made:
        text = sentences_of(explain_json(str(tmp_path / "again.sock")))
        assert sorted(text) == sorted([made["old"], made["new"]])
        assert f"is now another socket (inode {made['new']})" in text[made["old"]] and "sockscope connect" not in text[made["old"]]
        assert "no longer leads" not in text[made["new"]] and "sockscope connect unix:" in text[made["new"]]


def test_a_symbolic_link_to_a_unix_socket_explains_the_socket(tmp_path: Any) -> None:
    with holding(UNIX_NAMES, str(tmp_path)) as made:
        answer = explain_json(str(tmp_path / "link.sock"))
        assert [s["socket"]["inode"] for s in answer["sockets"]] == [made["real"]]
        assert answer["sockets"][0]["socket"]["local"]["path"] == str(tmp_path / "real.sock")


ABSTRACT_WITH_NUL = """
s = socket.socket(socket.AF_UNIX)
s.bind(b"\\0cut\\0here")
s.listen()
info = {"inode": os.fstat(s.fileno()).st_ino}
"""


def test_a_name_holding_a_nul_byte_is_not_offered_as_a_command_that_would_cut_it() -> None:
    with holding(ABSTRACT_WITH_NUL) as made:
        text = " ".join(explain_json(f"inode:{made['inode']}")["sockets"][0]["sentences"])
        assert "@cut\x00here" in text  # JSON keeps the exact name; only the terminal sees it escaped
        assert "sockscope who $'" not in text and "sockscope connect" not in text
        assert f"sockscope explain inode:{made['inode']}" in text


def test_digits_of_other_scripts_are_not_taken_for_a_port() -> None:
    for text in ("٣", "٨٠", "８０８０", "80/udp\u0660"):
        result = sockscope("explain", text)
        assert result.returncode == ExitCode.USAGE, (text, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "no socket uses port" not in result.stderr


def test_a_trace_on_a_stderr_nobody_drains_never_stalls_the_data() -> None:
    """The trace gives way to the data: lines that would wait for stderr are dropped, and counted when it drains."""
    import fcntl

    with socket_echo() as port:
        unread, stderr = os.pipe()
        fcntl.fcntl(stderr, 1031, 4096)  # F_SETPIPE_SZ: one page, so a few dozen lines fill it
        data = os.urandom(4_000_000)
        try:
            command = [sys.executable, "-m", "sockscope", "connect", "--trace", f"127.0.0.1:{port}"]
            result = subprocess.run(command, input=data, stdout=subprocess.PIPE, stderr=stderr, timeout=30, check=False)
        finally:
            os.close(stderr)
        assert result.returncode == ExitCode.OK and result.stdout == data
        told = os.read(unread, 8192).decode()
        os.close(unread)
        assert told.startswith("  getaddrinfo(") and told.endswith("\n")  # whole lines, as many as stderr took


@contextlib.contextmanager
def socket_echo() -> Iterator[int]:
    """An echo server by socat on a free loopback port, for one client."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    proc = subprocess.Popen(["socat", f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr", "EXEC:cat"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["ss", "-tlnH", f"sport = :{port}"], capture_output=True, text=True, check=False).stdout.strip():
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def test_a_port_left_only_in_time_wait_does_not_suspect_another_namespace() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its end of the connection stays in TIME-WAIT
        time.sleep(0.1)
        client_port = client.getsockname()[1]
        client.close()
    time.sleep(0.1)
    answer = explain_json(str(port))
    assert [s["socket"]["state"] for s in answer["sockets"]] == ["TIME-WAIT"]
    text = " ".join(answer["sockets"][0]["sentences"])
    assert "No process holds it" in text and "another network namespace" not in text
    assert f"Its other end was 127.0.0.1:{client_port}; no socket of this connection remains there" in text


# root's listeners (TCP and unix), each with one accepted client and one still in its queue
ROOTS_CLIENTS = """
server = socket.create_server(("127.0.0.1", 0))
path = os.path.join(sys.argv[1], "root.sock")
local = socket.socket(socket.AF_UNIX)
local.bind(path)
local.listen()
os.chmod(sys.argv[1], 0o755)
os.chmod(path, 0o777)
keep = []
for listener, address in ((server, server.getsockname()), (local, path)):
    first = socket.socket(listener.family)
    first.connect(address)
    keep += [first, listener.accept()[0]]
    second = socket.socket(listener.family)
    second.connect(address)
    keep.append(second)
info = {"port": server.getsockname()[1], "path": path}
"""


@needs_root
def test_another_user_is_not_told_that_roots_connections_have_no_holder(tmp_path: Any) -> None:
    folder = tmp_path / "where"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    with holding(ROOTS_CLIENTS, str(folder)) as made:
        for target in (str(made["port"]), made["path"]):
            result = sockscope("explain", target, "--json", user="65534")
            assert result.returncode == ExitCode.OK, result.stderr
            listener = json.loads(result.stdout)["sockets"][0]
            text = " ".join(listener["sentences"])
            assert "no descriptor to it found" not in text, text
            assert "this user cannot see (it was made by uid 0 (root); run with sudo)" in text
            # an accepted unix connection whose holder is hidden is not said to wait in the queue
            if target == made["path"]:
                assert "waiting in the accept queue" not in text


def somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as handle:
        return int(handle.read())


def test_a_backlog_larger_than_somaxconn_is_not_called_the_one_given_to_listen() -> None:
    cap = somaxconn()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(cap + 1000)
        port = server.getsockname()[1]
        text = " ".join(explain_json(str(port))["sockets"][0]["sentences"])
        assert f"of at most {cap} (net.core.somaxconn: listen() asked for {cap} or more)" in text
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(7)
        text = " ".join(explain_json(str(server.getsockname()[1]))["sockets"][0]["sentences"])
        assert "of at most 7 (the backlog given to listen())" in text


def test_a_full_unix_queue_tells_what_a_unix_client_meets(tmp_path: Any) -> None:
    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        clients, answers = [], []
        for _ in range(3):
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            clients.append(client)
            try:
                client.connect(path)
                answers.append("connected")
            except BlockingIOError:
                answers.append("EAGAIN")
        assert answers == ["connected", "connected", "EAGAIN"]
        text = " ".join(explain_json(path)["sockets"][0]["sentences"])
        listed = json.loads(sockscope("ls", "-xl", "--explain", "--json").stdout)
        brief = next(s["explain"] for s in listed if s["local"]["path"] == path)
        for client in clients:
            client.close()
    assert "the queue is full" in text and "drops" not in text and "retry" not in text
    assert "connect() waits, or fails at once with EAGAIN when non-blocking" in text
    assert "FULL" in brief and "dropped" not in brief


@needs_root
def test_a_process_in_another_network_namespace_is_not_said_to_hold_nothing() -> None:
    name = f"sockscope-explain-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        code = "server = socket.create_server(('127.0.0.1', 0))\nclient = socket.create_connection(server.getsockname())\n"
        code += "info = {'pid': os.getpid(), 'port': server.getsockname()[1]}"
        program = f"import json, os, socket, sys\n{code}\nprint(json.dumps(info), flush=True)\nsys.stdin.read()\n"
        command = ["ip", "netns", "exec", name, sys.executable, "-c", program]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None and proc.stdin is not None
            made = json.loads(proc.stdout.readline())
            held = sockscope("explain", f"pid:{made['pid']}")
            port = sockscope("explain", str(made["port"]))
            proc.stdin.close()
        assert held.returncode == ExitCode.NOTHING_FOUND and held.stderr.count("\n") == 1
        assert "holds no tcp, udp or unix socket in this network namespace; it lives in another network namespace" in held.stderr
        assert "holds 2 sockets" in held.stderr and f"--netns {made['pid']}" in held.stderr
        assert f"no socket uses port {made['port']} in this network namespace" in port.stderr and "on this host" not in port.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


ZOMBIE = """
child = os.fork()
if child == 0:
    os._exit(0)
time.sleep(0.2)  # the child has exited; nobody reaps it
info = {"zombie": child}
"""


def test_a_zombie_is_told_as_one_that_has_exited() -> None:
    with holding(ZOMBIE) as made:
        result = sockscope("explain", f"pid:{made['zombie']}")
    assert result.returncode == ExitCode.NOTHING_FOUND and result.stderr.count("\n") == 1
    assert f"pid {made['zombie']}, python3 (user root), has exited (a zombie its parent has not reaped): it holds no socket" in result.stderr


def test_a_pid_that_exits_while_being_looked_at_is_told_as_gone(tmp_path: Any) -> None:
    from sockscope.explain.facts import _nothing
    from sockscope.explain.target import parse_target

    # its name was read, then it exited before its sockets were: /proc/PID is gone when the line is made
    said = _nothing(parse_target("pid:4242"), "python3 (user root)", None, str(tmp_path))
    assert said == "pid 4242, python3 (user root), exited while its sockets were being looked at"


def test_ls_explain_does_not_say_a_server_connected_to_its_client_when_both_ports_are_ephemeral() -> None:
    low, high = ephemeral_range()
    with socket.socket() as server:
        for port in range(high, low, -1):  # a server on a port inside the ephemeral range, as clients' ports are
            try:
                server.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        server.listen()
        with socket.create_connection(("127.0.0.1", port)) as client, server.accept()[0]:
            mine = client.getsockname()[1]
            listed = json.loads(sockscope("ls", "-t", "--explain", "--json", f"sport = :{mine} or dport = :{mine}").stdout)
    ours = {(mine, port), (port, mine)}
    said = {s["local"]["port"]: s["explain"] for s in listed if (s["local"]["port"], s["peer"]["port"]) in ours}
    assert sorted(said) == sorted([mine, port])
    assert f"127.0.0.1:{port} connected to port {mine}" not in said[mine], said


UDP_TO_A_GROUP = """
def bound(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    return s
first = bound(0)
second = bound(first.getsockname()[1])
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.connect(first.getsockname())
ino = lambda s: os.fstat(s.fileno()).st_ino
info = {"port": client.getsockname()[1], "group": sorted([ino(first), ino(second)])}
"""


def test_a_udp_socket_sending_to_a_reuseport_group_is_not_said_to_have_no_other_end_here() -> None:
    with holding(UDP_TO_A_GROUP) as made:
        text = " ".join(explain_json(f"{made['port']}/udp")["sockets"][0]["sentences"])
    first, second = made["group"]
    assert "no socket here matches" not in text
    assert f"one of 2 sockets bound alike (inodes {first} and {second}; SO_REUSEPORT) takes its datagrams" in text


@needs_root
def test_ls_explain_as_another_user_does_not_say_roots_listener_has_no_holder() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = sockscope("ls", "-tl", "--explain", "--json", f"sport = :{port}", user="65534")
    assert result.returncode == ExitCode.OK, result.stderr
    [row] = json.loads(result.stdout)
    assert "no holder found" not in row["explain"]
    assert "holder not visible to this user (uid 0 (root); run with sudo)" in row["explain"]


RENAMED = """
folder = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(folder, "before.sock"))
s.listen()
os.rename(os.path.join(folder, "before.sock"), os.path.join(folder, "after.sock"))
info = {"inode": os.fstat(s.fileno()).st_ino}
"""


def test_a_renamed_unix_socket_is_found_by_its_new_name_and_not_said_removed(tmp_path: Any) -> None:
    with holding(RENAMED, str(tmp_path)) as made:
        answer = explain_json(str(tmp_path / "after.sock"))
        text = " ".join(answer["sockets"][0]["sentences"])
        # nc reaches it by the new name
        reached = subprocess.run(["nc", "-U", "-z", str(tmp_path / "after.sock")], capture_output=True, timeout=10, check=False)
    assert [s["socket"]["inode"] for s in answer["sockets"]] == [made["inode"]]
    assert "removed or renamed after bind()" in text and "it was removed after" not in text
    assert "no client can connect() to it by that name" in text  # by its new name, nc did
    assert reached.returncode == 0


def test_a_service_name_is_answered_with_its_port_from_the_services_file() -> None:
    result = sockscope("explain", "http-alt")
    assert result.returncode == ExitCode.USAGE and result.stderr.count("\n") == 1
    assert "'http-alt' is a service name in /etc/services (8080/" in result.stderr
    assert "write the port, e.g. `sockscope explain 8080`" in result.stderr
    unknown = sockscope("explain", "no-such-service-here")
    assert unknown.returncode == ExitCode.USAGE and "is not something to explain" in unknown.stderr


def test_without_a_services_file_a_name_is_not_said_to_come_from_it() -> None:
    result = sockscope("explain", "22", env={"SOCKSCOPE_SERVICES": "/nonexistent/services"})
    assert result.returncode == ExitCode.NOTHING_FOUND
    assert "in /nonexistent/services" not in result.stderr
    assert "named ssh in sockscope's built-in table (/nonexistent/services cannot be read)" in result.stderr
    hint = sockscope("explain", "ssh", env={"SOCKSCOPE_SERVICES": "/nonexistent/services"})
    assert "'ssh' is a service name in sockscope's built-in table (/nonexistent/services cannot be read)" in hint.stderr


def test_trace_of_a_shutdown_after_the_peer_closed_does_not_say_the_peer_reads_eof() -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(b"\0sockscope-trace-closed-" + str(os.getpid()).encode())
        server.listen()
        name = "unix:@" + server.getsockname()[1:].decode()
        command = [sys.executable, "-m", "sockscope", "connect", "--trace", name]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        accepted, _ = server.accept()
        accepted.sendall(b"bye")
        accepted.close()  # the peer is gone before our end shuts down
        out, err = proc.communicate(b"", timeout=20)
    assert out == b"bye" and proc.returncode == ExitCode.OK
    told = err.decode()
    assert "shutdown(fd 3, SHUT_WR) = 0: our end sends no more" in told and "the peer reads EOF" not in told


def test_a_socket_file_that_matches_no_socket_proves_nothing_about_a_name() -> None:
    from sockscope.explain.files import _compare

    mine = (254, 0, 100)
    # btrfs and overlayfs may show stat() another device for the very same file: no claim
    assert _compare((0, 42, 100), mine, {7: mine}, holder_view=True) is None
    assert _compare((254, 0, 200), mine, {7: mine, 8: (254, 0, 200)}, holder_view=True) == ("other", 8, True)
    assert _compare((-1, -1, 5), mine, {7: mine}, holder_view=False) == ("other", None, False)
    assert _compare(None, mine, {7: mine}, holder_view=False) == ("nothing", None, False)


def test_an_ipv4_mapped_address_finds_the_ipv4_listener_it_reaches() -> None:
    with socket.create_server(("0.0.0.0", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("::ffff:127.0.0.1", port)):  # it does reach this listener
            pass
        answer = explain_json(f"[::ffff:127.0.0.1]:{port}")
    assert [s["socket"]["local"] for s in answer["sockets"]] == [{"address": "0.0.0.0", "port": port}]


def other_interface() -> str | None:
    """Give an interface other than lo, when this host has one."""
    names = sorted(os.listdir("/sys/class/net"))
    return next((name for name in names if name != "lo"), None)


@needs_root
def test_a_listener_bound_to_an_interface_is_not_offered_through_loopback() -> None:
    device = other_interface()
    if device is None:
        pytest.skip("needs an interface other than lo")
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        text = " ".join(explain_json(str(port))["sockets"][0]["sentences"])
        with socket.socket() as client:  # the kernel agrees: through lo it is refused
            refused = client.connect_ex(("127.0.0.1", port))
    assert refused != 0
    assert f"It is bound to interface {device} (SO_BINDTODEVICE): it takes only what arrives through {device}." in text
    assert f"sockscope connect 127.0.0.1:{port}" not in text


FORK_THEN_EXIT = """
server = socket.create_server(("127.0.0.1", 0))
child = os.fork()
if child == 0:
    time.sleep(0.3)
    os._exit(0)
os.waitpid(child, 0)  # the child held the listener too, then exited and was reaped
info = {"pid": os.getpid(), "child": child, "port": server.getsockname()[1], "fd": server.fileno()}
"""


def test_a_listener_shared_by_fork_names_only_the_holder_left_after_the_other_exits() -> None:
    with holding(FORK_THEN_EXIT) as made:
        sock = explain_json(str(made["port"]))["sockets"][0]
        ss = subprocess.run(["ss", "-tlnpH", f"sport = :{made['port']}"], capture_output=True, text=True, check=True).stdout
    assert [(o["pid"], o["fd"]) for o in sock["socket"]["owners"]] == [(made["pid"], made["fd"])]
    assert f"pid={made['pid']},fd={made['fd']}" in ss and f"pid={made['child']}" not in ss
    assert "2 processes" not in " ".join(sock["sentences"])


RELATIVE = """
os.chdir(sys.argv[1])
s = socket.socket(socket.AF_UNIX)
s.bind("relative.sock")  # the kernel keeps the name as given, relative to the binder's directory
s.listen()
info = {"inode": os.fstat(s.fileno()).st_ino}
"""


def test_a_relative_unix_name_is_found_by_its_file_and_not_offered_as_a_command(tmp_path: Any) -> None:
    with holding(RELATIVE, str(tmp_path)) as made:
        answer = explain_json(str(tmp_path / "relative.sock"))
    assert [s["socket"]["inode"] for s in answer["sockets"]] == [made["inode"]]
    text = " ".join(answer["sockets"][0]["sentences"])
    assert "sockscope who relative.sock" not in text and "unix:relative.sock" not in text
    assert f"sockscope explain inode:{made['inode']}" in text


THREAD = """
import threading
server = socket.create_server(("127.0.0.1", 0))
ids = []
threading.Thread(target=lambda: (ids.append(threading.get_native_id()), time.sleep(60)), daemon=True).start()
while not ids:
    time.sleep(0.01)
info = {"pid": os.getpid(), "tid": ids[0], "inode": os.fstat(server.fileno()).st_ino}
"""


def test_a_thread_id_explains_the_sockets_of_its_process() -> None:
    with holding(THREAD) as made:
        answer = explain_json(f"pid:{made['tid']}")
    assert [s["socket"]["inode"] for s in answer["sockets"]] == [made["inode"]]
    assert f"pid {made['pid']} (python3" in " ".join(answer["sockets"][0]["sentences"])

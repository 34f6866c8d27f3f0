"""`ls -i -m -o -e --cgroup` against `ss -tinmoe --cgroup` on quiet loopback sockets this test makes.

Every word ss prints for a socket is compared: equal where the kernel gives the same number to
both, within a bound for the counters that move while the two commands run (lastsnd, lastrcv,
lastack, a timer's time left). ss prints BBR's own counters (`bbr:(...)`), which sockscope does
not ask the kernel for; newer fields (rcv_wnd, rehash) only a newer ss prints.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import IS_ROOT, have, sockscope

pytestmark = pytest.mark.skipif(not have("ss"), reason="needs ss (iproute2)")

MOVING = {"lastsnd", "lastrcv", "lastack"}  # milliseconds since: they grow between the two runs
ONLY_NEWER_SS = {"rcv_wnd", "rehash", "usec_ts"}
WITH_VALUE = {"send", "pacing_rate", "delivery_rate"}  # ss writes these as two words: `send 12Gbps`


class Quiet:
    """Loopback sockets in the states ss shows internals for, left quiet once made."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.client = socket.create_connection(("127.0.0.1", self.port))
        self.server, _ = self.listener.accept()
        # one end waits to probe in keepalive (timer:(keepalive,119min,0))
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 7200)
        self.client.sendall(b"x" * 70000)  # data both ways: bytes, segments, rates, rtt
        got = 0
        while got < 70000:
            got += len(self.server.recv(1 << 16))
        self.server.sendall(b"y" * 3000)
        got = 0
        while got < 3000:
            got += len(self.client.recv(1 << 16))
        # a TIME-WAIT socket: the side that closes first keeps it (timer:(timewait,...))
        closer = socket.create_connection(("127.0.0.1", self.port))
        accepted, _ = self.listener.accept()
        closer.close()
        accepted.recv(1)
        accepted.close()
        time.sleep(0.3)  # delayed ACKs go out: nothing moves after this

    def close(self) -> None:
        for sock in (self.client, self.server, self.listener):
            sock.close()


@pytest.fixture(scope="module")
def quiet() -> Iterator[Quiet]:
    made = Quiet()
    yield made
    made.close()


def port_filter(port: int) -> list[str]:
    return ["(", "sport", "=", f":{port}", "or", "dport", "=", f":{port}", ")"]


def words_of(text: str) -> dict[str, str]:
    """Give name -> value of ss's words (`rtt:0.03/0.01` -> rtt: 0.03/0.01, `sack` -> sack: '')."""
    found: dict[str, str] = {}
    tokens = text.split()
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in WITH_VALUE:
            found[token] = tokens[index + 1]
            index += 2
            continue
        name, _sep, value = token.partition(":")
        if name not in ("bbr", "dctcp") or not value:  # `bbr:(...)`: BBR's own counters, not the algorithm's name
            found[name] = value
        index += 1
    return found


def ss_sockets(port: int) -> dict[tuple[str, str], dict[str, str]]:
    """Give (local, peer) -> every word `ss -tinmoe --cgroup` prints for the sockets on `port`."""
    out = subprocess.run(["ss", "-tinmoeaH", "--cgroup", *port_filter(port)], capture_output=True, text=True, check=True).stdout
    rows: dict[tuple[str, str], dict[str, str]] = {}
    key = None
    for line in out.splitlines():
        if line.startswith("\t"):
            assert key is not None
            rows[key].update(words_of(line))
            continue
        fields = line.split()
        key = (fields[3], fields[4])
        rows[key] = {"state": fields[0], **words_of(" ".join(fields[5:]))}
    for words in rows.values():
        words.pop("<->", None)
    return rows


def our_sockets(port: int) -> dict[tuple[str, str], dict[str, str]]:
    """Give (local, peer) -> the words of `sockscope ls -tinmoe --cgroup` (the Cookie column as sk, ss's name)."""
    result = sockscope("ls", "-tinmoeaH", "--cgroup", *port_filter(port))
    assert result.returncode == 0, result.stderr
    rows: dict[tuple[str, str], dict[str, str]] = {}
    key = None
    for line in result.stdout.splitlines():
        if line.startswith("\t"):
            assert key is not None
            rows[key].update(words_of(line))
            continue
        state, _rq, _sq, local, peer, cookie, uid, inode = line.split()
        key = (local, peer)
        rows[key] = {"state": state, "ino": inode, "sk": cookie, **({"uid": uid} if uid != "0" else {})}
    return rows


def test_every_word_ss_prints_for_each_socket(quiet: Quiet) -> None:
    theirs = ss_sockets(quiet.port)
    ours = our_sockets(quiet.port)
    assert set(ours) == set(theirs)
    states = sorted(words["state"] for words in theirs.values())
    assert states == ["ESTAB", "ESTAB", "LISTEN", "TIME-WAIT"]
    compared = 0
    for key, words in theirs.items():
        mine = ours[key]
        assert set(mine) - set(words) <= ONLY_NEWER_SS, (key, set(mine) - set(words))
        assert set(words) - set(mine) == set(), (key, set(words) - set(mine))
        for name, value in words.items():
            if name in MOVING:
                assert abs(int(mine[name]) - int(value)) < 5000, (key, name)
            elif name == "timer":  # (name,time left,retransmits): the time left moves
                ss_name, _left, ss_retrans = value.strip("()").split(",")
                our_name, _left, our_retrans = mine[name].strip("()").split(",")
                assert (our_name, our_retrans) == (ss_name, ss_retrans), key
            else:
                assert mine[name] == value, (key, name, mine[name], value)
            compared += 1
    assert compared > 60  # the established ends have some 30 words each


def test_timers_as_ss_names_them(quiet: Quiet) -> None:
    ours = our_sockets(quiet.port)
    timers = {words["state"]: words.get("timer", "") for words in ours.values() if "timer" in words}
    assert timers["TIME-WAIT"].startswith("(timewait,") and timers["TIME-WAIT"].endswith(",0)")
    assert timers["ESTAB"] == "(keepalive,119min,0)"


def test_json_numbers_are_what_ss_prints(quiet: Quiet) -> None:
    theirs = ss_sockets(quiet.port)
    result = sockscope("ls", "-tinmoa", "--cgroup", "-e", "--json", *port_filter(quiet.port))
    assert result.returncode == 0, result.stderr
    checked = 0
    for sock in json.loads(result.stdout):
        key = (f"{sock['local']['address']}:{sock['local']['port']}", f"{sock['peer']['address']}:{sock['peer']['port'] or '*'}")
        words = theirs[key]
        assert f"{sock['cookie']:x}" == words["sk"]
        assert {"tcp", "congestion", "memory", "timer", "cgroup"} <= set(sock)
        if sock["state"] == "TIME-WAIT":
            assert sock["tcp"] is None and sock["memory"] is None and sock["timer"]["name"] == "timewait"
            continue
        tcp, memory = sock["tcp"], sock["memory"]
        skmem = dict(re.findall(r"([a-z]+)(\d+)", words["skmem"]))
        assert [memory["rmem_alloc"], memory["rcvbuf"], memory["wmem_alloc"], memory["sndbuf"]] == [int(skmem[k]) for k in ("r", "rb", "t", "tb")]
        assert sock["congestion"] in words and tcp["cwnd"] == int(words["cwnd"])
        assert sock["cgroup"]["path"] == words["cgroup"]
        if sock["state"] == "ESTAB":
            assert tcp["bytes_acked"] == int(words["bytes_acked"]) and tcp["bytes_received"] == int(words["bytes_received"])
            assert f"{tcp['rtt_us'] / 1000:g}/{tcp['rttvar_us'] / 1000:g}" == words["rtt"]
            assert tcp["delivery_rate_bps"] == int(words["delivery_rate"].removesuffix("bps"))
            assert tcp["app_limited"] is ("app_limited" in words)
            checked += 1
    assert checked == 2


def test_csv_columns_are_flat_and_only_when_asked(quiet: Quiet) -> None:
    plain = sockscope("ls", "-tna", "--csv", *port_filter(quiet.port)).stdout.splitlines()[0].split(",")
    assert not {"congestion", "tcp_rtt_us", "memory_rcvbuf", "timer", "cgroup", "cookie"} & set(plain)
    asked = sockscope("ls", "-tinmoea", "--cgroup", "--csv", *port_filter(quiet.port)).stdout.splitlines()
    header = asked[0].split(",")
    assert header[: len(plain)] == plain
    assert {"congestion", "tcp_rtt_us", "tcp_bytes_acked", "memory_rcvbuf", "timer", "timer_expires_ms", "cgroup_id", "cgroup", "container"} <= set(header)
    rows = [dict(zip(header, line.split(","), strict=True)) for line in asked[1:]]
    established = [row for row in rows if row["state"] == "ESTAB"]
    assert len(established) == 2 and all(int(row["tcp_rtt_us"]) > 0 and row["congestion"] for row in established)


def test_json_keys_appear_only_when_asked(quiet: Quiet) -> None:
    plain = json.loads(sockscope("ls", "-tnl", "--json", *port_filter(quiet.port)).stdout)
    assert plain and not {"tcp", "congestion", "memory", "timer", "cgroup", "cookie"} & set(plain[0])
    memory = json.loads(sockscope("ls", "-tnlm", "--json", *port_filter(quiet.port)).stdout)
    assert {"memory"} == set(memory[0]) - set(plain[0]) and memory[0]["memory"]["rcvbuf"] > 0


def test_udp_and_unix_memory_as_ss_shows_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "mem.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        unix.bind(path)
        udp.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"z" * 100, udp.getsockname())
        time.sleep(0.1)
        port = udp.getsockname()[1]
        ss_udp = subprocess.run(["ss", "-unmaH", "sport", "=", f":{port}"], capture_output=True, text=True, check=True).stdout
        ours_udp = sockscope("ls", "-unmaH", "sport", "=", f":{port}").stdout
        ss_unix = subprocess.run(["ss", "-xmaH", "src", path], capture_output=True, text=True, check=True).stdout
        ours_unix = sockscope("ls", "-xmaH", "src", path).stdout
    assert re.search(r"skmem:\(r\d+[^)]*\)", ss_udp)
    assert re.findall(r"skmem:\([^)]*\)", ours_udp) == re.findall(r"skmem:\([^)]*\)", ss_udp)
    assert re.findall(r"skmem:\([^)]*\)", ours_unix) == re.findall(r"skmem:\([^)]*\)", ss_unix) != []


def test_internals_need_sock_diag_one_line() -> None:
    result = sockscope("ls", "-ti", "--source", "proc")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "-i" in result.stderr and "--source proc" in result.stderr


# ---------------------------------------------------------------- cgroups

CGROUP2 = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
CONTAINER_ID = "5f0c" * 16


def cgroup_writable() -> bool:
    return IS_ROOT and os.path.exists(os.path.join(CGROUP2, "cgroup.procs")) and os.access(CGROUP2, os.W_OK)


def join_cgroup(group: str) -> None:
    with open(os.path.join(group, "cgroup.procs"), "w") as procs:
        procs.write(str(os.getpid()))


HOLD = """
import socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not cgroup_writable(), reason="needs root and a writable cgroup2 hierarchy")
def test_cgroup_path_and_container_of_a_socket_made_in_one() -> None:
    """A listener opened by a process in a container-like cgroup (docker-<id>.scope) is shown
    with the path ss shows and the container's short id."""
    group = os.path.join(CGROUP2, f"sockscope-test-{os.getpid()}", f"docker-{CONTAINER_ID}.scope")
    os.makedirs(group)
    child = None
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: join_cgroup(group),  # noqa: PLW1509 (a test helper, no threads running)
        )
        assert child.stdout is not None
        port = int(child.stdout.readline())
        ss_line = subprocess.run(["ss", "-tlnH", "--cgroup", "sport", "=", f":{port}"], capture_output=True, text=True, check=True).stdout
        path = re.search(r"cgroup:(\S+)", ss_line)
        assert path is not None and path[1].endswith(f"docker-{CONTAINER_ID}.scope")
        table = sockscope("ls", "-tlnH", "--cgroup", "sport", "=", f":{port}").stdout
        assert f"cgroup:{path[1]} container:{CONTAINER_ID[:12]}" in table
        found = json.loads(sockscope("ls", "-tln", "--cgroup", "--json", "sport", "=", f":{port}").stdout)[0]["cgroup"]
        assert found["path"] == path[1] and found["container"] == CONTAINER_ID[:12] and found["id"] == os.stat(group).st_ino
    finally:
        if child is not None:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.close()
            child.wait(10)
            child.stdout.close()
        time.sleep(0.1)
        os.rmdir(group)
        os.rmdir(os.path.dirname(group))


def test_cgroup_of_a_socket_outside_the_walked_tree_is_unreachable_as_in_ss(tmp_path, quiet: Quiet) -> None:  # type: ignore[no-untyped-def]
    """Pointed at a tree that does not hold the socket's cgroup, the path is unknown: ss's words."""
    result = sockscope("ls", "-tlnH", "--cgroup", "sport", "=", f":{quiet.port}", env={"SOCKSCOPE_CGROUP": str(tmp_path / "empty")})
    assert result.returncode == 0 and re.search(r"cgroup:unreachable:[0-9a-f]+", result.stdout), result.stdout


def sender_words(port: int, read: Callable[[int], dict[tuple[str, str], dict[str, str]]]) -> dict[str, str]:
    """Give the words of the one socket sending to `port` (not the accepted end)."""
    found = [words for key, words in read(port).items() if not key[0].endswith(f":{port}")]
    assert len(found) == 1
    return found[0]


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_a_sender_whose_peer_never_reads_shows_the_same_words_as_ss() -> None:
    """nc pours /dev/zero into a socket nobody reads: a full window, retransmits, busy and
    rwnd_limited times, unsent bytes. The numbers move from one moment to the next, so the words
    (and the timer's kind) are compared, not their values, at a moment when ss shows the same
    words just before and just after sockscope looks."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with open("/dev/zero", "rb") as zeros:
            sender = subprocess.Popen(["nc", "127.0.0.1", str(port)], stdin=zeros, stdout=subprocess.DEVNULL)
        try:
            receiver, _ = listener.accept()
            with receiver:
                receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                for _attempt in range(20):  # bounded: a few seconds at most
                    before = sender_words(port, ss_sockets)
                    mine = sender_words(port, our_sockets)
                    later = sender_words(port, ss_sockets)
                    if set(before) == set(later) and "notsent" in before and "busy" in before:
                        break
                    time.sleep(0.1)
        finally:
            sender.kill()
            sender.wait(10)
    assert set(before) == set(later) and {"notsent", "busy", "rwnd_limited", "timer"} <= set(before)
    assert set(before) <= set(mine) and set(mine) - set(before) <= ONLY_NEWER_SS
    assert mine["timer"].split(",")[0] in (before["timer"].split(",")[0], later["timer"].split(",")[0])

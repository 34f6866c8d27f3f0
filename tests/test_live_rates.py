"""The live room: rates diffed by cookie, closed connections kept and marked, rows grouped and
sorted, and the owner map kept up to date without rereading every process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import needs_root
from sockscope.inventory.filters import compile_filter
from sockscope.live.owner_map import Holders, descriptors
from sockscope.live.rates import Rates, state_counts
from sockscope.live.view import backlog_fill, by_remote, rows
from sockscope.model import Endpoint, Family, Internals, NetId, Owner, Socket, State, TcpInfo


def info(acked: int, received: int, rtt_us: int = 50, retrans: int = 0) -> Internals:
    numbers = dict.fromkeys(TcpInfo._fields[:33], 0)
    numbers.update(rtt_us=rtt_us, total_retrans=retrans)
    return Internals(tcp=TcpInfo(**numbers, bytes_acked=acked, bytes_received=received))


def conn(cookie: int, local: int, peer: int, acked: int = 0, received: int = 0, owner: Owner | None = None, state: State = State.ESTAB, **kw: object) -> Socket:
    return Socket(
        NetId.TCP,
        Family.INET,
        state,
        kw.get("recv_q", 0),  # type: ignore[arg-type]
        kw.get("send_q", 0),  # type: ignore[arg-type]
        Endpoint("127.0.0.1", local),
        Endpoint(str(kw.get("peer_host", "127.0.0.1")), peer),
        1000 + cookie,
        0,
        owners=(owner,) if owner else (),
        cookie=cookie,
        internals=info(acked, received),
    )


WEB = Owner(100, "web", 3, "www")
DB = Owner(200, "db", 5, "pg")


def test_rates_are_bytes_per_second_between_refreshes() -> None:
    rates = Rates()
    first = rates.update([conn(1, 80, 5000, acked=1000, received=500)], now=10.0)
    assert first[0].send_rate is None  # nothing to compare with yet
    second = rates.update([conn(1, 80, 5000, acked=3000, received=1500)], now=12.0)
    assert (second[0].send_rate, second[0].recv_rate) == (1000.0, 500.0)


def test_a_new_connection_on_the_same_ports_is_not_a_burst() -> None:
    rates = Rates()
    rates.update([conn(1, 80, 5000, acked=10**9, received=10**9)], now=1.0)
    again = rates.update([conn(2, 80, 5000, acked=10, received=10)], now=2.0)
    new = next(c for c in again if c.closed_at is None)
    assert new.key == 2 and new.send_rate is None and new.recv_rate is None


def test_closed_connections_stay_marked_for_a_few_seconds() -> None:
    rates = Rates(linger=5.0)
    rates.update([conn(1, 80, 5000), conn(2, 80, 5001)], now=1.0)
    after = rates.update([conn(1, 80, 5000)], now=2.0)
    closed = [c for c in after if c.closed_at is not None]
    assert [c.key for c in closed] == [2] and closed[0].closed_at == 2.0
    assert state_counts(after) == {State.ESTAB: 1}  # a closed one is not counted as live
    assert [c.key for c in rates.update([conn(1, 80, 5000)], now=6.9) if c.closed_at] == [2]
    assert [c.key for c in rates.update([conn(1, 80, 5000)], now=7.1) if c.closed_at] == []


def test_rows_group_by_process_listeners_first_then_by_rate() -> None:
    rates = Rates()
    listener = conn(10, 80, 0, owner=WEB, state=State.LISTEN, recv_q=129, send_q=128)
    slow, fast = conn(11, 80, 6000, owner=WEB), conn(12, 80, 6001, owner=WEB)
    database = conn(20, 5432, 7000, owner=DB)
    rates.update([listener, slow, fast, database], now=0.0)
    conns = rates.update(
        [listener, conn(11, 80, 6000, acked=10, owner=WEB), conn(12, 80, 6001, acked=9000, owner=WEB), conn(20, 5432, 7000, acked=100, owner=DB)],
        now=1.0,
    )
    lines = rows(conns, "process", "send", True)
    headings = [row.group.title for row in lines if row.conn is None and row.group]
    assert headings == ["web (100, www)", "db (200, pg)"]
    web = [row.conn.key for row in lines if row.conn is not None and row.group and row.group.pid == 100]
    assert web == [10, 12, 11]
    group = lines[0].group
    assert group is not None and group.send_rate == 9010.0 and group.states == {State.LISTEN: 1, State.ESTAB: 2}
    assert group.fill is not None and group.fill > 1  # the accept queue is past its limit
    ascending = rows(conns, "flat", "send", False)
    assert [row.conn.key for row in ascending if row.conn] == [10, 11, 20, 12]


def test_rows_filter_with_the_ls_language_and_group_by_remote_host() -> None:
    conns = Rates().update(
        [conn(1, 80, 6000, peer_host="10.0.0.9", owner=WEB), conn(2, 80, 6001, peer_host="10.0.0.10", owner=WEB), conn(3, 5432, 7000, owner=DB)],
        now=0.0,
    )
    web_only = compile_filter(["sport", "=", ":80"]).predicate
    assert {row.conn.key for row in rows(conns, "flat", "local", True, web_only) if row.conn} == {1, 2}
    hosts = [group.title for group in by_remote(conns)]
    assert sorted(hosts) == ["10.0.0.10", "10.0.0.9", "127.0.0.1"]
    by_address = [row.group.title for row in rows(conns, "remote", "remote", False) if row.conn is None and row.group]
    assert by_address == ["10.0.0.9", "10.0.0.10", "127.0.0.1"]  # as people read addresses, not as text


def test_backlog_fill_is_only_for_listeners() -> None:
    assert backlog_fill(conn(1, 80, 0, state=State.LISTEN, recv_q=64, send_q=128)) == 0.5
    assert backlog_fill(conn(2, 80, 5000, recv_q=64, send_q=128)) is None


HOLDER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
accepted, _ = server.accept()
print(server.getsockname()[1], flush=True)
for line in sys.stdin:
    # swap one socket for another: the number of open files stays the same
    accepted.close()
    client.close()
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    print(client.getsockname()[1], flush=True)
"""


def _sockets_of(pid: int) -> list[Socket]:
    from sockscope.inventory import Query, take

    found = take(Query(netids=frozenset({NetId.TCP}))).sockets
    inodes = {int(d.target[8:-1]) for d in descriptors(pid) if d.target.startswith("socket:[")}
    return [s for s in found if s.inode in inodes]


def test_owner_map_follows_a_process_that_swaps_sockets_and_forgets_it_when_it_exits() -> None:
    with subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        _follow(child)


def _follow(child: subprocess.Popen[str]) -> None:
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        holders = Holders()
        mine = _sockets_of(child.pid)
        holders.update(mine)
        assert {s.local.port for s in holders.attach(mine) if any(o.pid == child.pid for o in s.owners or ())} >= {port}  # type: ignore[union-attr]
        known = holders.processes[child.pid]
        holders.update(mine)
        assert holders.processes[child.pid] is known  # its files did not change: it was not read again
        child.stdin.write("swap\n")
        child.stdin.flush()
        new_port = int(child.stdout.readline())
        time.sleep(0.05)
        swapped = _sockets_of(child.pid)
        holders.update(swapped)
        owned = {s.local.port for s in holders.attach(swapped) if s.owners and s.owners[0].pid == child.pid}  # type: ignore[union-attr]
        assert new_port in owned
        child.stdin.close()
        child.wait(5)
        holders.update([])
        assert all(owner.pid != child.pid for owners in holders.by_inode.values() for owner in owners)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


def test_descriptors_lists_every_open_file_of_a_process() -> None:
    with socket.socket() as sock, open(__file__) as handle:
        found = {d.fd: d.target for d in descriptors(os.getpid())}
        assert found[sock.fileno()].startswith("socket:[")
        assert found[handle.fileno()] == os.path.abspath(__file__)


IN_ANOTHER_NAMESPACE = """
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print("ready", flush=True)
sys.stdin.read()
"""


@needs_root
def test_owner_map_leaves_processes_of_other_network_namespaces_unread() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    command = ["unshare", "--net", sys.executable, "-c", IN_ANOTHER_NAMESPACE]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            holders = Holders()
            holders.update([])
            assert child.pid in holders.elsewhere and child.pid not in holders.processes
            assert os.getppid() in holders.processes or os.getppid() == 1  # our own namespace is read
        finally:
            child.kill()
            child.wait(5)

"""Cross-checks with `ss` on sockets this test creates: same sockets, same owners, both sources."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from conftest import IS_ROOT, have, needs_root, sockscope
from sockscope import list_sockets
from sockscope.errors import SourceUnavailable
from sockscope.model import Endpoint, NetId, Socket, State, UnixEndpoint

pytestmark = pytest.mark.skipif(not have("ss"), reason="needs ss (iproute2)")

IPPROTO_MPTCP = 262  # not in Python's socket module before 3.10 builds with new headers
HOLDER = os.path.join(os.path.dirname(__file__), "holder.py")


@pytest.fixture(scope="module")
def held() -> Iterator[dict[str, object]]:
    proc = subprocess.Popen([sys.executable, HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    info = json.loads(proc.stdout.readline())
    yield info
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()


_LINE = re.compile(r"^(?P<netid>\S+)\s+(?P<state>\S+)\s+\d+\s+\d+\s+(?P<rest>.*)$")


def ss_rows() -> dict[int, dict[str, object]]:
    """Parse `ss -tuwxaenp`: inode -> netid, state, local, peer, owners {(pid, fd)}."""
    out = subprocess.run(["ss", "-tuwxaenpH"], capture_output=True, text=True, check=True).stdout
    rows: dict[int, dict[str, object]] = {}
    for line in out.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        netid, rest = match["netid"], match["rest"]
        users = {(int(p), int(f)) for p, f in re.findall(r"pid=(\d+),fd=(\d+)", rest)}
        ino = re.search(r"ino:(\d+)", rest)
        rest = rest.split(" users:", 1)[0]
        if netid.startswith("u_"):
            unix = re.match(r"^(?P<path>.*?)\s+(?P<ino>\d+)\s+(?P<peer>\S+)\s+(?P<peer_ino>\d+)", rest)
            assert unix, line
            inode = int(unix["ino"])
            local: object = None if unix["path"] == "*" else unix["path"]
            peer: object = int(unix["peer_ino"])
        else:
            parts = rest.split()
            if ino is None:  # ss reads raw sockets from /proc when raw_diag is missing, without -e details
                continue
            inode = int(ino.group(1))
            local, peer = parts[0], parts[1]
        rows[inode] = {"netid": netid, "state": match["state"], "local": local, "peer": peer, "owners": users}
    return rows


def text(end: Endpoint) -> str:
    host = f"[{end.address}]" if ":" in end.address else end.address
    return f"{host}:{end.port if end.port else '*'}"


def ours(sock: Socket) -> dict[str, object]:
    if isinstance(sock.local, UnixEndpoint):
        assert isinstance(sock.peer, UnixEndpoint)
        local: object = sock.local.path
        peer: object = sock.peer.inode
    else:
        assert isinstance(sock.local, Endpoint) and isinstance(sock.peer, Endpoint)
        local, peer = text(sock.local), text(sock.peer)
    owners = {(o.pid, o.fd) for o in sock.owners or ()}
    return {"netid": sock.netid.value, "state": sock.state.value, "local": local, "peer": peer, "owners": owners}


def test_same_sockets_and_owners_as_ss(held: dict[str, object]) -> None:
    inodes: dict[str, int] = held["inodes"]  # type: ignore[assignment]
    reference = ss_rows()
    mine = {s.inode: s for s in list_sockets(owners=True)}
    for name, inode in inodes.items():
        if name.startswith("raw") and inode not in reference:
            continue  # see ss_rows: compared in test_raw_sockets_are_listed instead
        assert inode in reference, f"ss does not show {name}"
        assert inode in mine, f"sockscope does not show {name}"
        theirs = reference[inode]
        got = ours(mine[inode])
        if name.startswith("raw"):  # ss prints the protocol by name (`*:icmp`); compare the rest
            got["local"] = theirs["local"]
            got["peer"] = theirs["peer"] if theirs["peer"] in ("*", "0.0.0.0:*", "[::]:*") else got["peer"]
        assert got == theirs, name


def test_shared_listener_lists_parent_and_child(held: dict[str, object]) -> None:
    inode = held["inodes"]["shared_listen"]  # type: ignore[index]
    (sock,) = [s for s in list_sockets(owners=True) if s.inode == inode]
    assert sock.owners is not None
    assert {o.pid for o in sock.owners} == {held["pid"], held["child"]}


def test_netlink_and_proc_sources_agree(held: dict[str, object]) -> None:
    def key(s: Socket) -> tuple[object, ...]:
        peer = s.peer.path if isinstance(s.peer, UnixEndpoint) else s.peer  # /proc has no unix peers
        return (s.netid, s.state, s.local, None if isinstance(s.peer, UnixEndpoint) else peer, s.inode)

    wanted = set(held["inodes"].values())  # type: ignore[attr-defined]
    compared = 0
    for kind in (NetId.TCP, NetId.UDP, NetId.RAW, NetId.UNIX_STREAM, NetId.UNIX_DGRAM, NetId.UNIX_SEQPACKET):
        try:
            netlink = {key(s) for s in list_sockets([kind], source="netlink") if s.inode in wanted}
        except SourceUnavailable:
            assert kind is NetId.RAW  # raw_diag is the one module kernels commonly lack
            continue
        # Other sockets may come and go between the two reads: compare ours, which stay put.
        proc = {key(s) for s in list_sockets([kind], source="proc") if s.inode in wanted}
        assert netlink == proc, kind
        compared += len(netlink)
    assert compared >= len(wanted) - 2


@pytest.mark.skipif(not IS_ROOT, reason="needs root to compare raw sockets")
def test_raw_sockets_are_listed(held: dict[str, object]) -> None:
    raw = held["inodes"]["raw"]  # type: ignore[index]
    found = [s for s in list_sockets([NetId.RAW]) if s.inode == raw]
    assert found and found[0].local.port == 1  # type: ignore[union-attr]  # the protocol, ICMP


# ------------------------------------------------ every kind, as a user reads it, beside ss

STATES = {state.value for state in State}


def table_row(line: str) -> list[str]:
    """Give state, Recv-Q, Send-Q, local, peer of one table line (of ss or ours; netid dropped)."""
    fields = line.split()
    while fields and fields[0] not in STATES:
        fields.pop(0)
    return fields[:5]


def ss_row(args: list[str], needle: str) -> list[str]:
    out = subprocess.run(["ss", "-H", *args], capture_output=True, text=True, errors="surrogateescape", check=True).stdout
    found = [line for line in out.splitlines() if needle in line.split() or re.search(rf"(^|\s){re.escape(needle)}(\s|$)", line)]
    assert len(found) == 1, (args, needle, found)
    return table_row(found[0])


def our_row(args: list[str], inode: int, **env: str) -> list[str]:
    result = sockscope("ls", "-H", "-e", *args, env=env or None)
    assert result.returncode == 0, result.stderr
    found = [line for line in result.stdout.splitlines() if line.split()[-1:] == [str(inode)]]
    assert len(found) == 1, (args, inode, result.stdout[-2000:])
    return table_row(found[0])[:5]


def ino(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def test_dual_stack_and_v6only_listeners_as_ss_shows_them(closing: list[socket.socket]) -> None:
    for v6only in (0, 1):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        closing.append(sock)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind(("::", 0))
        sock.listen()
    both, alone = closing
    for sock, local in ((both, "*"), (alone, "[::]")):
        port = sock.getsockname()[1]
        theirs = ss_row(["-tlne"], f"ino:{ino(sock)}")
        assert theirs[3:] == [f"{local}:{port}", f"{local}:*"]
        assert our_row(["-tln"], ino(sock)) == theirs
    rows = {row["inode"]: row for row in json.loads(sockscope("ls", "-tl", "--json").stdout)}
    assert rows[ino(both)]["v6only"] is False and rows[ino(alone)]["v6only"] is True
    assert rows[ino(both)]["local"] == {"address": "::", "port": both.getsockname()[1]}


def test_listener_bound_to_a_device_shows_it(closing: list[socket.socket]) -> None:
    bound = socket.socket()
    plain = socket.socket()
    closing += [bound, plain]
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    bound.bind(("0.0.0.0", 0))
    bound.listen()
    plain.bind(("0.0.0.0", 0))
    plain.listen()
    theirs = ss_row(["-tlne"], f"ino:{ino(bound)}")
    assert theirs[3] == f"0.0.0.0%lo:{bound.getsockname()[1]}"
    assert our_row(["-tln"], ino(bound)) == theirs
    assert our_row(["-tln"], ino(plain)) == ss_row(["-tlne"], f"ino:{ino(plain)}")
    rows = {row["inode"]: row for row in json.loads(sockscope("ls", "-tl", "--json").stdout)}
    assert rows[ino(bound)]["local"] == {"address": "0.0.0.0", "port": bound.getsockname()[1], "device": "lo"}
    assert "device" not in rows[ino(plain)]["local"] and "v6only" not in rows[ino(plain)]


@pytest.mark.skipif(not IS_ROOT, reason="needs root for packet sockets")
def test_packet_socket_protocol_and_queue_as_ss_shows_them(closing: list[socket.socket]) -> None:
    arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    closing += [arp, sender]
    sender.bind(("lo", 0))
    for _ in range(3):  # ARP frames looped back on lo: our ARP socket queues them, unread
        sender.send(b"\xff" * 6 + b"\0" * 6 + b"\x08\x06" + b"\0" * 28)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ss_row(["-0", "-a", "-e"], f"ino:{ino(arp)}")[1] == "0":
        time.sleep(0.05)
    theirs = ss_row(["-0", "-a", "-e"], f"ino:{ino(arp)}")
    assert theirs[0] == "UNCONN" and theirs[3] == "arp:*" and int(theirs[1]) > 0
    assert our_row(["-A", "packet", "-a"], ino(arp)) == theirs
    assert our_row(["-0", "-a"], ino(arp)) == theirs
    assert our_row(["-A", "packet", "-a", "--source", "proc"], ino(arp)) == theirs


def netlink_ss_row(protocol: str, portid: int) -> list[str]:
    """ss's row of a netlink socket: ss names it `rtnl:COMMAND/PORTID` when the port id is a
    pid, else `rtnl:PORTID` with the port id as a signed number."""
    signed = portid - 2**32 if portid >= 2**31 else portid
    out = subprocess.run(["ss", "-H", "-A", "netlink", "-a"], capture_output=True, text=True, check=True).stdout
    local = re.compile(rf"{protocol}:(\S+/)?{signed}")
    found = [table_row(line) for line in out.splitlines() if any(local.fullmatch(field) for field in line.split())]
    assert len(found) == 1, (protocol, portid, found)
    return found[0]


def test_connected_netlink_socket_and_its_queue_as_ss_shows_them(closing: list[socket.socket]) -> None:
    connected = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 16)  # generic netlink
    pending = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # route netlink
    closing += [connected, pending]
    connected.bind((0, 0))
    connected.connect((4242, 5))  # port 4242, groups bitmask 5: the kernel keeps group 1
    pending.bind((0, 0))
    # ask for the interface list and never read the answer: it waits in the receive queue
    pending.send(struct.pack("=IHHII", 32, 18, 0x301, 1, 0) + struct.pack("=BxHiII", 0, 0, 0, 0, 0))
    time.sleep(0.1)
    for sock, peer in ((connected, "1:4242"), (pending, "*")):
        portid = sock.getsockname()[0]
        theirs = netlink_ss_row("genl" if sock is connected else "rtnl", portid)
        assert theirs[0] == "UNCONN" and theirs[4] == peer
        for source in ("netlink", "proc"):
            mine = our_row(["-A", "netlink", "-a", "--source", source], ino(sock))
            assert mine[:3] == theirs[:3], source
            assert mine[3].endswith(f":{portid}")
            if source == "netlink":  # /proc/net/netlink does not say where a socket sends
                assert mine[4] == peer
    assert int(netlink_ss_row("rtnl", pending.getsockname()[0])[1]) > 0
    rows = {row["inode"]: row for row in json.loads(sockscope("ls", "-A", "netlink", "-a", "--json").stdout)}
    assert rows[ino(connected)]["peer"] == {"protocol": "genl", "portid": 4242, "group": 1}
    assert rows[ino(connected)]["state"] == "UNCONN" and rows[ino(pending)]["recv_q"] > 0


def test_mptcp_sockets_as_ss_shows_them(closing: list[socket.socket]) -> None:
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    except OSError as exc:
        pytest.skip(f"this kernel refuses MPTCP sockets ({exc.strerror})")
    closing.append(listener)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    closing.append(client)
    client.connect(listener.getsockname())
    server, _ = listener.accept()
    closing.append(server)
    for sock in (listener, client, server):
        try:
            theirs = ss_row(["-M", "-a", "-n", "-e"], f"ino:{ino(sock)}")
        except AssertionError:
            pytest.skip("ss -M does not list MPTCP sockets here (no mptcp_diag)")
        assert our_row(["-M", "-a", "-n"], ino(sock)) == theirs
        assert our_row(["-A", "mptcp", "-a", "-n"], ino(sock)) == theirs
    rows = json.loads(sockscope("ls", "-M", "-a", "--json").stdout)
    assert {row["netid"] for row in rows if row["inode"] == ino(listener)} == {"mptcp"}


ODD_NAMES = [b"/tmp/sockscope \xff odd", b"/tmp/sockscope new\nline", b"\0sockscope-abstract-\xfe\nname"]


@pytest.mark.parametrize("name", ODD_NAMES)
@pytest.mark.parametrize("source", ["netlink", "proc"])
def test_odd_unix_names_stay_exact_and_every_format_stays_valid(name: bytes, source: str, closing: list[socket.socket]) -> None:
    name = name.replace(b"sockscope", b"sockscope-%d" % os.getpid())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    closing.append(sock)
    sock.bind(name)
    sock.listen()
    try:
        raw = subprocess.run(["ss", "-xlH"], capture_output=True, check=True).stdout
        shown = b"@" + name[1:] if name[0] == 0 else name
        assert shown + b" " in raw  # ss itself prints the raw bytes, newline and all
        strict = {"PYTHONIOENCODING": "utf-8:strict", "SOCKSCOPE_PURE": ""}
        listing = sockscope_bytes_env(["ls", "-xl", "--json", "--source", source], strict)
        rows = [row for row in json.loads(listing.decode("utf-8")) if row["inode"] == ino(sock)]
        assert len(rows) == 1
        assert base64.b64decode(rows[0]["local"].get("path_b64", "")) == shown or rows[0]["local"]["path"].encode() == shown
        assert "path_b64" in rows[0]["local"] if b"\xff" in name or b"\xfe" in name else "path_b64" not in rows[0]["local"]
        table = sockscope_bytes_env(["ls", "-xl", "-e", "--source", source], strict).decode("utf-8")
        assert len([line for line in table.splitlines() if line.endswith(f" {ino(sock)}")]) == 1
        assert all(line.split()[0] in ("u_str", "u_dgr", "u_seq") for line in table.splitlines()[1:])  # no row broken in two
        csv_text = sockscope_bytes_env(["ls", "-xl", "--csv", "--source", source], strict).decode("utf-8")
        assert len([row for row in csv.reader(io.StringIO(csv_text)) if row[9:10] == [str(ino(sock))]]) == 1
        sockscope_bytes_env(["listening"], strict).decode("utf-8")
        sockscope_bytes_env(["summary"], strict).decode("utf-8")
    finally:
        if name[0] != 0:
            os.unlink(name)


def sockscope_bytes_env(args: list[str], env: dict[str, str]) -> bytes:
    result = subprocess.run([sys.executable, "-m", "sockscope", *args], capture_output=True, env=dict(os.environ, **env), timeout=60, check=False)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result.stdout


@needs_root
def test_devices_in_another_namespace_as_ss_shows_them() -> None:
    name = f"sockscope-inv-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        inside = ["ip", "netns", "exec", name]
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        for kind in (["dummy"], ["veth", "peer", "name", "dummy1"], ["bridge"]):  # kernels lack one or another
            made = subprocess.run([*inside, "ip", "link", "add", "dummy0", "type", *kind], check=False, capture_output=True, text=True)
            if made.returncode == 0:
                break
        else:
            pytest.skip(f"cannot make a second interface: {made.stderr.strip()}")
        subprocess.run([*inside, "ip", "link", "set", "dummy0", "up"], check=True)
        code = (
            "import socket,sys\n"
            "held=[]\n"
            "for dev in (b'lo', b'dummy0'):\n"
            "    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev); s.bind(('0.0.0.0', 4242)); s.listen(); held.append(s)\n"
            "print('ready', flush=True); sys.stdin.read()\n"
        )
        holder = subprocess.Popen([*inside, sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdin is not None
        try:
            assert holder.stdout.readline().strip() == "ready"
            theirs = subprocess.run([*inside, "ss", "-tlnH"], capture_output=True, text=True, check=True).stdout
            expected = sorted(table_row(line)[3] for line in theirs.splitlines() if ":4242" in line)
            assert expected == ["0.0.0.0%dummy0:4242", "0.0.0.0%lo:4242"]
            mine = sockscope("ls", "-tln", "-H", "--netns", name)
            assert sorted(line.split()[4] for line in mine.stdout.splitlines() if ":4242" in line) == expected
            rows = json.loads(sockscope("ls", "-tl", "--json", "--netns", name).stdout)
            assert sorted(row["local"]["device"] for row in rows if row["local"]["port"] == 4242) == ["dummy0", "lo"]
        finally:
            holder.stdin.close()
            holder.wait(10)
            holder.stdout.close()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@needs_root
def test_netns_all_as_an_unprivileged_user_lists_its_own_namespace(closing: list[socket.socket]) -> None:
    name = f"sockscope-closed-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        listener = socket.create_server(("127.0.0.1", 0))
        closing.append(listener)
        result = sockscope("ls", "-tln", "--netns", "all", user="65534")
        assert result.returncode == 0, result.stderr
        assert any(f"127.0.0.1:{listener.getsockname()[1]}" in line and line.startswith("self ") for line in result.stdout.splitlines())
        notes = result.stderr.splitlines()
        assert len(notes) == 1 and name in notes[0] and "could not be entered" in notes[0]
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)

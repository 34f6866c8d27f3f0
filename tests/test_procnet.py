"""/proc/net parsing from recorded files, and the netlink source agreeing with it."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, sockscope
from sockscope.errors import DecodeError, SockscopeError
from sockscope.inventory import procnet
from sockscope.model import Endpoint, NetId, State, UnixEndpoint

NET = os.path.join(FIXTURES, "proc", "net")


def read(name: str) -> str:
    with open(os.path.join(NET, name)) as handle:
        return handle.read()


def test_tcp_file_has_the_recorded_sockets(expected):  # type: ignore[no-untyped-def]
    found = {s.inode: s for s in procnet.parse_inet(read("tcp"), "tcp", "tcp")}
    port, inode = expected["tcp_listen"]
    assert found[inode].local == Endpoint("127.0.0.1", port) and found[inode].state is State.LISTEN
    _cport, cinode = expected["tcp_client"]
    assert found[cinode].peer == Endpoint("127.0.0.1", port) and found[cinode].state is State.ESTAB


def test_tcp6_and_udp(expected):  # type: ignore[no-untyped-def]
    port, inode = expected["tcp6_listen"]
    assert any(s.inode == inode and s.local == Endpoint("::1", port) for s in procnet.parse_inet(read("tcp6"), "tcp", "tcp6"))
    port, inode = expected["udp"]
    udp = [s for s in procnet.parse_inet(read("udp"), "udp", "udp") if s.inode == inode]
    assert udp and udp[0].state is State.UNCONN and udp[0].netid is NetId.UDP


def test_unix_file_paths_with_spaces_and_abstract(expected):  # type: ignore[no-untyped-def]
    found = {s.inode: s for s in procnet.parse_unix(read("unix"), "unix")}
    path, inode = expected["unix_listen"]
    assert found[inode].local == UnixEndpoint(path, 0) and found[inode].state is State.LISTEN
    name, inode = expected["unix_abstract"]
    assert found[inode].local.path == name


def test_netlink_file():
    assert any(s.local.protocol == "rtnl" for s in procnet.parse_netlink(read("netlink"), "netlink"))


def test_bad_line_names_file_and_line():
    text = read("tcp") + "   9: zzzz garbage\n"
    with pytest.raises(DecodeError, match=r"/proc/net/tcp line \d+"):
        procnet.parse_inet(text, "tcp", "/proc/net/tcp")


def test_missing_file_is_unavailable_not_a_crash(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(SockscopeError, match="not present"):
        procnet.read(str(tmp_path), "tcp")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789ABCDEF: /@x\t", max_size=120), max_size=5))
def test_random_lines_parse_or_raise_decode_error(lines: list[str]) -> None:
    text = "header\n" + "\n".join(lines)
    for parse in (
        lambda t: procnet.parse_inet(t, "tcp", "f"),
        lambda t: procnet.parse_unix(t, "f"),
        lambda t: procnet.parse_netlink(t, "f"),
        lambda t: procnet.parse_packet(t, "f", str),
    ):
        with contextlib.suppress(DecodeError):
            parse(text)


UNIX_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"


def unix_line(inode: int, path: str | None, flags: str = "00010000", state: str = "01") -> str:
    return f"0000000000000000: 00000002 00000000 {flags} 0001 {state} {inode:5d}" + (f" {path}" if path is not None else "") + "\n"


def test_unix_name_holding_newlines_is_joined_back() -> None:
    text = UNIX_HEADER + unix_line(101, "/tmp/a\nb\n\nc") + unix_line(102, "@abs\r\x0bx") + unix_line(103, None, "00000000", "03")
    found = {s.inode: s for s in procnet.parse_unix(text, "unix", skipped=[])}
    assert found[101].local.path == "/tmp/a\nb\n\nc" and found[101].state is State.LISTEN
    assert found[102].local.path == "@abs\r\x0bx"  # only "\n" ends a line
    assert found[103].local.path is None and found[103].state is State.ESTAB


def test_unix_line_that_cannot_be_read_is_skipped_and_counted() -> None:
    text = UNIX_HEADER + unix_line(201, None, "00000000") + "garbage here\n" + unix_line(202, "/run/x.sock")
    skipped: list[str] = []
    found = procnet.parse_unix(text, "unix", skipped=skipped)
    assert [s.inode for s in found] == [201, 202] and skipped == ["line 3"]
    with pytest.raises(DecodeError, match="unix line 3"):
        procnet.parse_unix(text, "unix")


def test_bad_inet_netlink_and_packet_lines_are_skipped_when_asked() -> None:
    for parse, name in (
        (lambda t, s: procnet.parse_inet(t, "tcp", "tcp", None, s), "tcp"),
        (lambda t, s: procnet.parse_netlink(t, "netlink", None, s), "netlink"),
        (lambda t, s: procnet.parse_packet(t, "packet", str, None, s), "packet"),
    ):
        good = read(name) if name != "packet" else "sk RefCnt Type Proto Iface R Rmem User Inode\nffff 3 3 0806 0 1 2496 0 77\n"
        skipped: list[str] = []
        found = parse(good + "   9: zzzz garbage\n", skipped)
        assert found == parse(good, []) and len(skipped) == 1, name


def test_packet_file_protocol_and_queue() -> None:
    text = "sk       RefCnt Type Proto  Iface R Rmem   User   Inode\n000000007391105a 3      3    0806   0     1 2496   0      86466 \n"
    (sock,) = procnet.parse_packet(text, "packet", lambda index: "*" if index == 0 else str(index))
    assert (sock.local.protocol, sock.local.interface, sock.recv_q, sock.send_q) == ("arp", "*", 2496, 0)  # type: ignore[union-attr]


def test_listing_survives_a_broken_proc_file_with_one_note(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "unix").write_bytes(
        (UNIX_HEADER + unix_line(301, "/tmp/sockscope\nsplit") + unix_line(302, None, "00000000") + "??\n").encode()
        + b"\xff\xfe junk\n"
        + unix_line(303, "/run/ok.sock").encode()
    )
    result = sockscope("ls", "-xa", "-e", "--source", "proc", "-H", env={"SOCKSCOPE_PROC": str(tmp_path), "PYTHONIOENCODING": "utf-8:strict"})
    assert result.returncode == 0, result.stderr
    assert [line.split()[-1] for line in result.stdout.splitlines()] == ["301", "302", "303"]
    assert "/tmp/sockscope\\nsplit" in result.stdout
    notes = result.stderr.splitlines()
    assert len(notes) == 1 and "skipped 2 lines" in notes[0] and "/net/unix" in notes[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789ABCDEF: /@x\t\n\r", max_size=120), max_size=5))
def test_random_lines_never_abort_a_listing(lines: list[str]) -> None:
    text = "header\n" + "\n".join(lines)
    for parse in (
        lambda t: procnet.parse_inet(t, "tcp", "f", None, []),
        lambda t: procnet.parse_unix(t, "f", None, []),
        lambda t: procnet.parse_netlink(t, "f", None, []),
        lambda t: procnet.parse_packet(t, "f", str, None, []),
    ):
        parse(text)

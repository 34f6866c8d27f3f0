"""/proc/net parsing from recorded files, and the netlink source agreeing with it."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
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

"""Netlink decoding from recorded replies, and its behaviour on damaged input."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import chunks
from sockscope.errors import DecodeError, PermissionDenied, SockscopeError, SourceUnavailable
from sockscope.inventory import diag, fill_unix_peers
from sockscope.model import Endpoint, NetId, NetlinkEndpoint, PacketEndpoint, State, UnixEndpoint


def decode_all(name: str, decode):  # type: ignore[no-untyped-def]
    out = []
    done = False
    for chunk in chunks(name):
        spans, done = diag.frame(chunk, name)
        out += decode(chunk, spans)
    assert done, "the recorded dump ends with NLMSG_DONE"
    return out


def test_tcp_fixture_has_the_recorded_listener_and_connection(expected):  # type: ignore[no-untyped-def]
    found = decode_all("tcp4", lambda c, s: diag.decode_inet(c, s, socket.IPPROTO_TCP, diag.AddressText()))
    by_inode = {s.inode: s for s in found}
    port, inode = expected["tcp_listen"]
    listener = by_inode[inode]
    assert (listener.netid, listener.state, listener.local) == (NetId.TCP, State.LISTEN, Endpoint("127.0.0.1", port))
    assert listener.peer == Endpoint("0.0.0.0", 0)
    client_port, client_inode = expected["tcp_client"]
    _server_port, server_inode = expected["tcp_server"]
    client, server = by_inode[client_inode], by_inode[server_inode]
    assert client.state is State.ESTAB and client.local.port == client_port
    assert client.peer == Endpoint("127.0.0.1", port)
    assert server.peer == client.local


def test_tcp6_fixture_listener(expected):  # type: ignore[no-untyped-def]
    found = decode_all("tcp6", lambda c, s: diag.decode_inet(c, s, socket.IPPROTO_TCP, diag.AddressText()))
    port, inode = expected["tcp6_listen"]
    assert any(s.inode == inode and s.local == Endpoint("::1", port) and s.family.value == "inet6" for s in found)


def test_unix_fixture_paths_abstract_and_pairs(expected):  # type: ignore[no-untyped-def]
    found = fill_unix_peers(decode_all("unix", diag.decode_unix))
    by_inode = {s.inode: s for s in found}
    path, inode = expected["unix_listen"]
    assert by_inode[inode].local == UnixEndpoint(path, 0) and by_inode[inode].state is State.LISTEN
    name, inode = expected["unix_abstract"]
    assert by_inode[inode].local.path == name and by_inode[inode].netid is NetId.UNIX_DGRAM
    left, right = expected["unix_pair"]
    assert by_inode[left].peer.inode == right and by_inode[right].peer.inode == left
    assert by_inode[left].local.path is None


def test_netlink_fixture_has_the_kernel_rtnl_socket():
    found = decode_all("netlink", diag.decode_netlink)
    assert any(s.local.protocol == "rtnl" and s.local.portid == 0 for s in found)


def test_irregular_chunks_are_walked_message_by_message():
    # Splice messages of two lengths into one chunk: the fast path must step aside.
    chunk = chunks("tcp4")[0]
    spans, _ = diag.frame(chunk, "t")
    offset, length, _count = spans[0]
    first = chunk[offset : offset + length]
    longer = bytearray(first + b"\0" * 8)
    struct.pack_into("=I", longer, 0, length + 8)
    mixed = bytes(first + longer + first)
    spans, done = diag.frame(mixed, "t")
    assert not done and [s[2] for s in spans] == [1, 1, 1]
    decoded = diag.decode_inet(mixed, spans, socket.IPPROTO_TCP, diag.AddressText())
    assert decoded[0] == decoded[1] == decoded[2]


def test_truncated_message_names_the_source():
    chunk = chunks("tcp4")[0]
    with pytest.raises(DecodeError, match="netlink inet_diag tcp"):
        diag.frame(chunk[:-7], "netlink inet_diag tcp")


def test_short_inet_message_is_a_decode_error():
    message = diag.request(b"\0" * 20)
    spans, _ = diag.frame(message, "t")
    with pytest.raises(DecodeError, match="shorter than inet_diag_msg"):
        diag.decode_inet(message, spans, socket.IPPROTO_TCP, diag.AddressText())


@pytest.mark.parametrize(("code", "error"), [(1, PermissionDenied), (2, SourceUnavailable), (22, SourceUnavailable)])
def test_kernel_error_replies_become_typed_errors(code, error):  # type: ignore[no-untyped-def]
    reply = struct.pack("=IHHIIi", 20, diag.NLMSG_ERROR, 0, 1, 0, -code)
    with pytest.raises(error):
        diag.frame(reply, "t")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_our_error(data: bytes) -> None:
    for decode in (
        lambda c, s: diag.decode_inet(c, s, socket.IPPROTO_TCP, diag.AddressText()),
        diag.decode_unix,
        diag.decode_netlink,
        diag.decode_vsock,
        lambda c, s: diag.decode_packet(c, s, str),
    ):
        try:
            spans, _done = diag.frame(data, "fuzz")
            decode(data, spans)
        except SockscopeError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.binary(min_size=1, max_size=40))
def test_damaged_recorded_reply_decodes_or_raises_our_error(cut: int, junk: bytes) -> None:
    chunk = chunks("unix")[0]
    damaged = chunk[: len(chunk) - cut] + junk
    try:
        spans, _ = diag.frame(damaged, "fuzz")
        diag.decode_unix(damaged, spans)
    except SockscopeError:
        pass


def diag_message(body: bytes, attrs: list[tuple[int, bytes]]) -> bytes:
    for kind, value in attrs:
        body += struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)
    return struct.pack("=IHHII", 16 + len(body), diag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def meminfo(rmem: int, wmem: int) -> bytes:
    return struct.pack("=9I", rmem, 212992, wmem, 212992, 0, 0, 0, 0, 0)


def test_packet_protocol_is_in_host_order_and_queue_from_meminfo() -> None:
    body = struct.pack("=BBHI8x", socket.AF_PACKET, socket.SOCK_RAW, 0x0806, 4242)
    info = struct.pack("=IIIIII", 1, 0, 0, 0, 0, 0)
    message = diag_message(body, [(diag.PACKET_DIAG_INFO, info), (diag.PACKET_DIAG_UID, struct.pack("=I", 1000)), (diag.PACKET_DIAG_MEMINFO, meminfo(2496, 7))])
    spans, _ = diag.frame(message, "t")
    (sock,) = diag.decode_packet(message, spans, lambda index: {0: "*", 1: "lo"}[index])
    assert sock.local == PacketEndpoint("arp", "lo") and (sock.recv_q, sock.send_q, sock.uid) == (2496, 0, 1000)


def test_netlink_connected_socket_is_unconn_with_its_destination_as_peer() -> None:
    connected = struct.pack("=BBBBIIII8x", socket.AF_NETLINK, socket.SOCK_DGRAM, 16, diag.NETLINK_CONNECTED, 777, 4242, 1, 99)
    alone = struct.pack("=BBBBIIII8x", socket.AF_NETLINK, socket.SOCK_RAW, 0, 0, 778, 0, 0, 100)
    chunk = diag_message(connected, [(diag.NETLINK_DIAG_MEMINFO, meminfo(4352, 0))]) + diag_message(alone, [])
    spans, _ = diag.frame(chunk, "t")
    first, second = diag.decode_netlink(chunk, spans)
    assert (first.state, first.recv_q, first.local, first.peer) == (State.UNCONN, 4352, NetlinkEndpoint("genl", 777), NetlinkEndpoint("genl", 4242, 1))
    assert (second.state, second.recv_q, second.peer) == (State.UNCONN, 0, diag.NETLINK_UNCONNECTED)


def test_mptcp_request_names_its_protocol_in_an_attribute() -> None:
    request = diag.inet_request(socket.AF_INET, diag.IPPROTO_MPTCP, 0xFFF)
    assert request[17] == diag.IPPROTO_MPTCP & 0xFF
    assert request[-8:] == struct.pack("=HHI", 8, diag.INET_DIAG_REQ_PROTOCOL, 262)
    assert len(diag.inet_request(socket.AF_INET, socket.IPPROTO_TCP, 0xFFF)) == 16 + 56  # no attribute for the others


def test_tcp_info_of_a_live_socket_matches_what_the_kernel_counted() -> None:
    import socket

    from sockscope.inventory import diag

    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as client:
        server, _ = listener.accept()
        with server:
            client.sendall(b"x" * 5000)
            got = 0
            while got < 5000:
                got += len(server.recv(65536))
            server.sendall(b"y" * 777)
            assert len(client.recv(1000)) == 777
            info = diag.tcp_info(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512))
            assert info.state == 1
            assert info.bytes_sent == 5000 and info.bytes_received == 777
            # the first 104 bytes are every kernel's: the newer counters are then unknown
            old = diag.tcp_info(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104))
            assert old.bytes_acked is None and old.rtt_us > 0

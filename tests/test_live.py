"""The live room without the command: destroy messages decoded from bytes, byte counts from
tcp_info, directions, the diff by cookie, and a subscription that overflows counting its losses."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from sockscope.errors import DecodeError
from sockscope.inventory import diag
from sockscope.live import closing
from sockscope.live.event import data_bytes, direction_of, never_established
from sockscope.live.snapshot import diff, is_connection, listening_ports
from sockscope.model import Endpoint, Family, NetId, Socket, State, TcpInfo

TCP_INFO_SIZE = 232


def destroy_message(cookie: int, sport: int, dport: int, protocol: int = socket.IPPROTO_TCP, info: bytes | None = None) -> bytes:
    """A message as the kernel multicasts it when a socket is freed (inet_diag_handler_get_info)."""
    body = struct.pack("=BBBB", socket.AF_INET, 7, 0, 0)
    body += struct.pack(">HH", sport, dport)
    body += socket.inet_aton("127.0.0.1") + bytes(12) + socket.inet_aton("127.0.0.2") + bytes(12)
    body += struct.pack("=IQ", 0, cookie)
    body += struct.pack("=IIIII", 0, 0, 0, 0, 0)  # expires, rqueue, wqueue, uid, inode: the kernel leaves uid and inode 0
    attrs = struct.pack("=HHB3x", 5, closing.INET_DIAG_PROTOCOL, protocol)
    if info is not None:
        attrs += struct.pack("=HH", 4 + len(info), diag.INET_DIAG_INFO) + info
    payload = body + attrs
    return struct.pack("=IHHII", 16 + len(payload), diag.SOCK_DIAG_BY_FAMILY, 0, 0, 0) + payload


def tcp_info_bytes(acked: int, received: int, sent: int, retrans: int, total_retrans: int = 0) -> bytes:
    raw = bytearray(TCP_INFO_SIZE)
    struct.pack_into("=I", raw, 100, total_retrans)
    struct.pack_into("=QQ", raw, 120, acked, received)
    struct.pack_into("=QQ", raw, 200, sent, retrans)
    return bytes(raw)


def test_a_destroy_message_decodes_to_the_closed_socket_with_its_final_counts() -> None:
    message = destroy_message(0x1234_5678_9ABC, 40000, 8080, info=tcp_info_bytes(1001, 301, 1000, 0, 2))
    [closed] = closing.decode(message, diag.AddressText())
    assert closed.cookie == 0x1234_5678_9ABC
    assert closed.local == Endpoint("127.0.0.1", 40000) and closed.peer == Endpoint("127.0.0.2", 8080)
    assert closed.netid is NetId.TCP and closed.inode == 0
    assert closed.uid is None  # not root's: the kernel does not say whose
    assert closed.internals is not None and closed.internals.tcp is not None
    info = closed.internals.tcp
    assert (info.bytes_acked, info.bytes_received, info.bytes_sent, info.total_retrans) == (1001, 301, 1000, 2)


def test_a_udp_destroy_message_has_no_counts_and_other_protocols_are_left_out() -> None:
    [udp] = closing.decode(destroy_message(7, 5353, 53, socket.IPPROTO_UDP), diag.AddressText())
    assert udp.netid is NetId.UDP and (udp.internals is None or udp.internals.tcp is None)
    assert closing.decode(destroy_message(8, 1, 2, 132), diag.AddressText()) == []


def test_a_truncated_destroy_message_is_our_error_not_a_crash() -> None:
    message = destroy_message(9, 1, 2, info=tcp_info_bytes(0, 0, 0, 0))
    with pytest.raises(DecodeError, match="destroy message"):
        closing.decode(message[:50], diag.AddressText())


def info(received: int, sent: int | None, retrans: int | None, acked: int = 0) -> TcpInfo:
    head = [0] * 33
    return TcpInfo(*head, bytes_acked=acked, bytes_received=received, bytes_sent=sent, bytes_retrans=retrans)  # type: ignore[misc]


def test_data_bytes_leave_out_retransmits_and_the_peer_fin_when_it_is_known() -> None:
    assert data_bytes(info(301, 1200, 200), True) == (1000, 300, True)
    assert data_bytes(info(300, 1000, 0), False) == (1000, 300, True)
    assert data_bytes(info(301, 1000, 0), None) == (1000, 301, False)  # unknown: as counted, and said so
    assert data_bytes(info(0, None, None, acked=51), None)[0] == 50  # old kernels: acked less our FIN
    assert data_bytes(None, True) == (None, None, True)


def test_a_connection_that_never_got_through_is_told_apart() -> None:
    refused = info(0, 0, 0)._replace(delivered=0, min_rtt_us=0xFFFFFFFF)
    reset_after_handshake = info(0, 0, 0)._replace(delivered=1, min_rtt_us=35)
    assert never_established(refused)
    assert not never_established(reset_after_handshake)
    assert not never_established(None)


def sock(state: State, local: int, peer: int, netid: NetId = NetId.TCP, cookie: int = 1, address: str = "127.0.0.1") -> Socket:
    return Socket(netid, Family.INET, state, 0, 0, Endpoint(address, local), Endpoint("127.0.0.1" if peer else "0.0.0.0", peer), 5, 0, cookie=cookie)


def test_directions_come_from_the_listening_ports() -> None:
    listening = listening_ports([sock(State.LISTEN, 8080, 0, address="0.0.0.0"), sock(State.LISTEN, 9090, 0, address="127.0.0.1")])
    assert direction_of(sock(State.ESTAB, 8080, 40000), listening) == "in"
    assert direction_of(sock(State.ESTAB, 9090, 40000, address="127.0.0.1"), listening) == "in"
    assert direction_of(sock(State.ESTAB, 9090, 40000, address="127.0.0.5"), listening) == "out"  # another address
    assert direction_of(sock(State.ESTAB, 40000, 8080), listening) == "out"
    assert direction_of(sock(State.LISTEN, 8080, 0), listening) == "listen"
    assert direction_of(sock(State.UNCONN, 5353, 0, NetId.UDP), listening) == "bound"
    assert direction_of(sock(State.ESTAB, 5353, 53, NetId.UDP), listening) == "out"


def test_connections_are_tcp_sockets_past_close_and_bound_udp_ones() -> None:
    assert is_connection(sock(State.ESTAB, 1, 2))
    assert not is_connection(sock(State.UNCONN, 0, 0))  # created, never connected
    assert is_connection(sock(State.UNCONN, 40000, 80))  # reset, still held: it names its peer
    assert is_connection(sock(State.UNCONN, 53, 0, NetId.UDP))
    assert not is_connection(sock(State.UNCONN, 0, 0, NetId.UDP))


def test_the_diff_goes_by_cookie_not_by_ports() -> None:
    old = sock(State.ESTAB, 40000, 80, cookie=1)
    same_ports_new_socket = sock(State.ESTAB, 40000, 80, cookie=2)
    change = diff({1: old}, {2: same_ports_new_socket})
    assert change.opened == [same_ports_new_socket] and change.gone == [1]
    assert diff({1: old}, {1: old._replace(state=State.CLOSE_WAIT)}) == ([], [])


def test_a_subscription_that_overflows_counts_what_it_lost() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with closing.Subscription([(Family.INET, NetId.TCP)], buffer_bytes=4096) as subscription:
        for _ in range(300):
            client = socket.create_connection(listener.getsockname())
            accepted, _peer = listener.accept()
            client.close()
            accepted.close()
        time.sleep(0.2)
        reading = subscription.read()
        again = subscription.read()
    listener.close()
    assert reading.lost > 0
    assert len(reading.closed) + reading.lost >= 600  # every close is either told or counted lost
    assert again.lost == 0 and again.closed == []

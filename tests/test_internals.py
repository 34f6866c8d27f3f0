"""TCP internals, socket memory, timers and cgroups: decoding (any kernel's length), ss's words, cgroup paths."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from sockscope.cli import internals as words
from sockscope.errors import DecodeError
from sockscope.inventory import cgroups, diag
from sockscope.model import Internals, SocketMemory, State, TcpInfo, Timer

# A struct tcp_info as a 6.2+ kernel sends it (240 bytes), each field a different number so a
# field read from the wrong place shows: head bytes 1..8, then u32 101.., then the tail.
HEAD = bytes([1, 0, 0, 0, 0, 7, 0x7A, 1])
HEAD_WORDS = list(range(101, 125))
TAIL_VALUES = list(range(1001, 1025))
FULL = HEAD + struct.pack("=24I", *HEAD_WORDS) + struct.pack("=" + "".join(diag._TCP_INFO_TAIL), *TAIL_VALUES)
# Where each kernel's struct tcp_info ended (bytes): 3.x, pacing (3.15), bytes_acked (4.1),
# segs (4.2), min_rtt (4.6), delivery_rate (4.9), busy (4.10), delivered (4.18), bytes_sent
# (4.19), rcv_ooopack (5.4), snd_wnd (5.4), rcv_wnd/rehash (6.2).
KERNEL_LENGTHS = {104: 0, 120: 2, 136: 4, 144: 6, 160: 10, 168: 11, 192: 14, 200: 16, 224: 20, 228: 21, 232: 22, 240: 24}
RATES = {0, 1, 10}


def test_full_tcp_info_fields_are_where_the_kernel_puts_them() -> None:
    info = diag.tcp_info(FULL)
    assert len(FULL) == 240
    assert (info.state, info.options, info.snd_wscale, info.rcv_wscale, info.app_limited) == (1, 7, 0xA, 0x7, True)
    assert (info.rto_us, info.rtt_us, info.total_retrans) == (101, 116, 124)
    assert info.pacing_rate_bps == 1001 * 8 and info.delivery_rate_bps == 1011 * 8  # bytes/s -> bits/s, as ss
    assert (info.bytes_acked, info.rcv_ooopack, info.rehash) == (1003, 1021, 1024)


@pytest.mark.parametrize(("length", "known"), sorted(KERNEL_LENGTHS.items()))
def test_older_kernels_tcp_info_leaves_the_newer_fields_unknown(length: int, known: int) -> None:
    info = diag.tcp_info(FULL[:length])
    tail = info[33:]
    assert info[:33] == diag.tcp_info(FULL)[:33]
    expected = [value * 8 if index in RATES else value for index, value in enumerate(TAIL_VALUES[:known])]
    assert list(tail[:known]) == expected and set(tail[known:]) <= {None}


def test_newer_kernels_longer_tcp_info_is_read_up_to_what_we_know() -> None:
    assert diag.tcp_info(FULL + b"\xff" * 12) == diag.tcp_info(FULL)


def test_tcp_info_cut_between_fields_keeps_whole_fields_only() -> None:
    for length in range(104, 241):
        info = diag.tcp_info(FULL[:length])
        present = sum(value is not None for value in info[33:])
        ends = [104 + sum(8 if kind == "Q" else 4 for kind in diag._TCP_INFO_TAIL[: index + 1]) for index in range(24)]
        assert present == sum(end <= length for end in ends), length


def test_short_tcp_info_is_our_error() -> None:
    with pytest.raises(DecodeError, match="shorter than the 104"):
        diag.tcp_info(FULL[:103])


def test_unlimited_pacing_rate_stays_the_kernels_all_ones() -> None:
    raw = bytearray(FULL)
    struct.pack_into("=Q", raw, 112, diag.NO_RATE_LIMIT)  # max_pacing_rate
    info = diag.tcp_info(bytes(raw))
    assert info.max_pacing_rate_bps == diag.NO_RATE_LIMIT
    line = words.tcp_words(info, None, State.ESTAB, True, False)
    assert "pacing_rate 8008bps" in line  # no "/max": ss leaves out a limit that is not set


def test_live_tcp_info_cut_to_old_kernels_still_decodes() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as client:
        server, _ = listener.accept()
        with server:
            client.sendall(b"q" * 1234)
            assert server.recv(2000)
            raw = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
    for length in KERNEL_LENGTHS:
        info = diag.tcp_info(raw[:length])
        assert info.state == 1 and info.snd_mss > 0
        assert (info.bytes_acked is None) == (length < 136)
    assert diag.tcp_info(raw).bytes_sent == 1234


def test_socket_memory_of_old_and_new_kernels() -> None:
    assert diag.socket_memory(struct.pack("=7I", *range(7))) == SocketMemory(0, 1, 2, 3, 4, 5, 6)
    assert diag.socket_memory(struct.pack("=10I", *range(10))) == SocketMemory(*range(9))
    assert words.memory_words(SocketMemory(0, 1, 2, 3, 4, 5, 6)) == "skmem:(r0,rb1,t2,tb3,f4,w5,o6)"
    assert words.memory_words(SocketMemory(*range(9))) == "skmem:(r0,rb1,t2,tb3,f4,w5,o6,bl7,d8)"
    with pytest.raises(DecodeError):
        diag.socket_memory(b"\0" * 24)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (7_140_000, "119min"),
        (600_000, "10min"),
        (61_500, "1min1sec"),
        (59_000, "59sec"),
        (9_500, "9.500sec"),
        (4_952, "4.952sec"),
        (200, "200ms"),
        (1_000, "1sec"),
        (0, ""),
        (-1, "71582min"),  # late: ss reads the kernel's number as unsigned
    ],
)
def test_timer_time_left_as_ss_prints_it(ms: int, text: str) -> None:
    assert words.timer_text(ms) == text


def test_timer_decoding_names_every_kernel_timer() -> None:
    assert diag.timer(0, 5, 0) is None
    assert diag.timer(2, 7_140_000, 0) == Timer("keepalive", 7_140_000, 0)
    assert diag.timer(4, 200, 3) == Timer("persist", 200, 3)
    assert diag.timer(5, 40, 0) == Timer("delack", 40, 0)
    assert diag.timer(9, 40, 0) == Timer("unknown", 40, 0)
    assert diag.timer(1, 2**32 - 10, 1) == Timer("on", -10, 1)
    assert words.timer_words(Timer("on", 204, 2)) == "timer:(on,204ms,2)"


@pytest.mark.parametrize(
    ("bps", "numeric", "text"),
    [(131_072_000_000, False, "131Gbps"), (1_250_000_000_000, False, "1.25Tbps"), (999, False, "999bps"), (1500, False, "1.5kbps"), (12.5, True, "12bps")],
)
def test_rates_as_ss_prints_them(bps: float, numeric: bool, text: str) -> None:
    assert words.rate_text(bps, numeric) + "bps" == text


def test_ss_leaves_out_what_the_kernel_leaves_unset() -> None:
    listener = TcpInfo(*([10, 0, 0, 0, 0, 0, 0, 0, False] + [0] * 5 + [128] + [0] * 11 + [0x7FFFFFFF, 10, 0, 3, 0, 0, 0]))
    assert words.tcp_words(listener, "cubic", State.LISTEN, True, True) == ["cubic", "cwnd:10"]  # no sacked (backlog), ssthresh, rto
    extra = Internals(listener, "cubic", SocketMemory(0, 1, 2, 3, 4, 5, 6, 7, 8), Timer("on", 204, 0), 1, "/", None)
    line = words.line(extra, State.LISTEN, frozenset({"info", "memory", "timers", "cgroup"}), True)
    assert line == "\t timer:(on,204ms,0) cgroup:/ skmem:(r0,rb1,t2,tb3,f4,w5,o6,bl7,d8) cubic cwnd:10"
    assert words.line(Internals(), State.ESTAB, frozenset({"info"}), True) == ""


def test_internals_of_a_message_decode_only_what_is_asked() -> None:
    body = struct.pack("=BBBB", socket.AF_INET, 1, 2, 3) + b"\0" * 48 + struct.pack("=I", 7_140_000) + b"\0" * 16
    attrs = {diag.INET_DIAG_INFO: memoryview(FULL), diag.INET_DIAG_CONG: memoryview(b"cubic\0"), diag.INET_DIAG_CGROUP_ID: memoryview(struct.pack("=Q", 77))}
    message = memoryview(b"\0" * 16 + body)
    bare = diag.internals(message, attrs)
    assert bare.tcp == diag.tcp_info(FULL) and bare.congestion == "cubic" and bare.timer is None and bare.cgroup_id is None
    full = diag.internals(message, attrs, timers=True, cgroups=True)
    assert full.timer == Timer("keepalive", 7_140_000, 3) and full.cgroup_id == 77


# ---------------------------------------------------------------- cgroups


def test_cgroup2_mount_point_from_mounts_text() -> None:
    mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/un\\040ified cgroup2 rw 0 0\n"
    assert cgroups.mount_point(mounts) == "/sys/fs/cgroup/un ified"
    assert cgroups.mount_point("proc /proc proc rw 0 0\n") is None


def test_cgroup_paths_are_found_by_directory_inode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "system.slice" / "nginx.service").mkdir(parents=True)
    (tmp_path / "user.slice").mkdir()
    (tmp_path / "cgroup.procs").write_text("")
    found = cgroups.paths(str(tmp_path))
    assert found[os.stat(tmp_path).st_ino] == "/"
    assert found[os.stat(tmp_path / "system.slice" / "nginx.service").st_ino] == "/system.slice/nginx.service"
    assert sorted(found.values()) == ["/", "/system.slice", "/system.slice/nginx.service", "/user.slice"]
    assert cgroups.paths(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize(
    ("path", "container"),
    [
        ("/system.slice/docker-" + "0123456789ab" * 5 + "0123.scope", "0123456789ab"),
        ("/machine.slice/libpod-" + "c" * 64 + ".scope/container", "cccccccccccc"),
        ("/kubepods.slice/kubepods-burstable.slice/cri-containerd-" + "d" * 64 + ".scope", "dddddddddddd"),
        ("/kubepods.slice/crio-" + "e" * 64 + ".scope", "eeeeeeeeeeee"),
        ("/docker/" + "a" * 64, "aaaaaaaaaaaa"),
        ("/kubepods/burstable/pod1234/" + "b" * 64, "bbbbbbbbbbbb"),
        ("/lxc.payload.web/init.scope", "web"),
        ("/system.slice/nginx.service", None),
        ("/", None),
        (None, None),
    ],
)
def test_container_of_a_cgroup_path(path: str | None, container: str | None) -> None:
    assert cgroups.container(path) == container


def test_cgroup_root_can_be_pointed_elsewhere(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SOCKSCOPE_CGROUP", str(tmp_path))
    assert cgroups.find_root() == str(tmp_path)
    monkeypatch.delenv("SOCKSCOPE_CGROUP")
    assert cgroups.find_root(str(tmp_path)) == cgroups.DEFAULT_ROOT  # no mounts file there


def test_unknown_internals_are_refused_by_name() -> None:
    from sockscope.errors import UsageError
    from sockscope.inventory import Query, take

    with pytest.raises(UsageError, match="unknown internals bogus"):
        take(Query(internals=frozenset({"info", "bogus"})))


def test_library_gives_tcp_internals_and_cookies_of_live_sockets() -> None:
    """What live views build on: take(Query(internals={"info"})) gives .internals.tcp and .cookie."""
    from sockscope.inventory import Query, take
    from sockscope.model import NetId

    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()) as client:
        server, _ = listener.accept()
        with server:
            client.sendall(b"k" * 4321)
            got = 0
            while got < 4321:
                got += len(server.recv(65536))
            mine = (client.getsockname(), listener.getsockname())
            query = Query(netids=frozenset({NetId.TCP}), internals=frozenset({"info"}), where=lambda s: (tuple(s.local), tuple(s.peer)) == mine)
            found = take(query).sockets
    assert len(found) == 1
    sock = found[0]
    assert sock.cookie and sock.internals is not None and sock.internals.tcp is not None
    assert sock.internals.tcp.bytes_acked == 4322 and sock.internals.congestion  # the SYN counts one
    assert sock.internals.memory is None and sock.internals.timer is None and sock.internals.cgroup_id is None  # not asked


# ---------------------------------------------------------------- a recorded reply (tests/fixtures/record_internals.py)


def recorded() -> tuple[list[bytes], dict[str, object]]:
    import json

    from conftest import FIXTURES, chunks

    with open(os.path.join(FIXTURES, "internals.json")) as handle:
        return chunks("tcp4-internals"), json.load(handle)


def decode(replies: list[bytes], pure: bool = False) -> list[object]:
    from sockscope import native

    asked = frozenset({"info", "memory", "timers", "cgroup"})
    found: list[object] = []
    with pytest.MonkeyPatch.context() as patch:
        if pure:
            patch.setattr(native, "accel", None)
        for chunk in replies:
            spans, _done = diag.frame(chunk, "recorded")
            found += diag.decode_inet(chunk, spans, socket.IPPROTO_TCP, diag.AddressText(), None, None, asked)
    return found


def with_tcp_info_cut(chunk: bytes, length: int) -> bytes:
    """Give a reply as a kernel with a `length`-byte struct tcp_info would have sent it."""
    out = b""
    for offset, size, count in diag.frame(chunk, "recorded")[0]:
        for index in range(count):
            message = chunk[offset + index * size : offset + (index + 1) * size]
            body, at = bytearray(message[:88]), 88
            while at + 4 <= len(message):
                attr_len, kind = struct.unpack_from("=HH", message, at)
                value = message[at + 4 : at + attr_len]
                if kind == diag.INET_DIAG_INFO:
                    value = value[:length]
                body += struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)
                at += (attr_len + 3) & ~3
            struct.pack_into("=I", body, 0, len(body))
            out += bytes(body)
    return out


def test_recorded_reply_decodes_to_what_the_sockets_had() -> None:
    replies, expected = recorded()
    found = {sock.inode: sock for sock in decode(replies)}  # type: ignore[attr-defined]
    assert set(found) == {expected["listener"], expected["server"], expected["client"]}
    client = found[expected["client"]].internals
    assert client.congestion == expected["congestion"]
    assert (client.tcp.bytes_acked, client.tcp.bytes_received) == (expected["client_bytes_acked"], expected["client_bytes_received"])
    assert client.timer.name == "keepalive" and client.timer.expires_ms > 7_000_000  # TCP_KEEPIDLE 7200 s
    assert found[expected["listener"]].internals.tcp.state == 10 and found[expected["listener"]].internals.timer is None
    assert all(sock.internals.memory.rcvbuf > 0 and sock.internals.cgroup_id for sock in found.values())
    assert decode(replies) == decode(replies, pure=True)


@pytest.mark.parametrize("length", sorted(KERNEL_LENGTHS))
def test_recorded_reply_as_an_older_kernel_sends_it(length: int) -> None:
    replies, expected = recorded()
    cut = [with_tcp_info_cut(chunk, length) if diag.frame(chunk, "recorded")[0] else chunk for chunk in replies]
    found = decode(cut)
    assert found == decode(cut, pure=True)
    for sock in found:
        tail = sock.internals.tcp[33:]  # type: ignore[attr-defined]
        assert sum(value is not None for value in tail) == KERNEL_LENGTHS[length]
    client = next(sock for sock in found if sock.inode == expected["client"])  # type: ignore[attr-defined]
    assert client.internals.tcp.rtt_us > 0 and client.internals.congestion == expected["congestion"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("asked", "ext"),
    [
        (frozenset(), 0),
        (frozenset({"info"}), diag.EXT_INFO | diag.EXT_CONG),
        (frozenset({"memory"}), diag.EXT_SKMEMINFO),
        (frozenset({"timers", "cgroup"}), 0),  # in every inet_diag message already: nothing more to ask
        (frozenset({"info", "memory", "timers", "cgroup"}), diag.EXT_INFO | diag.EXT_CONG | diag.EXT_SKMEMINFO),
    ],
)
def test_the_kernel_is_asked_only_for_the_attributes_named(asked: frozenset[str], ext: int) -> None:
    from sockscope import inventory
    from sockscope.model import NetId

    request = inventory._inet_job(NetId.TCP, socket.AF_INET, 0xFFF, None, None, asked).request
    assert request[16 + 2] == ext  # inet_diag_req_v2: family, protocol, idiag_ext
    unix = diag.unix_request(0xFFF, "memory" in asked)
    assert bool(struct.unpack_from("=I", unix, 16 + 12)[0] & diag.UDIAG_SHOW_MEMINFO) == ("memory" in asked)

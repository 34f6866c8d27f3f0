"""The C accelerator gives exactly what its pure-Python twins give."""

from __future__ import annotations

import json
import socket
import struct
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import chunks
from sockscope import native
from sockscope.cli import internals as internals_text
from sockscope.cli import render
from sockscope.inventory import diag
from sockscope.model import KERNEL_STATES, Endpoint, Family, Internals, NetId, Owner, Socket, SocketMemory, State, TcpInfo, Timer

fast = native.accel
pytestmark = pytest.mark.skipif(fast is None, reason="the C accelerator was not built (no compiler at install time)")


def both_decodes(name: str, protocol: int) -> tuple[list[Socket], list[Socket]]:
    accelerated: list[Socket] = []
    pure: list[Socket] = []
    for chunk in chunks(name):
        spans, _done = diag.frame(chunk, name)
        accelerated += diag.decode_inet(chunk, spans, protocol, diag.AddressText(), "ns1")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(native, "accel", None)
            pure += diag.decode_inet(chunk, spans, protocol, diag.AddressText(), "ns1")
    return accelerated, pure


@pytest.mark.parametrize(("name", "protocol"), [("tcp4", socket.IPPROTO_TCP), ("tcp6", socket.IPPROTO_TCP), ("udp4", socket.IPPROTO_UDP)])
def test_inet_decode_equals_the_python_decoder(name: str, protocol: int) -> None:
    accelerated, pure = both_decodes(name, protocol)
    assert accelerated and accelerated == pure
    assert all(type(s) is Socket and type(s.local) is Endpoint for s in accelerated)
    assert all(type(s.state) is State and type(s.family) is Family and type(s.netid) is NetId for s in accelerated)


def inet_message(
    family: int, state: int, src: bytes, dst: bytes, sport: int, dport: int, numbers: tuple[int, int, int, int], ifindex: int = 0, tail: bytes = b""
) -> bytes:
    body = struct.pack("=BBBB", family, state, 0, 0) + struct.pack(">HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
    body += struct.pack("=I8xIIIII", ifindex, 0, *numbers) + tail
    return struct.pack("=IHHII", 16 + len(body), diag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


# attributes as the kernel sends them (SHUTDOWN, SKV6ONLY, ...), and damaged ones
tails = st.one_of(
    st.just(b""),
    st.lists(st.tuples(st.sampled_from([8, 11, 21]), st.binary(max_size=9)), max_size=3).map(lambda attrs: b"".join(attribute(k, v) for k, v in attrs)),
    st.binary(max_size=12).map(lambda junk: junk.ljust((len(junk) + 3) & ~3, b"\0")),
)
messages = st.builds(
    inet_message,
    st.sampled_from([socket.AF_INET, socket.AF_INET6]),
    st.sampled_from([1, 7, 10, 0, 15]) | st.integers(0, 15),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.tuples(*[st.integers(0, 2**32 - 1)] * 4),
    st.sampled_from([0, 0, 1, 7, 2**32 - 1]),
    tails,
)


@settings(max_examples=300)
@given(st.lists(messages, min_size=1, max_size=8))
def test_inet_decode_agrees_on_any_messages(batch: list[bytes]) -> None:
    """Mixed families and unknown states send the accelerator back to Python (same error)."""
    chunk = b"".join(batch)
    spans, _ = diag.frame(chunk, "test")
    outcomes = []
    for accel in (fast, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(native, "accel", accel)
            try:
                outcomes.append(diag.decode_inet(chunk, spans, socket.IPPROTO_TCP, diag.AddressText(), None, diag.Devices(lambda i: f"if{i}")))
            except Exception as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
    assert outcomes[0] == outcomes[1]


cells = st.one_of(st.text(max_size=12), st.integers(-(2**63), 2**63 - 1), st.sampled_from(list(State)))


@settings(max_examples=300)
@given(
    st.integers(1, 5).flatmap(
        lambda ncol: st.tuples(
            st.lists(st.text(max_size=8), min_size=ncol, max_size=ncol),
            st.lists(st.booleans(), min_size=ncol, max_size=ncol),
            st.integers(0, 6).flatmap(lambda nrow: st.lists(st.lists(cells, min_size=nrow, max_size=nrow), min_size=ncol, max_size=ncol)),
            st.booleans(),
        )
    )
)
def test_table_text_equals_the_python_table(case: tuple[list[str], list[bool], list[list[object]], bool]) -> None:
    titles, right, columns, header = case
    assert fast.table_text(tuple(titles), tuple(columns), tuple(right), header) == render.table_text(titles, columns, right, header)


endpoints = st.builds(Endpoint, st.sampled_from(["127.0.0.1", "::1", "10.1.2.3", "fe80::1%eth0", "0.0.0.0", "::"]), st.integers(0, 65535))


owner_sets = st.one_of(
    st.none(), st.lists(st.builds(Owner, st.integers(1, 2**22), st.text(max_size=6), st.integers(0, 2**20), st.text(max_size=6)), max_size=3).map(tuple)
)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(endpoints, endpoints, owner_sets, st.sampled_from([None, "lo", "eth\n0"]), st.sampled_from([None, True, False])), max_size=20),
    st.booleans(),
)
def test_inet_and_owner_columns_equal_the_python_text(
    rows: list[tuple[Endpoint, Endpoint, tuple[Owner, ...] | None, str | None, bool | None]], named: bool
) -> None:
    sockets = [Socket(NetId.TCP, Family.INET, State.ESTAB, 0, 0, local, peer, 1, 0, None, owners, device, v6) for local, peer, owners, device, v6 in rows]
    ends = [(local, peer) for local, peer, *_rest in rows]
    names = {22: "ssh", 0: "zero", 80: ""} if named else None
    drawn = []
    for accel in (fast, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(native, "accel", accel)
            out = __import__("io").StringIO()
            render.table(out, sockets, render.EndpointText(names, None), netid=False, extended=True, processes=True, netns=False)
            drawn.append(out.getvalue())
    assert drawn[0] == drawn[1]
    if named and any(local.port == 22 for local, _ in ends):
        assert ":ssh" in drawn[0]
    assert len(drawn[0].splitlines()) == len(rows) + 1  # a device or owner name never breaks a row
    for local, _peer, _owners, device, v6 in rows:
        if device is not None:
            assert "%" + render.escape(device) + ":" in drawn[0]
        if v6 is False and local.address == "::":  # dual-stack on every address: `*`, as ss
            assert "*" + ("" if device is None else "%" + render.escape(device)) + ":" in drawn[0]


def test_table_text_keeps_undecodable_path_bytes() -> None:
    path = b"/tmp/caf\xe9 sock".decode("utf-8", "surrogateescape")
    assert fast.table_text(("Path", "N"), ([path, "x"], [1, 22]), (False, True), True) == render.table_text(
        ["Path", "N"], [[path, "x"], [1, 22]], [False, True], True
    )


def test_unusual_cells_fall_back_to_python() -> None:
    assert fast.table_text(("a",), ([1.5],), (False,), True) is None
    assert fast.table_text(("a",), ([2**70],), (False,), True) is None


def test_device_and_v6only_are_decoded_in_c_too() -> None:
    shutdown = attribute(8, b"\0")
    dual = inet_message(socket.AF_INET6, 10, b"\0" * 16, b"\0" * 16, 8080, 0, (0, 128, 0, 11), 0, shutdown + attribute(diag.INET_DIAG_SKV6ONLY, b"\0"))
    alone = inet_message(socket.AF_INET6, 10, b"\0" * 16, b"\0" * 16, 8081, 0, (0, 128, 0, 12), 1, shutdown + attribute(diag.INET_DIAG_SKV6ONLY, b"\1"))
    chunk = dual + alone
    devices = diag.Devices(lambda i: f"if{i}")
    rows = fast.inet_sockets(chunk, [(0, len(dual), 2)], NetId.TCP, Family.INET, Family.INET6, KERNEL_STATES, Endpoint, Socket, None, devices)
    assert rows is not None  # the C path, not a fallback
    assert [(s.local.port, s.device, s.v6only) for s in rows] == [(8080, None, False), (8081, "if1", True)]  # type: ignore[attr-defined]
    spans, _ = diag.frame(chunk, "t")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native, "accel", None)
        assert diag.decode_inet(chunk, spans, socket.IPPROTO_TCP, diag.AddressText(), None, diag.Devices(lambda i: f"if{i}")) == rows


@pytest.mark.parametrize(("low", "high"), [(0, -1), (0, 12), (12, 30), (30, -1), (5000, -1)])
def test_fd_walk_equals_the_python_walk(low: int, high: int) -> None:
    import array
    import os
    import socket

    from sockscope.inventory import owners

    held = [socket.socket() for _ in range(20)] + list(socket.socketpair())
    others = [open(os.devnull) for _ in range(5)]  # noqa: SIM115 - held open on purpose: not sockets
    fd_dir = os.open(f"/proc/{os.getpid()}/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = [name for name in os.listdir(fd_dir) if low <= int(name) and (high < 0 or int(name) < high)]
        python = array.array("q")
        owners.read_task((os.getpid(), fd_dir, names), python)
        raw = fast.fd_sockets(fd_dir, os.getpid(), low, high)
        assert raw is not None
        c = array.array("q")
        c.frombytes(raw)
        assert sorted(zip(c[0::3], c[2::3], strict=True)) == sorted(zip(python[0::3], python[2::3], strict=True))
        mine = {(os.fstat(s.fileno()).st_ino, s.fileno()) for s in held if low <= s.fileno() and (high < 0 or s.fileno() < high)}
        assert set(zip(c[0::3], c[2::3], strict=True)) >= mine and set(c[1::3]) <= {os.getpid()}
    finally:
        os.close(fd_dir)
        for thing in held + others:
            thing.close()
    with pytest.raises(ValueError):
        fast.fd_sockets(0, 1, -2, 2)


def test_owner_scan_of_a_big_process_equals_the_python_scan() -> None:
    import subprocess
    import sys

    from sockscope.inventory import owners

    # more descriptors than three parts of the plan, so the process is read in parts
    script = "import socket, sys; held = [socket.socketpair() for _ in range(3500)]; print('ready', flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
            accelerated = owners.scan(pids=[holder.pid])
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(native, "accel", None)
                pure = owners.scan(pids=[holder.pid])
            assert len(accelerated.holders) == 7000
            assert accelerated.holders == pure.holders
        finally:
            holder.kill()


# ---------------------------------------------------------------- internals (ls -i -m -o --cgroup)

INTERNALS_ASKED = [frozenset({"info"}), frozenset({"info", "memory", "timers", "cgroup"}), frozenset({"timers"}), frozenset({"cgroup", "memory"})]
TCP_INFO_LENGTHS = [0, 50, 104, 108, 120, 136, 160, 168, 192, 200, 224, 232, 240, 248]
congestion_names = st.one_of(st.sampled_from([b"cubic\0", b"bbr\0", b"reno", b"", b"\0x"]), st.binary(max_size=16))
internal_attrs = st.lists(
    st.one_of(
        st.tuples(st.just(diag.INET_DIAG_INFO), st.sampled_from(TCP_INFO_LENGTHS).flatmap(lambda n: st.binary(min_size=n, max_size=n))),
        st.tuples(st.just(diag.INET_DIAG_CONG), congestion_names),
        st.tuples(st.just(diag.INET_DIAG_SKMEMINFO), st.sampled_from([24, 28, 32, 36, 40]).flatmap(lambda n: st.binary(min_size=n, max_size=n))),
        st.tuples(st.just(diag.INET_DIAG_CGROUP_ID), st.binary(min_size=0, max_size=8)),
        st.tuples(st.sampled_from([8, 11]), st.binary(max_size=2)),
    ),
    max_size=6,
).map(lambda attrs: b"".join(attribute(k, v) for k, v in attrs))
inside_messages = st.builds(
    lambda timer, retrans, expires, message: message[:18] + bytes([timer, retrans]) + message[20:68] + struct.pack("=I", expires) + message[72:],
    st.integers(0, 7),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.builds(
        inet_message,
        st.just(socket.AF_INET),
        st.sampled_from([1, 6, 10]),
        st.binary(min_size=16, max_size=16),
        st.binary(min_size=16, max_size=16),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.tuples(*[st.integers(0, 2**32 - 1)] * 4),
        st.just(0),
        internal_attrs,
    ),
)


def decode_both(chunk: bytes, asked: frozenset[str]) -> list[object]:
    spans, _ = diag.frame(chunk, "test")
    outcomes: list[object] = []
    for accel in (fast, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(native, "accel", accel)
            try:
                outcomes.append(diag.decode_inet(chunk, spans, socket.IPPROTO_TCP, diag.AddressText(), None, None, asked))
            except Exception as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
    return outcomes


@settings(max_examples=300)
@given(st.lists(inside_messages, min_size=1, max_size=6), st.sampled_from(INTERNALS_ASKED))
def test_internals_decode_agrees_on_any_messages(batch: list[bytes], asked: frozenset[str]) -> None:
    """tcp_info of any kernel's length, odd congestion names, short memory arrays: same records or same error."""
    accelerated, pure = decode_both(b"".join(batch), asked)
    assert accelerated == pure


def test_internals_are_decoded_in_c_for_well_formed_replies() -> None:
    raw = bytes(range(240))
    tail = attribute(diag.INET_DIAG_INFO, raw) + attribute(diag.INET_DIAG_CONG, b"cubic\0") + attribute(diag.INET_DIAG_SKMEMINFO, bytes(36))
    tail += attribute(diag.INET_DIAG_CGROUP_ID, struct.pack("=Q", 99))
    message = inet_message(socket.AF_INET, 1, b"\x7f\0\0\1", b"\x7f\0\0\1", 1, 2, (0, 0, 0, 5), 0, tail)
    want = 1 | 2
    inside = (want, Internals, TcpInfo, SocketMemory, Timer, diag._TIMERS)
    rows = fast.inet_sockets(message, [(0, len(message), 1)], NetId.TCP, Family.INET, Family.INET6, KERNEL_STATES, Endpoint, Socket, None, None, inside)
    assert rows is not None
    extra = rows[0].internals  # type: ignore[attr-defined]
    assert extra.tcp == diag.tcp_info(raw) and extra.congestion == "cubic" and extra.cgroup_id == 99 and extra.memory == SocketMemory(*[0] * 9)


@settings(max_examples=300)
@given(
    st.lists(inside_messages, min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, "/", "/system.slice/a b.service", "/caf\udce9", "/x\ny", "/" + "d" * 200]),
    st.sampled_from([None, "", "0123456789ab", "web\x1b"]),
)
def test_internals_lines_equal_the_python_words(batch: list[bytes], numeric: bool, options: bool, path: str | None, container: str | None) -> None:
    asked = frozenset({"info", "memory", "timers", "cgroup"} if options else {"info", "memory", "cgroup"})
    decoded = decode_both(b"".join(batch), asked)[1]
    if isinstance(decoded, str):
        return  # damaged: decoding said so, there is nothing to draw
    sockets = [
        s._replace(internals=s.internals._replace(cgroup=path, container=container)) if s.internals is not None else s for s in cast(list[Socket], decoded)
    ]
    lines = []
    for accel in (fast, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(native, "accel", accel)
            lines.append(internals_text.lines(sockets, asked, numeric))
    assert lines[0] == lines[1]
    assert all("\n" not in line for line in lines[0])


def test_table_with_internals_lines_equals_the_python_table() -> None:
    titles, columns, right = ("A", "B"), ([1, 22], ["x", "yy"]), (True, False)
    after = ["\t one two", ""]
    expected = render.table_text(list(titles), list(columns), list(right), True, after)
    assert fast.table_text(titles, columns, right, True, after) == expected == " A B\n 1 x\n\t one two\n22 yy\n"


@settings(max_examples=300)
@given(
    st.lists(inside_messages, min_size=1, max_size=6),
    st.sampled_from(INTERNALS_ASKED),
    st.sampled_from([None, "/", '/a"b', "/back\\slash", "/caf\udce9", "/x\ny"]),
    st.sampled_from([None, "", "0123456789ab", "web\x1b"]),
)
def test_internals_json_equals_the_python_json(batch: list[bytes], asked: frozenset[str], path: str | None, container: str | None) -> None:
    """Numbers past 63 and 64 bits, unset fields, names that need escapes: the same JSON text either way, and valid JSON."""
    decoded = decode_both(b"".join(batch), asked)[1]
    if isinstance(decoded, str):
        return
    sockets = [
        s._replace(internals=s.internals._replace(cgroup=path, container=container)) if s.internals is not None else s for s in cast(list[Socket], decoded)
    ]
    texts = []
    for accel in (fast, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(native, "accel", accel)
            out = __import__("io").StringIO()
            render.json_array(out, sockets, lambda _s: None, asked, True)
            texts.append(out.getvalue())
    assert texts[0] == texts[1]
    rows = json.loads(texts[0])
    assert all(set(asked_keys(asked)) <= set(row) for row in rows)


def asked_keys(asked: frozenset[str]) -> list[str]:
    keys = {"info": ["tcp", "congestion"], "memory": ["memory"], "timers": ["timer"], "cgroup": ["cgroup"]}
    return [key for group in asked for key in keys[group]]


def test_internals_json_is_written_in_c_for_plain_sockets() -> None:
    raw = b"\1" * 240  # every rate times 8 still fits 64 bits
    tail = attribute(diag.INET_DIAG_INFO, raw) + attribute(diag.INET_DIAG_CONG, b"cubic\0") + attribute(diag.INET_DIAG_SKMEMINFO, bytes(36))
    message = inet_message(socket.AF_INET, 1, b"\x7f\0\0\1", b"\x7f\0\0\1", 1, 2, (0, 0, 0, 5), 0, tail)
    spans, _ = diag.frame(message, "t")
    sockets = diag.decode_inet(message, spans, socket.IPPROTO_TCP, diag.AddressText(), None, None, frozenset({"info", "memory"}))
    made = fast.internals_json(sockets, 1 | 2, internals_text._TCP_KEYS, internals_text._MEMORY_KEYS)
    assert made is not None and made[0].startswith(', "tcp": {"state": 1, "ca_state": 1,') and '"congestion": "cubic"' in made[0]

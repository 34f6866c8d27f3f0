"""The census behind `sockscope exporter`: counts, listeners, processes and counters that only grow."""

from __future__ import annotations

import os

import pytest

from sockscope.live import census
from sockscope.live.census import OTHER, UNKNOWN, Census, Flow, Listener, parse_counters, parse_port_range
from sockscope.model import Endpoint, Family, Internals, NetId, Owner, Socket, State, TcpInfo, UnixEndpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RANGES = {"": (32768, 60999)}


def _tcp_info(acked: int, received: int) -> TcpInfo:
    return TcpInfo(*([0] * 33), bytes_acked=acked, bytes_received=received)  # type: ignore[arg-type]


def tcp(
    local: tuple[str, int],
    peer: tuple[str, int],
    state: State = State.ESTAB,
    *,
    pid: int | None = None,
    name: str = "app",
    cookie: int | None = None,
    sent: int = 0,
    received: int = 0,
    queue: tuple[int, int] = (0, 0),
    inet6: bool = False,
    netns: str | None = None,
) -> Socket:
    owners = (Owner(pid, name, 3, "root"),) if pid is not None else ()
    internals = Internals(tcp=_tcp_info(sent, received)) if state is not State.LISTEN else None
    return Socket(
        NetId.TCP,
        Family.INET6 if inet6 else Family.INET,
        state,
        queue[0],
        queue[1],
        Endpoint(*local),
        Endpoint(*peer),
        cookie or 0,
        0,
        netns,
        owners,
        None,
        None,
        cookie,
        internals,
    )


def test_sockets_are_counted_by_kind_and_state() -> None:
    unix = Socket(NetId.UNIX_STREAM, Family.UNIX, State.LISTEN, 0, 0, UnixEndpoint("/run/x.sock"), UnixEndpoint(None), 9, 0, owners=())
    found = [tcp(("127.0.0.1", 80), ("0.0.0.0", 0), State.LISTEN), tcp(("127.0.0.1", 80), ("127.0.0.1", 40000), cookie=1), unix]
    figures = Census().refresh(found, 0.0, port_ranges=RANGES)
    assert figures.sockets == {("", "tcp", "LISTEN"): 1, ("", "tcp", "ESTAB"): 1, ("", "u_str", "LISTEN"): 1}


def test_a_listener_shows_its_accept_queue_and_the_connections_it_accepted() -> None:
    listener = tcp(("0.0.0.0", 8080), ("0.0.0.0", 0), State.LISTEN, pid=10, name="nginx", queue=(3, 511))
    accepted = [tcp(("127.0.0.1", 8080), ("127.0.0.1", 50000 + n), cookie=100 + n, pid=10, name="nginx") for n in range(4)]
    waiting = tcp(("10.0.0.1", 8080), ("10.0.0.2", 40000), State.CLOSE_WAIT, cookie=200, pid=10, name="nginx")
    client = tcp(("127.0.0.1", 50000), ("127.0.0.1", 8080), cookie=300, pid=20, name="curl")  # the other end: not the listener's
    figures = Census().refresh([listener, *accepted, waiting, client], 0.0, port_ranges=RANGES)
    key = Listener("", "tcp", "0.0.0.0", 8080, "nginx")
    assert figures.accept_queues == {key: (3, 511)}
    assert figures.listener_connections == {(key, "ESTAB"): 4, (key, "CLOSE-WAIT"): 1}


def test_an_ipv6_wildcard_listener_takes_ipv4_mapped_connections() -> None:
    listener = tcp(("::", 443), ("::", 0), State.LISTEN, pid=1, inet6=True)
    mapped = tcp(("::ffff:127.0.0.1", 443), ("::ffff:127.0.0.1", 40000), cookie=5, pid=1, inet6=True)
    figures = Census().refresh([listener, mapped], 0.0, port_ranges=RANGES)
    assert figures.listener_connections == {(Listener("", "tcp", "::", 443, "app"), "ESTAB"): 1}


def test_bytes_of_a_closed_connection_stay_counted() -> None:
    count = Census()
    listener = tcp(("127.0.0.1", 80), ("0.0.0.0", 0), State.LISTEN, pid=7)
    first = count.refresh([listener, tcp(("127.0.0.1", 80), ("127.0.0.1", 40000), pid=7, cookie=1, sent=1000, received=50)], 0.0)
    assert first.sent_bytes[("app", "7")] == 1000
    later = count.refresh([listener, tcp(("127.0.0.1", 80), ("127.0.0.1", 40000), pid=7, cookie=1, sent=5000, received=80)], 5.0)
    assert (later.sent_bytes[("app", "7")], later.received_bytes[("app", "7")]) == (5000, 80)
    gone = count.refresh([listener], 10.0)  # closed between refreshes: its last-seen counts remain
    assert (gone.sent_bytes[("app", "7")], gone.received_bytes[("app", "7")]) == (5000, 80)
    assert gone.closed[("app", "7")] == 1
    assert gone.opened[("app", "7")] == 0  # open before the exporter started: not an opening it saw
    assert gone.durations[("app", "7")].observed == 0  # nor a duration


def test_a_connection_opened_and_closed_while_watched_has_a_duration() -> None:
    count = Census()
    listener = tcp(("127.0.0.1", 80), ("0.0.0.0", 0), State.LISTEN, pid=7)
    count.refresh([listener], 0.0)
    opened = count.refresh([listener, tcp(("127.0.0.1", 80), ("127.0.0.1", 40001), pid=7, cookie=2, sent=10)], 5.0)
    assert opened.opened[("app", "7")] == 1
    closed = count.refresh([listener], 65.0)
    histogram = closed.durations[("app", "7")]
    assert histogram.observed == 1 and histogram.total == 60.0
    bounds = dict(zip(census.DURATION_BUCKETS, histogram.buckets, strict=False))
    assert bounds[10.0] == 0 and bounds[60.0] == 1  # cumulative: le=60 holds it, le=10 does not


def test_a_close_event_counts_once_with_its_final_bytes() -> None:
    count = Census()
    listener = tcp(("127.0.0.1", 80), ("0.0.0.0", 0), State.LISTEN, pid=7)
    count.refresh([listener], 0.0)
    count.refresh([listener, tcp(("127.0.0.1", 80), ("127.0.0.1", 40002), pid=7, cookie=3, sent=100, received=10)], 5.0)
    count.closed(3, 4096, 20, 7.5, 7)  # the destroy event: final counters, the true duration
    after = count.refresh([listener], 10.0)  # the refresh misses it too: no second close
    assert after.closed[("app", "7")] == 1
    assert after.sent_bytes[("app", "7")] == 4096
    assert after.durations[("app", "7")].total == 7.5


def test_a_close_event_after_the_refresh_found_it_gone_adds_only_the_last_bytes() -> None:
    count = Census()
    listener = tcp(("127.0.0.1", 80), ("0.0.0.0", 0), State.LISTEN, pid=7)
    count.refresh([listener], 0.0)
    count.refresh([listener, tcp(("127.0.0.1", 80), ("127.0.0.1", 40003), pid=7, cookie=4, sent=100, received=10)], 5.0)
    count.refresh([listener], 10.0)  # gone: closed with 100 / 10
    count.closed(4, 150, 10, 9.0, 7)  # the destroy event, late: 50 more bytes were sent before the end
    after = count.refresh([listener], 15.0)
    assert (after.closed[("app", "7")], after.opened[("app", "7")]) == (1, 1)
    assert after.sent_bytes[("app", "7")] == 150
    assert after.durations[("app", "7")].observed == 1


def test_a_connection_too_short_for_any_refresh_still_counts() -> None:
    count = Census()
    listener = tcp(("127.0.0.1", 80), ("0.0.0.0", 0), State.LISTEN, pid=7)
    count.refresh([listener], 0.0)
    count.closed(99, 300, 30, 0.002, 7)
    after = count.refresh([listener], 5.0)
    assert (after.opened[("app", "7")], after.closed[("app", "7")], after.sent_bytes[("app", "7")]) == (1, 1, 300)
    count.closed(100, 1, 1, 0.5, None)  # nobody known: the unknown process
    assert count.refresh([listener], 6.0).closed[UNKNOWN] == 1


def test_processes_beyond_the_top_are_folded_into_other_and_counters_never_go_down() -> None:
    count = Census(top=2)
    held = ((1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0))  # (pid, nth connection): p1 holds 3, p2 2, p3 1
    busy = [tcp(("127.0.0.1", 1000 + n), ("127.0.0.1", 80), pid=pid, name=f"p{pid}", cookie=pid * 100 + n, sent=10) for pid, n in held]
    first = count.refresh(busy, 0.0)
    assert {process for process, _netid, _state in first.process_sockets} == {("p1", "1"), ("p2", "2"), OTHER}
    assert first.sent_bytes[OTHER] == 10  # p3's one connection
    # p1 exits; p3 takes its place, but its older connection stays charged to other
    later = count.refresh([s for s in busy if s.owners and s.owners[0].pid != 1], 5.0)
    assert ("p3", "3") in {process for process, _netid, _state in later.process_sockets}
    assert later.sent_bytes[OTHER] >= first.sent_bytes[OTHER]
    assert ("p1", "1") not in later.sent_bytes  # gone with its process


def test_ephemeral_ports_are_counted_per_flow_and_leave_listener_ports_out() -> None:
    listener = tcp(("0.0.0.0", 40000), ("0.0.0.0", 0), State.LISTEN, pid=1)  # a server port inside the range
    accepted = tcp(("127.0.0.1", 40000), ("127.0.0.1", 50001), cookie=1, pid=1)
    its_client = tcp(("127.0.0.1", 50001), ("127.0.0.1", 40000), cookie=2, pid=3)
    outgoing = [tcp(("127.0.0.1", 50000 + n), ("127.0.0.1", 5432), cookie=10 + n, pid=2) for n in range(3)]
    waiting = tcp(("127.0.0.1", 50010), ("127.0.0.1", 5432), State.TIME_WAIT, cookie=20)
    low = tcp(("127.0.0.1", 1000), ("127.0.0.1", 5432), cookie=21, pid=2)  # bound below the range on purpose
    figures = Census().refresh([listener, accepted, its_client, *outgoing, waiting, low], 0.0, port_ranges=RANGES)
    assert figures.ephemeral_used == {Flow("", "127.0.0.1", "127.0.0.1", 5432): 4, Flow("", "127.0.0.1", "127.0.0.1", 40000): 1}
    assert figures.ephemeral_ports == {"": 60999 - 32768 + 1}


def test_only_the_busiest_flows_are_kept() -> None:
    found = [tcp(("127.0.0.1", 40000 + n), ("127.0.0.1", 1 + n % 30), cookie=n + 1, pid=1) for n in range(30 * 2 + 1)]
    figures = Census(ephemeral_flows=5).refresh(found, 0.0, port_ranges=RANGES)
    assert len(figures.ephemeral_used) == 5
    assert max(figures.ephemeral_used.values()) == 3  # port 1: n = 0, 30, 60


def test_kernel_counters_are_read_from_snmp_and_netstat_text() -> None:
    with open(os.path.join(FIXTURES, "exporter", "netstat")) as handle:
        found = parse_counters(handle.read())
    assert found["TcpExt:ListenOverflows"] == 17
    assert found["TcpExt:ListenDrops"] == 19
    assert found["IpExt:InOctets"] == 123456
    figures = Census().refresh([], 0.0, kernel={"": found})
    assert figures.kernel[("", "TcpExt:ListenOverflows")] == 17
    assert ("", "IpExt:InOctets") not in figures.kernel  # only the TCP counters we name


def test_counter_text_that_does_not_pair_up_is_skipped() -> None:
    assert parse_counters("TcpExt: A B\nTcpExt: 1\nIpExt: C\nIpExt: x\n\nTcp: D\nTcp: 4\n") == {"Tcp:D": 4}
    assert parse_counters("") == {}
    assert parse_counters("garbage\n\xff\x00") == {}


def test_port_range_text() -> None:
    assert parse_port_range("32768\t60999\n") == (32768, 60999)
    assert parse_port_range("60999 32768") is None
    assert parse_port_range("1 2 3") is None
    assert parse_port_range("") is None


def test_closes_from_another_thread_are_counted_at_the_next_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("prometheus_client")
    from sockscope.cli import exporter

    monkeypatch.setattr(exporter, "taken_aside", lambda netns, children: ([], {}, {}, {}))  # an empty host
    refresher = exporter.Refresher(None, 15, 10)
    refresher.refresh_once()
    refresher.closing(987654321, 5000, 60, 2.5, None)  # what a destroy-event listener's thread calls
    refresher.refresh_once()
    text = refresher.body().decode()
    assert 'sockscope_process_tcp_connections_closed_total{pid="",process="unknown"} 1.0' in text
    assert 'sockscope_process_tcp_sent_bytes_total{pid="",process="unknown"} 5000.0' in text
    assert 'sockscope_process_tcp_connection_duration_seconds_sum{pid="",process="unknown"} 2.5' in text

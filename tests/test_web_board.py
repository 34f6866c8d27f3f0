"""The live page's state without a browser: which rows a page gets, and only what changed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sockscope.cli.render import socket_json
from sockscope.errors import FilterError, UsageError
from sockscope.live.board import EVENTS_PER_DELTA, LARGEST_PAGE, Board, Page, key_text
from sockscope.model import Endpoint, Family, Internals, NetId, Owner, Socket, State, TcpInfo

WEB = Owner(4242, "nginx", 5, "www-data")
CURL = Owner(777, "curl", 3, "alice")


def tcp_info(sent: int, received: int) -> TcpInfo:
    return TcpInfo(*([0] * 33), bytes_acked=sent, bytes_received=received)  # type: ignore[arg-type]


def sock(
    cookie: int, local: int, peer: int = 0, state: State = State.ESTAB, owner: Owner | None = WEB, sent: int = 0, received: int = 0, recv_q: int = 0
) -> Socket:
    internals = Internals(tcp=tcp_info(sent, received)) if state is not State.LISTEN else None
    return Socket(
        NetId.TCP,
        Family.INET,
        state,
        recv_q,
        128 if state is State.LISTEN else 0,
        Endpoint("127.0.0.1", local),
        Endpoint("127.0.0.1" if peer else "0.0.0.0", peer),
        1000 + cookie,
        0,
        owners=(owner,) if owner else (),
        cookie=cookie,
        internals=internals,
    )


def board_with(*sockets: Socket, now: float = 100.0) -> Board:
    board = Board(lambda s: socket_json(s, None))
    board.update(list(sockets), now)
    return board


def ids(message: dict[str, Any]) -> list[str]:
    return list(message["table"].get("order", []))


LISTENER = sock(1, 80, state=State.LISTEN, recv_q=32)
CLIENT = sock(2, 45000, 80, owner=CURL)
SERVER = sock(3, 80, 45000)


def test_a_new_page_gets_every_row_of_its_page_and_then_nothing_when_nothing_changed() -> None:
    board = board_with(LISTENER, CLIENT, SERVER)
    page = Page(board)
    first = page.delta()
    assert first["table"]["reset"] == "rows"
    assert {row["id"] for row in first["table"]["upsert"]} == {key_text(1), key_text(2), key_text(3)}
    assert first["counts"]["sockets"] == 3
    board.update([LISTENER, CLIENT, SERVER], 101.0)
    quiet = page.delta()
    assert set(quiet) == {"rates"}, "nothing changed: only the (empty) traffic point travels"
    assert len(json.dumps(quiet)) < 100


def test_a_row_that_changes_is_sent_alone_and_a_closed_one_is_removed_and_logged() -> None:
    board = board_with(LISTENER, CLIENT, SERVER)
    page = Page(board)
    page.delta()
    busier = sock(3, 80, 45000, sent=50_000, received=1_000)
    board.update([LISTENER, busier], 102.0)  # the client side went away, the server side moved bytes
    message = page.delta()
    assert [row["id"] for row in message["table"]["upsert"]] == [key_text(3)]
    assert message["table"]["upsert"][0]["tx_bps"] == 25_000  # 50,000 bytes in 2 seconds
    assert message["table"]["remove"] == [key_text(2)]
    [event] = message["events"]
    assert (event["kind"], event["process"], event["socket"]["local"]["port"]) == ("close", "curl(777)", 45000)
    assert message["rates"][-1]["p"] == {"nginx(4242)": [25_000, 500]}


def test_a_connection_that_appears_is_logged_once_but_the_first_snapshot_is_not_a_burst_of_opens() -> None:
    board = board_with(LISTENER, SERVER)
    page = Page(board)
    assert "events" not in page.delta()
    board.update([LISTENER, SERVER, CLIENT], 101.0)
    assert [e["kind"] for e in page.delta()["events"]] == ["open"]
    board.update([LISTENER, SERVER, CLIENT], 102.0)
    assert "events" not in page.delta()


def test_the_filter_narrows_the_table_the_log_and_the_map() -> None:
    board = board_with(LISTENER, CLIENT, SERVER)
    page = Page(board)
    page.ask({"filter": "dport = 80"})
    message = page.delta()
    assert [row["id"] for row in message["table"]["upsert"]] == [key_text(2)]
    assert [edge["remote"] for edge in message["map"]["upsert"]] == ["127.0.0.1:80"]
    assert message["counts"]["shown"] == 1


def test_a_filter_that_does_not_parse_is_refused_and_the_old_view_stays() -> None:
    page = Page(board_with(LISTENER, CLIENT))
    page.ask({"filter": "sport = 80"})
    with pytest.raises(FilterError):
        page.ask({"filter": "sport = = ("})
    assert page.view.filter == "sport = 80"


@pytest.mark.parametrize(
    "asked",
    [[], {"sort": "nonsense"}, {"group": "x"}, {"size": LARGEST_PAGE + 1}, {"page": -1}, {"page": True}, {"filter": 5}, {"colour": "red"}],
)
def test_a_view_that_makes_no_sense_is_a_usage_error(asked: object) -> None:
    with pytest.raises(UsageError):
        Page(board_with(CLIENT)).ask(asked)


def test_sorting_paging_and_grouping() -> None:
    sockets = [sock(10 + n, 40000 + n, 80, sent=n * 1000) for n in range(25)]
    board = board_with(*sockets)
    board.update(sockets[:0] + [sock(10 + n, 40000 + n, 80, sent=n * 2000) for n in range(25)], 101.0)
    page = Page(board)
    page.ask({"sort": "tx", "descending": True, "size": 10, "page": 1})
    message = page.delta()
    rows = message["table"]["upsert"]
    assert [row["local"]["port"] for row in rows] == list(range(40014, 40004, -1))
    assert message["counts"]["pages"] == 3
    page.ask({"group": "process", "page": 1})  # a view is given whole: what it leaves out is the default
    grouped = page.delta()["table"]
    assert grouped["reset"] == "group:process"
    assert "upsert" not in grouped  # page 2 of one group is empty
    page.ask({"group": "process"})
    [group] = page.delta()["table"]["upsert"]
    assert (group["group"], group["count"]) == ("nginx(4242)", 25)


def test_listeners_show_their_accept_queue_fullest_first() -> None:
    quiet = sock(5, 22, state=State.LISTEN)
    board = board_with(quiet, LISTENER)
    listeners = Page(board).delta()["listeners"]["upsert"]
    assert [(row["local"]["port"], row["recv_q"], row["send_q"]) for row in listeners] == [(80, 32, 128), (22, 0, 128)]


def test_the_map_shows_the_client_end_of_an_accepted_connection_by_host_only() -> None:
    edges = Page(board_with(LISTENER, CLIENT, SERVER)).delta()["map"]["upsert"]
    assert {(edge["process"], edge["remote"]) for edge in edges} == {("curl(777)", "127.0.0.1:80"), ("nginx(4242)", "127.0.0.1")}


def test_a_storm_of_connections_sends_a_bounded_log() -> None:
    board = board_with(LISTENER)
    page = Page(board)
    page.delta()
    board.update([LISTENER, *(sock(100 + n, 30000 + n, 80) for n in range(5000))], 101.0)
    message = page.delta()
    assert len(message["events"]) == EVENTS_PER_DELTA
    assert len(message["table"]["upsert"]) == 100
    assert len(json.dumps(message)) < 400_000

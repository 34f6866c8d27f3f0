"""The filter language: what it accepts, what it rejects (pointing at the word), and its meaning."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockscope.errors import FilterError
from sockscope.inventory.filters import compile_filter, tokenize
from sockscope.model import Endpoint, Family, NetId, Owner, Socket, State, UnixEndpoint

SERVICES = {"ssh": 22, "http": 80}.get


def sock(state=State.ESTAB, local=("10.0.0.1", 40000), peer=("10.0.0.2", 22), owners=None, uid=0):  # type: ignore[no-untyped-def]
    return Socket(NetId.TCP, Family.INET, state, 0, 0, Endpoint(*local), Endpoint(*peer), 1, uid, None, owners)


def matches(text: str, s: Socket) -> bool:
    f = compile_filter(text.split(), SERVICES)
    return f.predicate is None or f.predicate(s)


def test_tokenizer_splits_operators_and_parentheses():
    assert tokenize("(sport>=:80)or !dport=22") == ["(", "sport", ">=", ":80", ")", "or", "!", "dport", "=", "22"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dport = :ssh", True),
        ("dport = :http", False),
        ("sport > 1024", True),
        ("sport lt 1024", False),
        ("dport != 22", False),
        ("not dport = 22", False),
        ("( sport = 1 or dport = 22 )", True),
        ("sport = 1 and dport = 22", False),
        (":22", True),
        (":40000", True),
        (":41", False),
        ("src 10.0.0.0/8", True),
        ("dst 10.0.0.2:22", True),
        ("dst 10.0.0.2:23", False),
        ("src 192.168.0.0/16", False),
        ("dst *:22", True),
        ("state established", True),
        ("state listening", False),
        ("state connected", True),
        ("exclude established", False),
    ],
)
def test_meaning(text: str, expected: bool) -> None:
    assert matches(text, sock()) is expected


def test_ipv6_addresses_and_mapped_v4():
    s = Socket(NetId.TCP, Family.INET6, State.ESTAB, 0, 0, Endpoint("::ffff:10.0.0.1", 5), Endpoint("::1", 22), 1, 0)
    assert matches("src 10.0.0.0/8", s)
    assert matches("dst [::1]:22", s)
    assert not matches("dst [::1]:23", s)


def test_owner_shortcuts_need_owners():
    owners = (Owner(812, "nginx", 3, "www-data"),)
    f = compile_filter(["pid=812"])
    assert f.needs_owners and f.predicate is not None and f.predicate(sock(owners=owners))
    assert matches("proc=ngi*", sock(owners=owners))
    assert matches("user=www-data", sock(owners=owners))
    assert not matches("proc=sshd", sock(owners=owners))


def test_leading_state_clauses_become_the_kernel_mask():
    f = compile_filter(["state", "established", "state", "syn-sent", "dport", "=", ":ssh"], SERVICES)
    assert f.states == {State.ESTAB, State.SYN_SENT}
    assert compile_filter(["exclude", "time-wait"]).states == frozenset(State) - {State.UNKNOWN, State.TIME_WAIT}
    assert compile_filter(["dport", "=", "22"]).states is None


def test_unix_path_patterns():
    s = Socket(NetId.UNIX_STREAM, Family.UNIX, State.LISTEN, 0, 0, UnixEndpoint("/run/a b.sock"), UnixEndpoint(None), 1, 0)
    assert matches("src /run/*", s)
    assert not matches("src /tmp/*", s)


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("sport = abc", "abc"),
        ("state bogus", "bogus"),
        ("frobnicate", "frobnicate"),
        ("sport = 70000", "70000"),
        ("src 300.1.1.1", "300.1.1.1"),
        ("pid=abc", "abc"),
    ],
)
def test_errors_point_at_the_bad_word(text: str, word: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(text.split(), SERVICES)
    assert repr(word) in str(caught.value) and "\n" not in str(caught.value)


def test_unbalanced_parenthesis():
    with pytest.raises(FilterError, match="expected '\\)'"):
        compile_filter(["(", "sport", "=", "1"])


WORDS = st.sampled_from(
    [
        "sport",
        "dport",
        "src",
        "dst",
        "=",
        "!=",
        "<",
        ">=",
        "(",
        ")",
        "and",
        "or",
        "not",
        "!",
        ":22",
        "22",
        "10.0.0.0/8",
        "state",
        "established",
        "pid=1",
        "x",
        "",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, max_size=8))
def test_any_words_compile_or_raise_filter_error(words: list[str]) -> None:
    try:
        f = compile_filter(words, SERVICES)
    except FilterError:
        return
    if f.predicate is not None:
        assert f.predicate(sock()) in (True, False)

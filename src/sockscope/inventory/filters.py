"""The filter language of `ls`, in the spirit of `ss`: text -> syntax tree -> Python predicate.

    [state NAME | exclude NAME]... [EXPRESSION]
    EXPRESSION := TERM [[and|or] TERM]... ; TERM := not TERM | ( EXPRESSION ) | TEST
    TEST := sport|dport OP PORT | src|dst ADDRESS[/PREFIX][:PORT] | :PORT
          | state NAME | pid=N | proc=NAME | user=NAME|UID

OP is one of = == != < > <= >= (or eq ne lt gt le ge). Leading state clauses become the
kernel's state mask; everything is also checked again in Python on each socket.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import FilterError
from ..model import Endpoint, Socket, State, UnixEndpoint

Predicate = Callable[[Socket], bool]

STATE_NAMES: dict[str, frozenset[State]] = {
    "established": frozenset({State.ESTAB}),
    "syn-sent": frozenset({State.SYN_SENT}),
    "syn-recv": frozenset({State.SYN_RECV}),
    "fin-wait-1": frozenset({State.FIN_WAIT_1}),
    "fin-wait-2": frozenset({State.FIN_WAIT_2}),
    "time-wait": frozenset({State.TIME_WAIT}),
    "closed": frozenset({State.UNCONN}),
    "unconnected": frozenset({State.UNCONN}),
    "close-wait": frozenset({State.CLOSE_WAIT}),
    "last-ack": frozenset({State.LAST_ACK}),
    "listening": frozenset({State.LISTEN}),
    "listen": frozenset({State.LISTEN}),
    "closing": frozenset({State.CLOSING}),
    "all": frozenset(State) - {State.UNKNOWN},
    # as in ss: connected = all but listening and closed; synchronized = connected but syn-sent
    "connected": frozenset(State) - {State.UNKNOWN, State.LISTEN, State.UNCONN},
    "synchronized": frozenset(State) - {State.UNKNOWN, State.LISTEN, State.UNCONN, State.SYN_SENT},
    "bucket": frozenset({State.SYN_RECV, State.TIME_WAIT}),
    "big": frozenset(State) - {State.UNKNOWN, State.SYN_RECV, State.TIME_WAIT},
}

_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq, "==": operator.eq, "eq": operator.eq,
    "!=": operator.ne, "ne": operator.ne, "neq": operator.ne,
    "<": operator.lt, "lt": operator.lt, ">": operator.gt, "gt": operator.gt,
    "<=": operator.le, "le": operator.le, ">=": operator.ge, "ge": operator.ge,
}  # fmt: skip

_TOKEN = re.compile(r"\s*(\(|\)|!=|==|<=|>=|=|<|>|!|[^\s()=<>!]+)")


@dataclass(frozen=True)
class Filter:
    """A compiled filter: the predicate, the state set to ask the kernel for, and whether owners are needed."""

    predicate: Predicate | None
    states: frozenset[State] | None
    needs_owners: bool
    text: str
    selects: bool = False  # more than states: addresses, ports, processes...


def tokenize(text: str) -> list[str]:
    """Give the words of a filter: parentheses and comparison operators stand alone."""
    tokens: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover - the pattern matches any non-space character
            raise FilterError(f"cannot read the filter at {text[position:]!r}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def compile_filter(words: Sequence[str], service_port: Callable[[str], int | None] | None = None) -> Filter:
    """Give the Filter for the words of a filter expression (as the shell split them).

    `service_port` turns a service name (`ssh`) into a port; without it only numbers are ports.
    Raises FilterError naming the offending word.
    """
    text = " ".join(words)
    tokens = tokenize(text)
    parser = _Parser(tokens, service_port or (lambda _name: None))
    states = parser.state_clauses()
    predicate = parser.expression() if parser.more() else None
    if parser.more():
        raise parser.error("expected 'and', 'or' or the end of the filter")
    selects = predicate is not None
    if states is not None:
        state_test = _state_test(states)
        predicate = state_test if predicate is None else _and(state_test, predicate)
    return Filter(predicate, states, parser.needs_owners, text, selects)


def _state_test(states: frozenset[State]) -> Predicate:
    return lambda s: s.state in states


def _and(left: Predicate, right: Predicate) -> Predicate:
    return lambda s: left(s) and right(s)


def _or(left: Predicate, right: Predicate) -> Predicate:
    return lambda s: left(s) or right(s)


class _Parser:
    def __init__(self, tokens: list[str], service_port: Callable[[str], int | None]) -> None:
        self.tokens = tokens
        self.index = 0
        self.service_port = service_port
        self.needs_owners = False

    def more(self) -> bool:
        return self.index < len(self.tokens)

    def peek(self) -> str | None:
        return self.tokens[self.index].lower() if self.more() else None

    def take(self, what: str) -> str:
        if not self.more():
            raise FilterError(f"bad filter: the filter ends where {what} was expected", self.index)
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, why: str, at: int | None = None) -> FilterError:
        at = self.index if at is None else at
        word = self.tokens[at] if at < len(self.tokens) else "<end>"
        return FilterError(f"bad filter at {word!r} (word {at + 1} of {' '.join(self.tokens)!r}): {why}", at)

    def state_clauses(self) -> frozenset[State] | None:
        included: set[State] | None = None
        excluded: set[State] = set()
        while self.peek() in ("state", "exclude"):
            keyword = self.take("state").lower()
            states = self.state_name()
            if keyword == "state":
                included = (included or set()) | states
            else:
                excluded |= states
        if included is None and not excluded:
            return None
        return frozenset((included if included is not None else STATE_NAMES["all"]) - excluded)

    def state_name(self) -> frozenset[State]:
        at = self.index
        name = self.take("a state name").lower()
        found = STATE_NAMES.get(name)
        if found is None:
            raise self.error(f"unknown state; one of {', '.join(STATE_NAMES)}", at)
        return found

    def expression(self) -> Predicate:
        left = self.conjunction()
        while self.peek() in ("or", "|", "||"):
            self.index += 1
            left = _or(left, self.conjunction())
        return left

    def conjunction(self) -> Predicate:
        left = self.unary()
        while self.more() and self.peek() not in ("or", "|", "||", ")"):
            if self.peek() in ("and", "&", "&&"):
                self.index += 1
            left = _and(left, self.unary())
        return left

    def unary(self) -> Predicate:
        word = self.peek()
        if word in ("not", "!"):
            self.index += 1
            inner = self.unary()
            return lambda s: not inner(s)
        if word == "(":
            self.index += 1
            inner = self.expression()
            if self.peek() != ")":
                raise self.error("expected ')'")
            self.index += 1
            return inner
        return self.test()

    def test(self) -> Predicate:
        at = self.index
        word = self.take("a test").lower()
        if word in ("sport", "dport"):
            compare, port = self.comparison()
            if word == "sport":
                return lambda s: isinstance(s.local, Endpoint) and compare(s.local.port, port)
            return lambda s: isinstance(s.peer, Endpoint) and compare(s.peer.port, port)
        if word in ("src", "dst"):
            match = self.address(self.take("an address"))
            return (lambda s: match(s.local)) if word == "src" else (lambda s: match(s.peer))
        if word == "state":
            states = self.state_name()
            return lambda s: s.state in states
        if word in ("pid", "proc", "process", "user", "uid"):
            return self.owner_test(word)
        if word.startswith(":") or word.isdigit():
            port = self.port(word.lstrip(":"), at)
            return lambda s: isinstance(s.local, Endpoint) and port in (s.local.port, s.peer.port)  # type: ignore[union-attr]
        raise self.error("expected a test: state, sport, dport, src, dst, :PORT, pid=, proc= or user=", at)

    def comparison(self) -> tuple[Callable[[int, int], bool], int]:
        at = self.index
        word = self.take("a comparison or a port")
        compare = _OPERATORS.get(word.lower())
        if compare is None:
            compare = operator.eq  # `sport :80` means `sport = :80`, as in ss
        else:
            at = self.index
            word = self.take("a port")
        return compare, self.port(word.lstrip(":"), at)

    def port(self, word: str, at: int) -> int:
        if word.isdigit():
            number = int(word)
            if number > 65535:
                raise self.error("a port is a number from 0 to 65535", at)
            return number
        found = self.service_port(word) if word else None
        if found is None:
            raise self.error("expected a port number or a known service name", at)
        return found

    def address(self, word: str) -> Callable[[object], bool]:
        at = self.index - 1
        if word.startswith(("/", "@")):
            return lambda end: isinstance(end, UnixEndpoint) and end.path is not None and fnmatch.fnmatchcase(end.path, word)
        host, port = word, None
        if word.startswith("["):
            host, _, rest = word[1:].partition("]")
            if rest.startswith(":"):
                port = self.port(rest[1:], at)
        elif word.count(":") == 1:
            host, _, text = word.partition(":")
            port = self.port(text, at)
        if host in ("", "*"):
            network = None
        else:
            try:
                network = ipaddress.ip_network(host, strict=False)
            except ValueError:
                raise self.error("expected an address, a prefix (10.0.0.0/8), [v6]:port or a unix path", at) from None

        def match(end: object) -> bool:
            if not isinstance(end, Endpoint):
                return False
            if port is not None and end.port != port:
                return False
            if network is None:
                return True
            try:
                address = ipaddress.ip_address(end.address)
            except ValueError:
                return False
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped and network.version == 4:
                address = address.ipv4_mapped
            return address.version == network.version and address in network

        return match

    def owner_test(self, word: str) -> Predicate:
        self.needs_owners = True
        at = self.index
        if self.peek() in ("=", "=="):
            self.index += 1
            at = self.index
        value = self.take(f"a value after {word}=")
        if word == "pid":
            if not value.isdigit():
                raise self.error("pid= takes a process id (a number)", at)
            pid = int(value)
            return lambda s: any(o.pid == pid for o in s.owners or ())
        if word in ("proc", "process"):
            return lambda s: any(fnmatch.fnmatchcase(o.name, value) for o in s.owners or ())
        from .owners import user_name

        wanted = user_name(int(value)) if value.isdigit() else value
        return lambda s: any(o.user == wanted for o in s.owners or ()) or (s.uid is not None and user_name(s.uid) == wanted)

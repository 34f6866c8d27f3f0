"""Explaining sockets in plain sentences, each built from facts measured on this host.

`gather(parse_target(text))` measures what surrounds a target (holders, port, queues, other
ends); `explanation_sentences()` turns those facts into sentences; `brief()` says one socket in
one short sentence (`ls --explain`). Nothing here prints.
"""

from __future__ import annotations

from .facts import Explanation, Host, Link, SocketFacts, gather, host_facts, port_facts
from .sentences import brief, explanation_sentences, socket_sentences
from .target import Target, parse_target

__all__ = [
    "Explanation",
    "Host",
    "Link",
    "SocketFacts",
    "Target",
    "brief",
    "explanation_sentences",
    "gather",
    "host_facts",
    "parse_target",
    "port_facts",
    "socket_sentences",
]

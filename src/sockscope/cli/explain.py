"""`sockscope explain TARGET`: what a socket is, who holds it and what to do next, in plain sentences.

Also the part of `ls --explain` that draws one short sentence under each row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ExitCode, UsageError
from .environment import Environment

if TYPE_CHECKING:
    import argparse


def add_parser(commands: Any) -> None:
    """Add `explain` to the command parsers."""
    p = commands.add_parser(
        "explain",
        help="explain a port, address, unix socket, pid or socket inode in plain sentences",
        description="Say what a socket is (kind, state and what the state means), which process holds it and through "
        "which descriptor, what its port is on this host (class, service, ephemeral range, privilege), a listener's "
        "accept queue and connections, a connection's other end, and the commands to go further. "
        "Every sentence comes from what is measured on this host now.",
        epilog="Targets: 8080, 53/udp, 127.0.0.1:8080, [::1]:8080, udp://127.0.0.1:53, /run/x.sock, @abstract, "
        "unix:PATH, pid:PID, inode:INODE or socket:[INODE]. Exit 1 when nothing matches, 2 for a target that is none of these.",
    )
    p.add_argument("target", metavar="TARGET", help="a port, an address, a unix socket path, pid:PID or inode:INODE")
    p.add_argument("--json", action="store_true", help="the facts as data, with the sentences")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Explain the target; exit 0 when something matched (1 nothing, 2 a bad target, 3 a pid we may not read)."""
    from ..explain import explanation_sentences, gather, parse_target

    found = gather(parse_target(args.target))
    paragraphs = explanation_sentences(found)
    if args.json:
        from .render import _dumps

        env.stdout.write(_dumps(explanation_json(found, paragraphs)) + "\n")
        return ExitCode.OK
    from .render import escape

    env.stdout.write("\n".join("\n".join(escape(sentence) for sentence in paragraph) + "\n" for paragraph in paragraphs))
    if found.denied and env.is_tty:
        env.note(f"{found.denied} processes of other users could not be inspected (run with sudo to see every holder)")
    return ExitCode.OK


def _clean(value: Any) -> Any:
    """Give a JSON value with every string made valid UTF-8 (names may hold any byte)."""
    from .render import escape_undecodable

    if isinstance(value, str):
        return escape_undecodable(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def _socket(sock: Any) -> dict[str, Any]:
    from .render import socket_json

    data = socket_json(sock, None)
    del data["service"]
    for owner in data["owners"] or ():
        owner["descriptor"] = f"/proc/{owner['pid']}/fd/{owner['fd']}"
        owner["link"] = f"socket:[{sock.inode}]"
    return data


def explanation_json(found: Any, paragraphs: list[list[str]]) -> dict[str, Any]:
    """Give the facts of an Explanation as JSON data, each socket with its sentences."""
    target = found.target
    sockets = []
    for facts, sentences in zip(found.sockets, paragraphs, strict=True):
        sockets.append(
            {
                "socket": _socket(facts.socket),
                "port": facts.port._asdict() if facts.port is not None else None,
                "other": _socket(facts.other) if facts.other is not None else None,
                "connections": [{"socket": _socket(link.socket), "other": _socket(link.other) if link.other else None} for link in facts.connections],
                "sentences": [_clean(s) for s in sentences],
            }
        )
    return {
        "target": _clean({"text": target.text, "kind": target.kind, "port": target.port, "proto": target.proto, "path": target.path, "number": target.number}),
        "host": found.host._asdict(),
        "port": found.port._asdict() if found.port is not None else None,
        "denied": found.denied,
        "sockets": sockets,
    }


def ls_rows(args: Any, env: Environment, sockets: list[Any], kinds: frozenset[Any], tcp: dict[int, str], udp: dict[int, str]) -> None:
    """Write `ls` output with one short sentence per socket: under each table row, or an "explain" key in JSON."""
    from ..explain import brief, host_facts, port_facts
    from ..inventory import proc_root
    from ..inventory.owners import scan
    from ..model import Endpoint, NetId
    from . import render

    if args.csv:
        raise UsageError("--explain goes with the table, --json or --jsonl (not --csv)")
    if sockets and sockets[0].owners is None:  # the sentence says who holds each socket, -p or not
        owned = scan(proc_root(), {s.inode for s in sockets if s.inode})
        sockets = [s._replace(owners=owned.owners(s.inode)) for s in sockets]
    host = host_facts()
    ports: dict[tuple[int, str], Any] = {}

    def port_of(sock: Any) -> Any:
        if sock.netid not in (NetId.TCP, NetId.UDP) or not isinstance(sock.local, Endpoint):
            return None
        key = (sock.local.port, sock.netid.value)
        if key not in ports:
            ports[key] = port_facts(*key)
        return ports[key]

    sentences = [brief(s, port_of(s), host) for s in sockets]
    if args.json or args.jsonl:
        service = render.service_of(tcp, udp)
        objects = [dict(render.socket_json(s, service(s)), explain=_clean(text)) for s, text in zip(sockets, sentences, strict=True)]
        if args.jsonl:
            env.stdout.write("".join(render._dumps(one) + "\n" for one in objects))
        else:
            env.stdout.write(render._dumps(objects) + "\n")
        return
    import io

    table = io.StringIO()
    texts = render.EndpointText(None if args.numeric else tcp, None if args.numeric else udp)
    netid = len(kinds) > 1 or bool(args.query)
    netns = args.netns is not None
    render.table(table, sockets, texts, netid=netid, extended=args.extended, processes=args.processes, netns=netns, header=not args.no_header)
    lines = table.getvalue().splitlines()
    head = lines[:1] if not args.no_header else []
    rows = lines[len(head) :]
    out = [*head]
    for row, text in zip(rows, sentences, strict=True):
        out += [row, f"    {render.escape(text)}"]
    env.stdout.write("".join(line + "\n" for line in out))

"""`sockscope who PORT|PATH ...`: which processes hold a port or a unix socket path."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from typing import Any

from ..errors import ExitCode
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `who` to the command parsers."""
    p = commands.add_parser(
        "who",
        help="which processes hold a port or unix socket path (exit 1 when free)",
        description="Show the processes holding a port (TCP, or UDP with --udp) or a unix socket path: "
        "pid, name, user, command line, start time, container, addresses it listens on, connections.",
        epilog="Examples: 'sockscope who 8080', 'sockscope who 53/udp', 'sockscope who /run/docker.sock'. "
        "Exit status: 0 when every query is held, 1 when one is free.",
    )
    p.add_argument(
        "queries", nargs="+", metavar="PORT|PORT/udp|PATH", help="a port (1-65535, :PORT, PORT/tcp, PORT/udp), or a unix socket path (/path, ./path, @abstract)"
    )
    p.add_argument("-u", "--udp", action="store_true", help="UDP ports instead of TCP")
    p.add_argument("--thorough", action="store_true", help="read every process (also finds sockets passed to unrelated processes)")
    p.add_argument("--json", action="store_true", help="JSON: {query, sockets, processes} (an array of them for several queries)")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Answer who holds each query; exit 0 when all are held, 1 otherwise."""
    from ..ports.who import parse_target, who

    targets = [parse_target(q) for q in args.queries]
    answers = who(targets, args.udp, thorough=args.thorough)
    if args.json:
        _json(env, answers, args.udp)
    else:
        _text(env, answers, args.udp)
    denied = max((a.denied for a in answers), default=0)
    if denied and any(a.held and not a.holders for a in answers):
        env.note(f"{denied} processes of other users cannot be inspected without root, so some holders are not shown")
    return ExitCode.OK if all(a.held for a in answers) else ExitCode.NOTHING_FOUND


def _label(answer: Any, udp: bool) -> str:
    """Give how a query is named in the output: `8080/tcp`, or its unix path made printable."""
    from .render import escape

    target = answer.target
    return f"{target.port}/{'udp' if target.is_udp(udp) else 'tcp'}" if target.port is not None else escape(target.path)


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds is not None else "?"


def _text(env: Environment, answers: list[Any], udp: bool) -> None:
    from .render import escape

    out = env.stdout
    for answer in answers:
        label = _label(answer, udp)
        if not answer.held:
            path = answer.target.path
            missing = path is not None and not path.startswith("@") and not os.path.exists(path)
            out.write(f"{label}: {'no such file' if missing else 'free'}\n")
            continue
        count = len(answer.holders)
        out.write(f"{label}: held by {count} process{'es' if count != 1 else ''}\n" if count else f"{label}: held (by processes not visible to this user)\n")
        for holder in answer.holders:
            proc = holder.process
            name, user = escape(proc.name), escape(proc.user)
            container = f"  container {escape(proc.container)}" if proc.container else ""
            out.write(f"  pid {proc.pid}  {name}  user {user}  started {_when(proc.started)}{container}\n")
            out.write(f"    command     {escape(shlex.join(proc.command)) if proc.command else '[' + name + ']'}\n")
            if holder.listening:
                out.write(f"    listening   {' '.join(map(escape, holder.listening))}\n")
            out.write(f"    connections {holder.connections}\n")


def _json(env: Environment, answers: list[Any], udp: bool) -> None:
    import json

    from .. import services
    from . import render

    clean = render.escape_undecodable
    service = render.service_of(services.by_port("tcp"), services.by_port("udp"))
    objects = []
    for answer in answers:
        objects.append(
            {
                "query": clean(answer.target.text),
                "sockets": [render.socket_json(s, service(s)) for s in answer.sockets],
                "processes": [
                    {
                        "pid": h.process.pid,
                        "name": clean(h.process.name),
                        "user": clean(h.process.user),
                        "command": [clean(word) for word in h.process.command],
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(h.process.started)) if h.process.started else None,
                        "container": clean(h.process.container) if h.process.container else None,
                        "listening": [clean(text) for text in h.listening],
                        "connections": h.connections,
                    }
                    for h in answer.holders
                ],
            }
        )
    json.dump(objects[0] if len(objects) == 1 else objects, env.stdout, indent=2, ensure_ascii=False)
    env.stdout.write("\n")

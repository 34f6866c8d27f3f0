"""`sockscope kill PORT`: stop whoever listens on a port, and prove the port is free."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..errors import ExitCode, SockscopeError, UsageError
from . import seconds
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `kill` to the command parsers."""
    p = commands.add_parser(
        "kill",
        help="stop whoever listens on a port (signal, then SIGKILL after a timeout), then confirm it is free",
        description="Send a signal to every process listening on PORT; those still there after --timeout get SIGKILL; "
        "then check that the port is free. Asks first on a terminal; elsewhere it needs --yes.",
    )
    p.add_argument("port", metavar="PORT", help="the port (1-65535, :PORT, PORT/tcp or PORT/udp as fuser takes it)")
    p.add_argument("-s", "--signal", default="TERM", help="the first signal (default TERM)")
    p.add_argument("-t", "--timeout", type=seconds, default=5.0, metavar="S", help="seconds to wait before SIGKILL (default 5)")
    p.add_argument("-u", "--udp", action="store_true", help="a UDP port instead of TCP")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Stop the listeners of a port; exit 0 when the port ends up free."""
    from ..inventory import proc_root
    from ..ports.kill import Victim, parse_signal, stop
    from ..ports.who import parse_port_target

    target = parse_port_target(args.port)
    port, udp = target.port, target.is_udp(args.udp)
    assert port is not None
    sig = parse_signal(args.signal)
    if not 0 <= args.timeout < math.inf:  # nan and inf too: the wait before SIGKILL must end
        raise UsageError(f"--timeout {args.timeout:g}: give a number of seconds, 0 or more")
    proto = "udp" if udp else "tcp"

    def confirm(victims: list[Victim]) -> bool:
        for v in victims:
            env.stderr.write(f"port {port}/{proto}: pid {v.process.pid} {v.process.name} (user {v.process.user}) listening on {' '.join(v.listening)}\n")
        if args.yes:
            return True
        if not env.interactive():
            raise UsageError("not on a terminal: refusing to signal without --yes")
        return env.ask(f"send {sig.name} to {len(victims)} process{'es' if len(victims) != 1 else ''}?")

    def event(text: str) -> None:
        env.stderr.write(text + "\n")

    outcome = stop(port, sig=sig, timeout=args.timeout, udp=udp, root=proc_root(), confirm=confirm, on_event=event)
    for process, why in outcome.skipped:
        env.note(f"left pid {process.pid} ({process.name}) alone: {why}")
    if outcome.free:
        env.stdout.write(f"port {port}/{proto} is free\n")
        return ExitCode.OK
    left = ", ".join(f"pid {p.pid} ({p.name})" for p in outcome.left) or "a process that cannot be seen"
    raise SockscopeError(f"port {port}/{proto} is still held by {left}")

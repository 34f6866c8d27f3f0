"""`sockscope close FILTER --yes`: close single connections through the kernel, like `ss -K`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ExitCode, UsageError
from ..model import NetId
from .environment import Environment

if TYPE_CHECKING:
    import argparse

# The kinds the kernel can close one by one (sock_diag SOCK_DESTROY).
CLOSABLE = frozenset({NetId.TCP, NetId.UDP})


def add_parser(commands: Any) -> None:
    """Add `close` to the command parsers."""
    p = commands.add_parser(
        "close",
        help="close the TCP (or UDP) sockets a filter matches, through the kernel (like ss -K)",
        description="Close every socket the filter matches with sock_diag SOCK_DESTROY: the peer gets a reset, "
        "the owning process an error on its next call. Needs root and a kernel with CONFIG_INET_DIAG_DESTROY.",
        epilog="Examples: 'sockscope close dport = :5432 --yes', 'sockscope close pid=1234 and state established --yes'.",
    )
    p.add_argument("-u", "--udp", action="store_true", help="UDP sockets instead of TCP")
    p.add_argument("-l", "--listening", action="store_true", help="also match listening sockets (default: connections only)")
    p.add_argument("-y", "--yes", action="store_true", help="really close them (required)")
    p.add_argument("-n", "--dry-run", action="store_true", help="only show what would be closed")
    p.add_argument("filter", nargs="+", metavar="FILTER", help="ss-style filter words (as for ls)")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Close the matching sockets; exit 1 when none matched."""
    netids = frozenset({NetId.UDP if args.udp else NetId.TCP})
    return close_matching(env, args.filter, netids, listening=args.listening, yes=args.yes, dry_run=args.dry_run)


def close_matching(env: Environment, words: list[str], netids: frozenset[NetId], *, listening: bool, yes: bool, dry_run: bool) -> int:
    """Show the sockets a filter matches and close them when `yes`; give the exit status (1: none matched).

    The rules `close` and `ls -K` share: a filter that picks sockets (a state alone would close
    them all), listening sockets only when asked for, and nothing closed without `yes`.
    """
    from .. import services
    from ..inventory import state_mask
    from ..inventory.filters import compile_filter
    from ..model import State
    from ..ports.close import close, matching
    from .ls import DEFAULT_STATES

    tcp = services.by_port("tcp")
    parsed = compile_filter(words, {name: port for port, name in sorted(tcp.items(), reverse=True)}.get)
    if parsed.predicate is None or not parsed.selects:
        raise UsageError("give a filter that picks the sockets to close by address, port or process (a state alone would close them all)")
    states = parsed.states or (DEFAULT_STATES | ({State.LISTEN, State.UNCONN} if listening else set()))
    found = matching(netids, state_mask(states), parsed.predicate, parsed.needs_owners)
    if not found:
        env.stderr.write("no socket matches\n")
        return ExitCode.NOTHING_FOUND
    from ..ports.who import endpoint_text
    from .render import escape

    for sock, _id, _proto in found:
        env.stdout.write(f"{sock.netid.value} {sock.state.value} {escape(endpoint_text(sock.local))} {escape(endpoint_text(sock.peer))}\n")
    if dry_run:
        return ExitCode.OK
    if not yes:
        raise UsageError(f"{len(found)} socket(s) match; add --yes to close them")
    result = close(found)
    env.stdout.write(f"closed {len(result.closed)}" + (f"; {len(result.gone)} had closed already" if result.gone else "") + "\n")
    return ExitCode.OK

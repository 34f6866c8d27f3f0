"""`sockscope summary`: counts like `ss -s`, plus the processes holding the most sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ExitCode
from .environment import Environment

if TYPE_CHECKING:
    import argparse


def add_parser(commands: Any) -> None:
    """Add `summary` to the command parsers."""
    p = commands.add_parser("summary", help="socket counts by kind, TCP state and process (like ss -s)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="how many processes to list (default 10)")
    p.add_argument("--json", action="store_true", help="the counts as a JSON object")
    p.add_argument("--netns", metavar="NAME|PID|all", help="count in another network namespace (or all)")


def options(*, top: int = 10, json: bool = False, netns: str | None = None) -> argparse.Namespace:
    """Give the arguments `summary` runs with when another command (`ls -s`) asks for it."""
    import argparse

    return argparse.Namespace(top=top, json=json, netns=netns)


def run(args: argparse.Namespace, env: Environment) -> int:
    """Count every socket and print the summary."""
    from ..errors import UsageError
    from ..inventory import Query, proc_root, take
    from ..inventory.summary import orphaned_count, summarize

    if args.top < 0:
        raise UsageError("--top takes a number of processes, 0 or more")
    inventory = take(Query(owners=True, netns=args.netns))
    for note in inventory.notes:
        env.note(note)
    try:
        with open(f"{proc_root()}/net/sockstat", encoding="ascii") as handle:
            orphaned = orphaned_count(handle.read())
    except OSError:
        orphaned = None
    result = summarize(inventory.sockets, orphaned)
    from .render import escape, escape_undecodable

    top = result.by_process.most_common(args.top)
    if args.json:
        import json

        document = {
            "total": result.total,
            "by_netid": dict(result.by_netid),
            "tcp_states": dict(result.tcp_states),
            "tcp_orphaned": result.orphaned,
            "transports": result.by_transport,
            "processes": [
                {"pid": pid, "name": escape_undecodable(name), "user": escape_undecodable(user), "sockets": count} for (pid, name, user), count in top
            ],
            "unowned": result.unowned,
        }
        env.stdout.write(json.dumps(document, indent=1) + "\n")
        return ExitCode.OK
    out = env.stdout
    states = result.tcp_states
    tcp_total = result.by_netid.get("tcp", 0)
    out.write(f"Total: {result.total}\n")
    detail = ", ".join(f"{name.lower()} {states[name]}" for name in sorted(states))
    orphan = f", orphaned {result.orphaned}" if result.orphaned is not None else ""
    out.write(f"TCP:   {tcp_total} ({detail or 'none'}{orphan})\n\n")
    out.write(f"{'Transport':<10} {'Total':>7} {'IP':>7} {'IPv6':>7}\n")
    for name, counts in result.by_transport.items():
        out.write(f"{name.upper():<10} {counts['total']:>7} {counts['ip']:>7} {counts['ipv6']:>7}\n")
    other = {k: v for k, v in sorted(result.by_netid.items()) if k not in ("tcp", "udp", "raw")}
    if other:
        out.write("\n" + "  ".join(f"{name} {count}" for name, count in other.items()) + "\n")
    if top:
        out.write(f"\n{'Sockets':>7}  {'PID':>7}  {'User':<12} Process\n")
        for (pid, name, user), count in top:
            out.write(f"{count:>7}  {pid:>7}  {escape(user):<12} {escape(name)}\n")
    if result.unowned:
        out.write(f"{result.unowned:>7}  {'-':>7}  {'-':<12} (no process seen)\n")
    return ExitCode.OK

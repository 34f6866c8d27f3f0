"""`sockscope serve [ADDRESS]`: a multi-client server (print, echo, discard, chat, http)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ..errors import ExitCode, UsageError
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `serve` to the command parsers."""
    p = commands.add_parser(
        "serve",
        help="a multi-client server: print, echo, discard, chat or http, over tcp, udp and unix sockets",
        description="Bind ADDRESS (default tcp://127.0.0.1:9999) and serve many clients at once. Modes: print (log "
        "each client and what it sends), echo, discard, chat (lines go to every other client), http (static files "
        "under --root). Stops on SIGINT/SIGTERM: no new clients, those connected get --grace seconds, exit 0.",
        epilog="Addresses: 9999, :9999, 0.0.0.0:8080, [::1]:8080, udp://:5353, unix:/tmp/s.sock, unix:@name, "
        "unix-dgram:/tmp/d.sock, seqpacket:/tmp/p.sock. Exit 4 when the address is in use (naming the holder), "
        "3 for a privileged port without privilege.",
    )
    p.add_argument("address", nargs="?", default="tcp://127.0.0.1:9999", metavar="ADDRESS", help="where to listen (default tcp://127.0.0.1:9999)")
    p.add_argument("-m", "--mode", default="print", choices=["print", "echo", "discard", "chat", "http"], help="what to do with clients (default print)")
    p.add_argument("--root", default=".", metavar="DIR", help="the directory --mode http serves (default .)")
    p.add_argument("--max-conns", type=int, default=1024, metavar="N", help="clients at once; more are refused (default 1024)")
    p.add_argument("--idle-timeout", type=float, metavar="S", help="drop a client silent for S seconds (default: never; http: 30)")
    p.add_argument("--request-timeout", type=float, default=10.0, metavar="S", help="http: a request must arrive whole within S seconds (default 10)")
    p.add_argument("--max-line", type=int, default=64 * 1024, metavar="BYTES", help="chat: longest line (default 65536)")
    p.add_argument("--max-request", type=int, default=64 * 1024, metavar="BYTES", help="http: largest request head (default 65536)")
    p.add_argument("--workers", default="1", metavar="N", help="processes sharing the port through SO_REUSEPORT ('auto': one per core)")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="speak TLS with this certificate chain and key (PEM)")
    p.add_argument("--grace", type=float, default=2.0, metavar="S", help="on stop, seconds clients get to finish (default 2)")
    p.add_argument("--backlog", type=int, default=1024, metavar="N", help="listen() backlog (default 1024)")
    p.add_argument("--json", action="store_true", help="one JSON object per event (listening, connect, data, close, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-data events: only connects and closes")
    p.add_argument("--trace", action="store_true", help="narrate each system call: socket, bind, listen, accept, recv, send, close")


def _workers(text: str) -> int:
    if text == "auto":
        return len(os.sched_getaffinity(0))
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--workers {text!r}: give a number of at least 1, or 'auto'")
    return int(text)


class Printer:
    """Writes server events as lines of text, or as JSON Lines."""

    def __init__(self, env: Environment, as_json: bool, mode: str) -> None:
        self.env, self.as_json, self.mode = env, as_json, mode
        self.dead = False
        if as_json:
            import json

            self.dumps = json.dumps

    def __call__(self, event: Any) -> None:
        if self.dead:
            return
        line = self.json_line(event) if self.as_json else self.text_line(event)
        if line is None:
            return
        stream = self.env.stderr if event.kind in ("warning", "error") and not self.as_json else self.env.stdout
        try:
            stream.write(line)
            stream.flush()
        except BrokenPipeError:  # the reader went away: keep serving, stop writing
            self.dead = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)

    def json_line(self, event: Any) -> str:
        record: dict[str, Any] = {"time": round(time.time(), 6), "event": event.kind}
        for name in ("worker", "conn", "peer", "pid", "uid", "size", "received", "sent", "seconds", "detail"):
            value = getattr(event, name)
            if value is not None:
                record[name] = value
        if event.kind == "data" and event.data is not None and self.mode == "print":
            record["text"] = event.data.decode("utf-8", "backslashreplace")
        return self.dumps(record) + "\n"

    def text_line(self, event: Any) -> str | None:
        kind = event.kind
        if kind == "trace":
            return f"  {event.detail}\n"
        if kind in ("warning", "error"):
            return f"sockscope: {kind}: {event.detail}\n"
        stamp = time.strftime("%H:%M:%S")
        who = f"#{event.conn} {event.peer}" if event.conn is not None else str(event.peer)
        if event.worker is not None:
            who = f"w{event.worker} {who}"
        if kind == "listening":
            return f"{stamp} listening on {event.peer} ({event.detail}); Ctrl-C stops\n"
        if kind == "connect":
            return f"{stamp} {who} {'sent its first datagram' if event.detail else 'connected'}\n"
        if kind == "data":
            if event.detail:  # an HTTP request line and status
                return f"{stamp} {who} {event.detail} {event.size}\n"
            if self.mode != "print" or event.data is None:
                return f"{stamp} {who} sent {event.size} bytes\n"
            text = event.data.decode("utf-8", "backslashreplace").rstrip("\n").split("\n")
            return "".join(f"{stamp} {who}: {line}\n" for line in text)
        if kind == "close":
            return f"{stamp} {who} left after {event.seconds:.1f}s (received {event.received} bytes, sent {event.sent}): {event.detail}\n"
        if kind == "refused":
            return f"{stamp} refused {event.peer}: {event.detail}\n"
        if kind in ("stopping", "stopped"):
            return f"{stamp} {kind}: {event.detail}\n"
        return None


def run(args: argparse.Namespace, env: Environment) -> int:
    """Serve until SIGINT/SIGTERM."""
    from ..address import parse_address
    from ..net.server import Settings, serve

    address = parse_address(args.address, default_host="127.0.0.1")
    mode = args.mode
    idle = args.idle_timeout if args.idle_timeout is not None else (30.0 if mode == "http" else None)
    for name in ("max_line", "max_request", "backlog"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.grace < 0 or args.request_timeout <= 0:
        raise UsageError("--grace must be 0 or more and --request-timeout more than 0 seconds")
    # text output shows what print and http clients do; the other modes report connects and closes
    data_events = not args.quiet and (args.json or mode in ("print", "http"))
    settings = Settings(
        address=address,
        mode=mode,
        root=os.path.abspath(args.root),
        max_conns=args.max_conns,
        idle_timeout=idle,
        request_timeout=args.request_timeout,
        max_line=args.max_line,
        max_request=args.max_request,
        workers=_workers(args.workers),
        tls=(args.tls[0], args.tls[1]) if args.tls else None,
        grace=args.grace,
        backlog=args.backlog,
        data_events=data_events,
        trace=args.trace,
    )
    status = serve(settings, Printer(env, args.json, mode))
    return ExitCode.OK if status == 0 else ExitCode.RUNTIME

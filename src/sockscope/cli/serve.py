"""`sockscope serve [ADDRESS]`: a multi-client server (print, echo, discard, chat, http)."""

from __future__ import annotations

import argparse
import base64
import os
import time
from typing import IO, Any

from ..errors import ExitCode, UsageError
from . import seconds
from .environment import Environment
from .serving_log import OutputBuffer


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
    p.add_argument(
        "--max-per-client",
        type=int,
        metavar="N",
        help="connections at once from one client address (one uid over unix); more are refused (default: max-conns / 8, at least 16 or max-conns)",
    )
    p.add_argument("--idle-timeout", type=seconds, metavar="S", help="drop a client silent for S seconds (default: never; http: 30)")
    p.add_argument(
        "--request-timeout",
        type=seconds,
        default=10.0,
        metavar="S",
        help="http: a request must arrive whole, TLS: a handshake must finish, within S seconds (default 10)",
    )
    p.add_argument("--max-line", type=int, default=64 * 1024, metavar="BYTES", help="chat: longest line (default 65536)")
    p.add_argument("--max-request", type=int, default=64 * 1024, metavar="BYTES", help="http: largest request head (default 65536)")
    p.add_argument("--workers", default="1", metavar="N", help="processes sharing the port through SO_REUSEPORT ('auto': one per core; at most 8 per core)")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="speak TLS with this certificate chain and key (PEM)")
    p.add_argument("--grace", type=seconds, default=2.0, metavar="S", help="on stop, seconds clients get to finish (default 2)")
    p.add_argument("--backlog", type=int, default=1024, metavar="N", help="listen() backlog (default 1024)")
    p.add_argument("--json", action="store_true", help="one JSON object per event (listening, connect, data, close, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-data events: only connects and closes")
    p.add_argument("--trace", action="store_true", help="narrate each system call: socket, bind, listen, accept, recv, send, close")


MOST_WORKERS_PER_CORE = 8


def _workers(text: str) -> int:
    if text == "auto":
        return len(os.sched_getaffinity(0))
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--workers {text!r}: give a number of at least 1, or 'auto'")
    cores = len(os.sched_getaffinity(0))
    if int(text) > MOST_WORKERS_PER_CORE * cores:  # each is a process of its own: thousands would only exhaust the host
        raise UsageError(f"--workers {text}: at most {MOST_WORKERS_PER_CORE} per core ({MOST_WORKERS_PER_CORE * cores} on {cores} cores)")
    return int(text)


class Printer:
    """Writes server events as lines of text, or as JSON Lines, without ever making serving wait.

    Lines go through an `OutputBuffer` per stream (a thread writes them); when the output is not
    read, lines are dropped and counted. Everything a client chose (its data, its name, a unix
    path, a process name) is escaped by `printable` in text, so it cannot move the cursor or
    forge a line; JSON escapes control characters itself, and `text` is completed by a base64
    `data` field when the bytes are not UTF-8.
    """

    def __init__(self, env: Environment, as_json: bool, mode: str) -> None:
        from ..net.hub import printable, printable_text

        self.env, self.as_json, self.mode = env, as_json, mode
        self.printable, self.printable_text = printable, printable_text
        if as_json:
            import json

            self.dumps = json.dumps
        self.out = self._buffer(env.stdout)
        self.err = self.out if as_json else self._buffer(env.stderr)

    def _buffer(self, stream: IO[str]) -> OutputBuffer | IO[str]:
        try:
            fd = stream.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation: a StringIO built by a test
            return stream
        stream.flush()
        return OutputBuffer(fd, dropped_line=self.dropped_line)

    def dropped_line(self, count: int) -> bytes:
        text = f"{count} log lines dropped: output not read"
        if self.as_json:
            return (self.dumps({"time": round(time.time(), 6), "event": "warning", "detail": text, "dropped": count}) + "\n").encode()
        return f"sockscope: {text}\n".encode()

    def __call__(self, event: Any) -> None:
        target = self.err if event.kind in ("warning", "error") else self.out
        if isinstance(target, OutputBuffer) and target.drop_if_full():
            return  # the output is not read: not even the line is made
        line = self.json_line(event) if self.as_json else self.text_line(event)
        if line is None:
            return
        if isinstance(target, OutputBuffer):
            target.put(line.encode("utf-8", "surrogateescape"))
        else:
            target.write(line)

    def flush(self, timeout: float = 2.0) -> None:
        """Wait up to `timeout` seconds for what is queued to be written (at exit)."""
        end = time.monotonic() + timeout
        for target in {id(self.out): self.out, id(self.err): self.err}.values():
            if isinstance(target, OutputBuffer):
                target.flush(max(0.0, end - time.monotonic()))
            else:
                target.flush()

    def json_line(self, event: Any) -> str:
        record: dict[str, Any] = {"time": round(time.time(), 6), "event": event.kind}
        for name in ("worker", "conn", "peer", "pid", "uid", "size", "received", "sent", "seconds", "detail"):
            value = getattr(event, name)
            if value is not None:
                record[name] = _valid(value) if isinstance(value, str) else value
        if event.kind == "data" and event.data is not None and self.mode == "print":
            try:
                record["text"] = event.data.decode()
            except UnicodeDecodeError:  # not UTF-8: text shows it, data keeps every byte
                record["text"] = event.data.decode("utf-8", "backslashreplace")
                record["data"] = base64.b64encode(event.data).decode("ascii")
        return self.dumps(record) + "\n"

    def text_line(self, event: Any) -> str | None:
        kind = event.kind
        detail = self.printable_text(event.detail) if event.detail else event.detail
        if kind == "trace":
            return f"  {detail}\n"
        if kind in ("warning", "error"):
            return f"sockscope: {kind}: {detail}\n"
        stamp = time.strftime("%H:%M:%S")
        peer = self.printable_text(event.peer) if event.peer else str(event.peer)
        who = f"#{event.conn} {peer}" if event.conn is not None else peer
        if event.worker is not None:
            who = f"w{event.worker} {who}"
        if kind == "listening":
            return f"{stamp} listening on {peer} ({detail}); Ctrl-C stops\n"
        if kind == "connect":
            return f"{stamp} {who} {'sent its first datagram' if detail else 'connected'}\n"
        if kind == "data":
            if detail:  # an HTTP request line and status
                return f"{stamp} {who} {detail} {event.size}\n"
            if self.mode != "print" or event.data is None:
                return f"{stamp} {who} sent {event.size} bytes\n"
            # one log line per line the client sent; a CR before the LF is the line's end, any other CR is shown
            lines = [self.printable(line.removesuffix(b"\r")) for line in event.data.removesuffix(b"\n").split(b"\n")]
            return "".join(f"{stamp} {who}: {line}\n" for line in lines)
        if kind == "close":
            return f"{stamp} {who} left after {event.seconds:.1f}s (received {event.received} bytes, sent {event.sent}): {detail}\n"
        if kind == "refused":
            return f"{stamp} refused {peer}: {detail}\n"
        if kind in ("stopping", "stopped"):
            return f"{stamp} {kind}: {detail}\n"
        return None


def _valid(text: str) -> str:
    """Give `text` as valid UTF-8 text: a name holding undecodable bytes (surrogates) gets them as `\\xff`."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _root(text: str, mode: str) -> str | None:
    """Give --root as an absolute path (None when the mode serves no files)."""
    try:
        return os.path.abspath(text)
    except FileNotFoundError:  # the current directory was removed
        if mode != "http":
            return None
        raise UsageError(f"--root {text!r}: the current directory no longer exists; give --root as an absolute path") from None


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
        root=_root(args.root, mode),
        max_conns=args.max_conns,
        max_per_client=args.max_per_client,
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
    printer = Printer(env, args.json, mode)
    try:
        status = serve(settings, printer)
    finally:
        printer.flush()
    return ExitCode.OK if status == 0 else ExitCode.RUNTIME

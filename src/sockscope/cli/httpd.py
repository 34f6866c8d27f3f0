"""How `sockscope exporter` and `sockscope web` serve HTTP: one set of rules, one aiohttp runner.

Both commands take the same options (`add_options`), obey the same rule of who may connect
(`guarded`: loopback by default; any other address needs a bearer token or TLS with client
certificates), bind through `net.listeners` (a port in use is one line and exit 4), keep
aiohttp's log to one line a second (`quiet_log`), and run until SIGINT or SIGTERM (`serve`).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import UsageError
from .environment import Environment

if TYPE_CHECKING:
    import socket
    import ssl

    from aiohttp import web

    from ..address import Address

LONGEST_TOKEN = 1024


def add_options(p: Any, default_listen: str, what: str) -> None:
    """Add --listen, --token, --token-file and the TLS options, spelled alike on every serving command."""
    p.add_argument("--listen", default=default_listen, metavar="HOST:PORT", help=f"where to serve {what} (default {default_listen})")
    p.add_argument("--token", metavar="TEXT", help="require this bearer token (`Authorization: Bearer TEXT`; the page takes ?token=TEXT); seen by `ps`")
    p.add_argument("--token-file", metavar="PATH", help="require the bearer token held in this file")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (default: in --tls-cert)")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="the same as --tls-cert CERT --tls-key KEY")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by these CAs")


class Serving(NamedTuple):
    """Where to serve and how it is guarded, checked against the rule of who may connect."""

    address: Address
    token: str | None
    tls: ssl.SSLContext | None
    client_certificates: bool
    loopback: bool

    def guard(self) -> str:
        """Give the words a start-up line uses for who may connect."""
        said = []
        if self.token is not None:
            said.append("bearer token")
        if self.client_certificates:
            said.append("client certificate")
        if said:
            return " and ".join(said) + " required"
        return "loopback only"


def guarded(args: argparse.Namespace) -> Serving:
    """Give the Serving of the command line; UsageError when an option is bad or the address is not guarded."""
    from ..address import parse_address

    address = parse_address(args.listen, default_host="127.0.0.1")
    if address.kind != "tcp" or address.port is None:
        raise UsageError(f"--listen {args.listen!r}: give HOST:PORT (this is served over TCP)")
    token = token_of(args)
    cert, key = _cert_and_key(args)
    tls = tls_context(cert, key, args.tls_client_ca) if cert is not None else None
    loopback = is_loopback(address.host or "127.0.0.1")
    if not loopback and token is None and args.tls_client_ca is None:
        raise UsageError(
            f"--listen {args.listen}: beyond loopback anyone who reaches the port would read every socket of this host; "
            "add --token (or --token-file), or --tls-cert with --tls-client-ca"
        )
    return Serving(address, token, tls, args.tls_client_ca is not None, loopback)


def token_of(args: argparse.Namespace) -> str | None:
    """Give the bearer token of --token or --token-file (None without either); UsageError on a bad one."""
    if args.token is not None and args.token_file is not None:
        raise UsageError("give --token or --token-file, not both")
    token: str | None = args.token
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--token-file {args.token_file}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if token is not None and (not token or len(token) > LONGEST_TOKEN or not token.isprintable() or " " in token):
        raise UsageError(f"--token: the bearer token must be one word of 1 to {LONGEST_TOKEN} printable characters (no spaces)")
    return token


def _cert_and_key(args: argparse.Namespace) -> tuple[str | None, str | None]:
    cert, key = args.tls_cert, args.tls_key
    if args.tls is not None:
        if cert is not None or key is not None:
            raise UsageError("give --tls CERT KEY or --tls-cert/--tls-key, not both")
        cert, key = args.tls
    if cert is None and (key is not None or args.tls_client_ca is not None):
        raise UsageError("--tls-key and --tls-client-ca need --tls-cert (or --tls CERT KEY)")
    return cert, key


def tls_context(cert: str, key: str | None, client_ca: str | None) -> ssl.SSLContext:
    """Give the server's TLS context (client certificates required with `client_ca`); UsageError on unreadable files."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--tls-cert {cert}: cannot load the certificate and key ({getattr(exc, 'strerror', None) or exc})") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-client-ca {client_ca}: cannot load it ({getattr(exc, 'strerror', None) or exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def is_loopback(host: str) -> bool:
    """Tell whether every address `host` names is a loopback one (a name is resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        pass
    import socket

    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%", maxsplit=1)[0]).is_loopback for info in infos)


def bind(serving: Serving) -> list[socket.socket]:
    """Give listening sockets on every address the --listen host names; AddressInUse (exit 4) and others typed."""
    from ..net.listeners import open_inet

    return open_inet(serving.address, backlog=128, reuse_port=False, narrate=None)


def urls(serving: Serving, sockets: list[socket.socket]) -> str:
    """Give the base URLs the sockets are reached at, comma-separated."""
    scheme = "https" if serving.tls is not None else "http"
    shown = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        shown.append(f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}")
    return ", ".join(shown)


def quiet_log(env: Environment) -> None:
    """Make aiohttp's server log one line per error, at most one a second, and nothing for a client's bad request.

    Its default is a traceback for every malformed request: anyone could fill the terminal (or
    block a stderr nobody reads) by sending garbage.
    """
    import logging

    from aiohttp.http_exceptions import HttpProcessingError

    class OneLine(logging.Handler):
        last = 0.0

        def emit(self, record: logging.LogRecord) -> None:
            error = record.exc_info[1] if record.exc_info else None
            if isinstance(error, HttpProcessingError) or time.monotonic() - self.last < 1.0:
                return  # a client's bad request is the client's
            self.last = time.monotonic()
            first = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else ""
            detail = f": {type(error).__name__}: {first}" if error is not None else ""
            with contextlib.suppress(OSError, ValueError):
                env.error(f"{record.getMessage()}{detail}")

    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.websocket"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [OneLine()]
        logger.propagate = False


async def serve(app: web.Application, sockets: list[socket.socket], tls: ssl.SSLContext | None, started: Any = None) -> None:
    """Serve `app` on bound listening sockets until SIGINT or SIGTERM (`started()` is called once it answers)."""
    import asyncio
    import signal

    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=tls).start()
        if started is not None:
            started()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
    finally:
        await runner.cleanup()

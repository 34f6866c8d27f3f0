"""TLS for stream servers, with the handshake inside the server's limits.

asyncio's `create_server(ssl=...)` hands a client to its protocol only after the handshake: until
then the client is not counted in --max-conns, not timed out by the hub and not told about, so
silent connections that never start a handshake can fill the server. Here the server accepts
the socket itself, counts the client in at once (a `connect` event, --max-conns,
--max-per-client), then hands the socket to `loop.connect_accepted_socket(ssl=...)` with
--request-timeout as the handshake's limit; a failed or late handshake is a `close` event that
says so. (`start_tls` on an accepted transport would lose the client's first bytes on uvloop,
which starts reading as soon as `connection_made` returns.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from .hub import Hub
from .listeners import accept_clients
from .modes import StreamSession


class _Encrypted(Exception):
    """The key asks for a passphrase."""


def _encrypted() -> str:
    raise _Encrypted


def tls_context(cert: str, key: str) -> Any:
    """Give a server SSLContext from a certificate chain and key file (UsageError when unreadable)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # no password: OpenSSL would ask for one on the terminal, twice, and then fail with EINVAL
        context.load_cert_chain(cert, key, password=_encrypted)
    except _Encrypted:
        raise UsageError(f"the TLS key {key!r} is encrypted: give one without a passphrase (openssl pkey -in KEY -out PLAIN)") from None
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {cert!r} and key {key!r}: {exc}") from None
    return context


class Handshaking:
    """What a session holds as its transport while its TLS handshake runs: enough to name the client and to end it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.task: asyncio.Task[Any] | None = None
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "peername":
            try:
                return self.sock.getpeername()
            except OSError:
                return default
        return default

    def close(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()  # connect_accepted_socket closes what it made

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def serve_tls(
    loop: asyncio.AbstractEventLoop,
    hub: Hub,
    listener: socket.socket,
    make_session: Callable[[], StreamSession],
    context: Any,
    handshakes: set[asyncio.Task[None]],
) -> Callable[[], None]:
    """Accept TLS clients on `listener` (their handshakes under way go in `handshakes`); give the function that stops accepting."""

    def take(sock: socket.socket) -> None:
        session = make_session()
        shim = Handshaking(sock)
        if not session.arrived(shim):
            sock.close()
            return
        shim.task = task = loop.create_task(_handshake(hub, sock, session, shim, context))
        handshakes.add(task)
        task.add_done_callback(handshakes.discard)

    return accept_clients(loop, listener, take)


async def _handshake(hub: Hub, sock: socket.socket, session: StreamSession, shim: Handshaking, context: Any) -> None:
    """Upgrade one accepted client to TLS within --request-timeout; its session takes over once done."""
    loop = asyncio.get_running_loop()
    limit = hub.settings.request_timeout
    started = loop.time()
    try:
        # the session's connection_made is called by the loop once the handshake is done (the client is already counted in)
        await loop.connect_accepted_socket(lambda: session, sock, ssl=context, ssl_handshake_timeout=limit)
    except asyncio.CancelledError:
        _close(sock)
        hub.left(session, session.closing_reason or "server stopped during the TLS handshake")
        if not shim.closing:
            raise
    except Exception as exc:  # ssl.SSLError, ConnectionError, the timeout: each ends this client, never the server
        _close(sock)
        late = loop.time() - started >= limit * 0.99
        hub.left(session, f"TLS handshake not done within {limit:g}s" if late else f"TLS handshake failed: {_why(exc)}")


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _why(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:  # ssl.SSLError: WRONG_VERSION_NUMBER, HTTP_REQUEST, ...
        return reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__

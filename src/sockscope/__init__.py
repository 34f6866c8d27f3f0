"""sockscope: every socket on a Linux host, who owns it, and what is listening.

The library's face. Everything here is importable without the command-line parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ExitCode, SockscopeError
from .model import Endpoint, Family, NetId, Owner, Socket, State, UnixEndpoint

if TYPE_CHECKING:
    from .inventory import list_sockets
    from .inventory.summary import summarize as summary

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "ExitCode",
    "Family",
    "NetId",
    "Owner",
    "Socket",
    "SockscopeError",
    "State",
    "UnixEndpoint",
    "__version__",
    "list_sockets",
    "summary",
]


def __getattr__(name: str) -> object:
    # The inventory is imported on first use, so `import sockscope` (and --version) stay instant.
    if name == "list_sockets":
        from .inventory import list_sockets

        return list_sockets
    if name == "summary":
        from .inventory.summary import summarize

        return summarize
    raise AttributeError(f"module 'sockscope' has no attribute {name!r}")

"""sockscope: every socket on a Linux host, who owns it, and what is listening.

The library's face. Everything here is importable without the command-line parts.
"""

from __future__ import annotations

from .errors import ExitCode, SockscopeError

# `typing` and the model cost more than the rest of `sockscope --version`: both wait for first use.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .inventory import list_sockets
    from .inventory.summary import summarize as summary
    from .model import Endpoint, Family, NetId, Owner, Socket, State, UnixEndpoint
    from .ports.free import free_ports
    from .ports.kill import stop as kill
    from .ports.services import lookup as lookup_services
    from .ports.wait import wait_for
    from .ports.who import who

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
    "free_ports",
    "kill",
    "list_sockets",
    "lookup_services",
    "summary",
    "wait_for",
    "who",
]

# name -> (module, attribute), imported on first use so `import sockscope` (and --version) stay instant
_LAZY = {
    **{name: ("model", name) for name in ("Endpoint", "Family", "NetId", "Owner", "Socket", "State", "UnixEndpoint")},
    "list_sockets": ("inventory", "list_sockets"),
    "summary": ("inventory.summary", "summarize"),
    "who": ("ports.who", "who"),
    "kill": ("ports.kill", "stop"),
    "free_ports": ("ports.free", "free_ports"),
    "wait_for": ("ports.wait", "wait_for"),
    "lookup_services": ("ports.services", "lookup"),
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    raise AttributeError(f"module 'sockscope' has no attribute {name!r}")

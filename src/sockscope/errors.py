"""Typed errors that carry the one line a user reads, and the exit codes of the command."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit status of every `sockscope` command (the contract in ARCHITECTURE.md)."""

    OK = 0
    NOTHING_FOUND = 1
    USAGE = 2
    PERMISSION = 3
    ADDRESS_IN_USE = 4
    RUNTIME = 5
    INTERRUPTED = 130


class SockscopeError(Exception):
    """Base of our errors: `str(error)` is the sentence for the user, `exit_code` the status."""

    exit_code = ExitCode.RUNTIME

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(SockscopeError):
    """The user asked for something that cannot be parsed or does not make sense."""

    exit_code = ExitCode.USAGE


class FilterError(UsageError):
    """A filter expression is wrong; `position` is the index of the offending word (or None)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class PermissionDenied(SockscopeError):
    """The kernel refused for lack of privilege; the message says which privilege helps."""

    exit_code = ExitCode.PERMISSION


class DecodeError(SockscopeError):
    """Data from the kernel (a netlink reply, a /proc file) is truncated or malformed.

    The message names the source (`netlink inet_diag reply`, `/proc/net/tcp line 12`).
    """


class SourceUnavailable(SockscopeError):
    """A source of sockets (a netlink diag module, a /proc file) does not exist on this kernel."""


class NothingFound(SockscopeError):
    """The answer is "nothing": no process on that port, no free port in the range, a wait that timed out."""

    exit_code = ExitCode.NOTHING_FOUND


class AddressInUse(SockscopeError):
    """The address is taken; the message says by whom when that can be known."""

    exit_code = ExitCode.ADDRESS_IN_USE


class ConnectFailed(SockscopeError):
    """Nothing answered: a connection refused, timed out or reset, a unix socket file missing."""

    exit_code = ExitCode.NOTHING_FOUND

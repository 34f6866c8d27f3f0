"""The `sockscope` command: parse arguments, call the library, render, map errors to exit codes.

Kept light on purpose: nothing heavy is imported before a command is chosen, argparse builds
only the chosen command's parser, and the common `ls` flags (`-tlnp`) skip argparse altogether,
so that `sockscope --version` and `sockscope ls -tan | head` start as fast as Python can.
"""

from __future__ import annotations

import errno
import gc
import os
import sys

from .. import __version__
from ..errors import ExitCode, SockscopeError, UsageError
from .environment import Environment

TYPE_CHECKING = False  # importing `typing` would cost a fifth of `sockscope --version`
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import ModuleType
    from typing import NoReturn

# command -> the module of ours that defines it (`add_parser(commands)` and `run(args, env)`).
# Only the chosen command's module is imported, so every command starts as fast as the lightest.
COMMANDS: dict[str, str] = {
    "listening": "overview",
    "ls": "ls",
    "summary": "summary",
    "who": "who",
    "kill": "kill",
    "close": "close",
    "free": "free",
    "wait": "wait",
    "services": "services",
    "serve": "serve",
    "connect": "connect",
    "listen": "listen",
    "scan": "scan",
    "events": "events",
    "top": "top",
    "exporter": "exporter",
    "web": "web",
    "completion": "completion",
    "explain": "explain",
}
RUNS_A_COMMAND = frozenset({"wait"})
# errno values that mean "the output could not be written", whatever the file behind stdout.
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
# Commands that finish in a moment: the cyclic garbage collector is paused for them (their
# tens of thousands of records hold no cycles, and collecting them costs a third of `ls`).
SHORT_LIVED = frozenset({"listening", "ls", "summary", "who", "close", "free", "services", "completion", "explain"})


LONGEST = 1e9  # seconds: about 31 years, and still within what a socket timeout can hold


def seconds(text: str) -> float:
    """Give a number of seconds from an option's text; `nan`, `inf` and more than LONGEST are refused."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -LONGEST <= value <= LONGEST:  # also false for nan
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (at most {LONGEST:.0f})")
    return value


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Give the parser of every command, or of the one command `only` (the others stay unimported)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse, but a usage error is one line on stderr and exit status 2."""

        def error(self, message: str) -> NoReturn:
            raise UsageError(f"{message} (see '{self.prog} --help')")

    parser = Parser(
        prog="sockscope",
        description="See every socket on this host, who owns it, and what is listening.",
        epilog="Without a command: what is listening on this host (`sockscope listening`). "
        "Arguments that start with '-' and no command mean `ls` (`sockscope -tlnp`, `sockscope -s`).",
    )
    parser.add_argument("-V", "--version", action="version", version=f"sockscope {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in [only] if only in COMMANDS else COMMANDS:
        _module(name).add_parser(commands)
    return parser


def _module(command: str) -> ModuleType:
    # __import__ rather than importlib.import_module: the importlib package is not loaded at start-up
    name = f"{__name__}.{COMMANDS[command]}"
    __import__(name)
    return sys.modules[name]


def _normalise(argv: list[str]) -> list[str]:
    if not argv:
        return ["listening"]
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-V", "--version"):
        return ["ls", *argv]
    return argv


def _parse(words: list[str], env: Environment) -> argparse.Namespace:
    """Give the parsed arguments of a command line (`words` start with the command)."""
    after: list[str] = []
    if words[0] in RUNS_A_COMMAND and "--" in words:  # `wait ADDR -- COMMAND ARGS`: the rest is not ours
        cut = words.index("--")
        words, after = words[:cut], words[cut + 1 :]
    completing = "_ARGCOMPLETE" in os.environ
    args = None
    if words[0] == "ls" and not completing:
        from . import ls

        rest, note = ls.lsof_habits(words[1:])
        if note is not None:
            env.note(note)
        words = ["ls", *rest]
        args = ls.quick_options(rest)
    if args is None:
        parser = build_parser(None if completing else words[0])
        if completing:
            import argcomplete

            argcomplete.autocomplete(parser)
        args = parser.parse_args(words)
    args.command_after = after
    return args


def hold_standard_streams() -> None:
    """Put /dev/null, opened for reading only, on a closed stdin, stdout or stderr.

    Otherwise the next socket we open would become descriptor 0, 1 or 2, and the bytes meant for
    the output would go to a peer. Read-only, writing it still fails with EBADF as on the closed
    descriptor: output nobody can receive is an error (as `ls` and `cat` say), never a silent success.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDONLY)
            if opened != fd:  # a lower descriptor was free: ours is not the one the command uses
                os.dup2(opened, fd)
                os.close(opened)
    if sys.stdin is None:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (the process's own stream)
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115


class _Leave:
    from_entry = False  # run as the `sockscope` program, which os._exit()s after short-lived commands
    at_once = False  # set when a short-lived command has written all it had to write
    kept: list[object] = []  # noqa: RUF012 - one per process, by design


def leave_behind(thing: object) -> None:
    """Keep a command's big result alive until the process leaves: freeing 50,000 records one by
    one costs a tenth of `ls -tin`, and os._exit() (see entry) drops them with the process."""
    if _Leave.from_entry:
        _Leave.kept.append(thing)


def entry() -> NoReturn:
    """Run the command line as the `sockscope` program and exit with its status.

    After a short-lived command has flushed its output, the process leaves with os._exit():
    tearing down the interpreter frees every record one by one (20 ms after a 50,000-socket
    listing, a millisecond or two on a small host) for nothing, since no atexit work is ours.
    """
    _Leave.from_entry = True
    status = main()
    if _Leave.at_once:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                status = status or int(ExitCode.RUNTIME)
        os._exit(status)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; give the exit status."""
    hold_standard_streams()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list in (["--version"], ["-V"]):  # the cheapest answer there is
        return _version()
    env = Environment.from_process()
    try:
        args = _parse(_normalise(args_list), env)
        if args.command in SHORT_LIVED:
            gc.disable()
        status = int(_module(args.command).run(args, env))
        env.stdout.flush()  # here, where a failure to write is still ours to report
        _Leave.at_once = args.command in SHORT_LIVED
        return status
    except SockscopeError as error:
        _report(env, error.message)
        return int(error.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # the reader went away (`| head`): not an error, as for other tools
        _silence_stdout()
        return int(ExitCode.OK)
    except OSError as error:  # mostly stdout itself: a full disk (`> /dev/full`), a vanished terminal
        if error.filename is None and error.errno in _WRITE_ERRORS:
            _report(env, f"cannot write the output: {error.strerror}")
        else:
            _report(env, f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""))
        _silence_stdout()
        return int(ExitCode.RUNTIME)
    except Exception as error:  # a bug of ours: still one line, and the traceback on request
        if os.environ.get("SOCKSCOPE_DEBUG"):
            raise
        _report(env, f"internal error {type(error).__name__}: {error} (SOCKSCOPE_DEBUG=1 shows where; please report it)")
        _silence_stdout()
        return int(ExitCode.RUNTIME)
    except SystemExit as done:  # --help and --version from argparse
        return int(done.code or 0) if isinstance(done.code, int) else int(ExitCode.USAGE)


def _version() -> int:
    """Write the version; give the exit status (5 when it cannot be written)."""
    try:
        if sys.stdout is not None:
            sys.stdout.write(f"sockscope {__version__}\n")
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except OSError as error:
        try:
            sys.stderr.write(f"sockscope: cannot write the output: {error.strerror}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            _silence_stdout(2)
        _silence_stdout()
        return ExitCode.RUNTIME
    return ExitCode.OK


def _silence_stdout(fd: int = 1) -> None:
    """Point stdout (or `fd`) at /dev/null, so that what is still buffered cannot fail again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _report(env: Environment, message: str) -> None:
    try:
        env.error(message)
        env.stderr.flush()
    except (OSError, ValueError):
        _silence_stdout(2)  # stderr is gone too: the exit status is all that is left

"""The `sockscope` command: parse arguments, call the library, render, map errors to exit codes.

Kept light on purpose: only argparse is imported before a command is chosen, so that
`sockscope --version` and `sockscope ls -tan | head` start as fast as Python can.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from .. import __version__
from ..errors import ExitCode, SockscopeError, UsageError

if TYPE_CHECKING:
    from .environment import Environment

COMMANDS = ("listening", "ls", "summary", "completion")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """Give the parser of every command (imported lazily by each command's module)."""
    from . import ls, overview, summary

    parser = _Parser(
        prog="sockscope",
        description="See every socket on this host, who owns it, and what is listening.",
        epilog="Without a command: what is listening on this host (`sockscope listening`). "
        "Arguments that start with '-' and no command mean `ls` (`sockscope -tlnp`).",
    )
    parser.add_argument("-V", "--version", action="version", version=f"sockscope {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    overview.add_parser(commands)
    ls.add_parser(commands)
    summary.add_parser(commands)
    completion = commands.add_parser("completion", help="print the shell completion script (bash, zsh, fish)")
    completion.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh"), help="your shell")
    return parser


def _normalise(argv: list[str]) -> list[str]:
    if not argv:
        return ["listening"]
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-V", "--version"):
        return ["ls", *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; give the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list in (["--version"], ["-V"]):  # the cheapest answer there is
        sys.stdout.write(f"sockscope {__version__}\n")
        return ExitCode.OK
    from .environment import Environment

    env = Environment.from_process()
    try:
        parser = build_parser()
        if "_ARGCOMPLETE" in os.environ:
            import argcomplete

            argcomplete.autocomplete(parser)
        args = parser.parse_args(_normalise(args_list))
        return int(_dispatch(args, env))
    except SockscopeError as error:
        env.error(error.message)
        return int(error.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # the reader went away (`| head`): not an error; keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(ExitCode.OK)
    except SystemExit as done:  # --help and --version from argparse
        return int(done.code or 0) if isinstance(done.code, int) else int(ExitCode.USAGE)


def _dispatch(args: argparse.Namespace, env: Environment) -> int:
    if args.command == "ls":
        from . import ls

        return ls.run(args, env)
    if args.command == "summary":
        from . import summary

        return summary.run(args, env)
    if args.command == "completion":
        from argcomplete.shell_integration import shellcode

        env.stdout.write(shellcode(["sockscope"], shell=args.shell))
        return ExitCode.OK
    from . import overview

    return overview.run(args, env)

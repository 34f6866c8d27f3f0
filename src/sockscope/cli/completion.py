"""`sockscope completion SHELL`: print the shell completion script."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ExitCode
from .environment import Environment


def add_parser(commands: Any) -> None:
    """Add `completion` to the command parsers."""
    p = commands.add_parser("completion", help="print the shell completion script (bash, zsh, fish)")
    p.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh"), help="your shell")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Write the script that makes the shell complete sockscope's commands and flags."""
    from argcomplete.shell_integration import shellcode

    env.stdout.write(shellcode(["sockscope"], shell=args.shell))
    return ExitCode.OK

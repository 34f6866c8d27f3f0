"""Where a command writes and how it should look: streams, terminal or pipe, colour."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # `typing` itself costs a fifth of `sockscope --version`
if TYPE_CHECKING:
    from typing import IO


class Environment:
    """The streams a command writes to, and whether stdout is a terminal that wants colour.

    Tests build one explicitly around StringIO streams.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str], is_tty: bool = False, color: bool = False, width: int = 100) -> None:
        self.stdout, self.stderr, self.is_tty, self.color, self.width = stdout, stderr, is_tty, color, width

    @classmethod
    def from_process(cls) -> Environment:
        """Give the Environment of this process, honouring NO_COLOR, FORCE_COLOR and TERM=dumb."""
        stdout, stderr = sys.stdout, sys.stderr  # never None: cli.hold_standard_streams() ran first
        is_tty = stdout.isatty()
        color = is_tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        if os.environ.get("FORCE_COLOR"):
            color = True
        try:
            width = os.get_terminal_size(stdout.fileno()).columns if is_tty else 100
        except OSError:
            width = 100
        return cls(stdout, stderr, is_tty, color, width)

    def ask(self, question: str) -> bool:
        """Give the answer to a yes/no question asked on the terminal; no terminal (or no answer) means no."""
        try:
            # Raw bytes, unbuffered: a text stream opened "r+" on a terminal fails (it is not
            # seekable), and a buffered reader could swallow keystrokes meant for the next program.
            with open("/dev/tty", "rb+", buffering=0) as tty:
                tty.write(f"{question} [y/N] ".encode(errors="replace"))
                answer = tty.readline(256)
        except OSError:
            return False
        return answer.decode(errors="replace").strip().lower() in ("y", "yes")

    def interactive(self) -> bool:
        """Tell whether a person is at a terminal to answer questions."""
        return self.is_tty and sys.stdin.isatty()

    def error(self, message: str) -> None:
        """Write one line `sockscope: message` on stderr."""
        self.stderr.write(f"sockscope: {message}\n")

    def note(self, message: str) -> None:
        """Write one line of advice on stderr (`sockscope: note: ...`)."""
        self.stderr.write(f"sockscope: note: {message}\n")

"""Odd option values for serve, connect and listen: a usage error (exit 2) in one line, never a traceback."""

from __future__ import annotations

import pytest

from conftest import sockscope
from serving import port


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--request-timeout", "nan"],
        ["serve", "--idle-timeout", "nan"],
        ["serve", "--grace", "nan"],
        ["serve", "--grace", "inf"],
        ["connect", "-w", "nan", "127.0.0.1", "9"],
        ["connect", "-w", "inf", "127.0.0.1", "9"],
        ["connect", "-q", "nan", "127.0.0.1", "9"],
        ["listen", "-w", "nan", "9"],
        ["wait", "-t", "nan", "127.0.0.1:9"],
        ["scan", "--timeout", "nan", "127.0.0.1", "-p", "9"],
    ],
)
def test_a_number_of_seconds_that_is_not_one_is_a_usage_error(args: list[str]) -> None:
    if args[0] == "serve":
        args = [*args, f"127.0.0.1:{port()}"]
    result = sockscope(*args)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "seconds" in result.stderr


def test_more_workers_than_descriptors_is_one_line_not_a_traceback() -> None:
    result = sockscope("serve", "--workers", "99999", f"127.0.0.1:{port()}")
    assert "Traceback" not in result.stderr
    assert result.returncode in (2, 5), result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["serve", "connect", "listen"])
def test_a_unix_path_too_long_for_the_kernel_is_a_usage_error_naming_the_limit(command: str) -> None:
    result = sockscope(command, "unix:/tmp/" + "a" * 200)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert "107" in result.stderr and "None" not in result.stderr

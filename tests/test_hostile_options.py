"""Odd option values for serve, connect and listen: a usage error (exit 2) in one line, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import needs_root, sockscope
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


@needs_root
def test_a_unix_path_in_a_directory_the_user_cannot_search_is_a_permission_error(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    tmp_path.chmod(0o755)
    result = sockscope("serve", f"unix:{private}/s.sock", user="65534")
    assert "Traceback" not in result.stderr
    assert result.returncode == 3, result.stderr
    assert "permission denied" in result.stderr.lower()


def test_http_mode_without_its_parser_installed_says_so_before_listening(tmp_path: Path) -> None:
    # a python that cannot import httptools (another interpreter, or a user who cannot read site-packages)
    (tmp_path / "httptools.py").write_text("raise ImportError('not installed here')\n")
    result = sockscope("serve", "-m", "http", f"127.0.0.1:{port()}", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert "Traceback" not in result.stderr
    assert result.returncode == 5, result.stderr
    assert "httptools" in result.stderr and "listening" not in result.stdout


@pytest.mark.parametrize("ca_file", ["/etc/passwd", "/nonexistent/ca.pem"])
def test_a_ca_file_that_holds_no_certificate_is_a_usage_error(ca_file: str) -> None:
    result = sockscope("connect", "--tls", "--ca-file", ca_file, "127.0.0.1", "9")
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert ca_file in result.stderr


def test_an_encrypted_tls_key_is_a_clear_error_without_a_prompt(tmp_path: Path) -> None:
    key, cert = tmp_path / "enc.key", tmp_path / "enc.pem"
    subprocess.run(["openssl", "genrsa", "-aes128", "-passout", "pass:secret", "-out", str(key), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-key", str(key), "-passin", "pass:secret", "-out", str(cert), "-days", "1", "-subj", "/CN=x"],
        check=True,
        capture_output=True,
    )
    result = sockscope("serve", "--tls", str(cert), str(key), f"127.0.0.1:{port()}")
    assert "PEM pass phrase" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert "passphrase" in result.stderr and result.stderr.count("\n") == 1


def _in_a_removed_directory(tmp_path: Path) -> Callable[[], None]:
    gone = tmp_path / "gone"
    gone.mkdir()

    def leave() -> None:
        os.chdir(gone)
        os.rmdir(gone)

    return leave


def test_http_from_a_directory_that_was_removed_asks_for_root(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sockscope", "serve", "-m", "http", f"127.0.0.1:{port()}"],
        preexec_fn=_in_a_removed_directory(tmp_path),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 2 and "--root" in done.stderr, done.stderr


def test_echo_from_a_directory_that_was_removed_serves(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sockscope", "serve", "-m", "echo", f"127.0.0.1:{port()}"],
        preexec_fn=_in_a_removed_directory(tmp_path),  # noqa: PLW1509 (chdir and rmdir only, in the child)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert "Traceback" not in err
    assert process.returncode == 0 and "listening" in out, err

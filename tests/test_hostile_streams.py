"""Standard streams a hostile caller hands over: closed, full, never read."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from serving import port


def _sockscope(*args: str, **options: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sockscope", *args], **options)  # type: ignore[call-overload,no-any-return]


def _answers(number: int, sent: bytes) -> bytes:
    end = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", number), timeout=5) as client:
                client.sendall(sent)
                client.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := client.recv(4096):
                    got += chunk
                return got
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_serve_with_stdout_closed_still_serves_and_stops_with_0() -> None:
    number = port()
    # `serve >&-`: descriptor 1 closed
    process = _sockscope("serve", "-m", "echo", f"127.0.0.1:{number}", stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    try:
        assert _answers(number, b"still here\n") == b"still here\n"
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=10)
    assert b"Traceback" not in err, err.decode()
    assert process.returncode == 0


def test_ls_into_a_full_disk_is_one_line_and_not_0() -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "sockscope", "ls", "-tan"], check=False, stdout=full, stderr=subprocess.PIPE, timeout=30)
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 5
    assert done.stderr.decode().count("\n") == 1
    assert "No space left" in done.stderr.decode()


def test_ls_with_stdout_closed_is_one_line_and_not_0() -> None:
    done = subprocess.run([sys.executable, "-m", "sockscope", "ls", "-tan"], check=False, stderr=subprocess.PIPE, timeout=30, preexec_fn=lambda: os.close(1))
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 5
    assert "Bad file descriptor" in done.stderr.decode()


def test_connect_with_stdout_closed_does_not_call_lost_data_a_success() -> None:
    number = port()
    with socket.create_server(("127.0.0.1", number)) as server:
        process = _sockscope("connect", "127.0.0.1", str(number), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
        peer, _ = server.accept()
        with peer:
            peer.sendall(b"nobody will see this\n")
            peer.shutdown(socket.SHUT_WR)
            _out, err = process.communicate(timeout=10)
    assert b"Traceback" not in err, err.decode()
    assert process.returncode == 5


def test_listen_verbose_shows_a_peer_path_with_escapes_escaped(tmp_path: object) -> None:
    directory = os.fsencode(str(tmp_path))
    path = os.path.join(directory, b"l.sock")
    process = _sockscope("listen", "-v", "unix:" + os.fsdecode(path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < end:
            time.sleep(0.02)
        with socket.socket(socket.AF_UNIX) as client:
            client.bind(os.path.join(directory, b"c\x1b]0;pwned\x07\xff"))
            client.connect(path)
            client.sendall(b"x")
        _out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert b"\x1b" not in err and b"\x07" not in err, err
    assert b"c\\x1b]0;pwned\\x07\\xff" in err

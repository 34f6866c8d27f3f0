"""No traceback anywhere: full disks, closed pipes, strict terminals, odd names and odd ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import have, sockscope
from sockscope.errors import ExitCode


def run_into(args: list[str], stdout: int | str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sockscope", *args]
    if isinstance(stdout, str):
        with open(stdout, "w") as target:
            return subprocess.run(command, stdout=target, stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    return subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, check=False)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["ls", "-a"], ["ls", "-a", "--json"], ["summary"], ["services", "1-1000"], ["who", "1", "--json"], ["-tlnp"]])
def test_a_full_disk_is_one_line_and_exit_5(args: list[str]) -> None:
    result = run_into(args, "/dev/full")
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert result.returncode == ExitCode.RUNTIME  # `who 1` would be 1 (free), but its answer was lost
    assert result.stderr == "sockscope: cannot write the output: No space left on device\n"


@pytest.mark.parametrize("args", [["ls", "-a"], ["ls", "-a", "--jsonl"], ["summary"], ["services", "1-65535"]])
def test_a_reader_that_leaves_early_is_quiet(args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sockscope", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)  # like `| head -c 1`: take one byte, then go away
    proc.stdout.close()
    assert proc.wait(30) == ExitCode.OK
    assert proc.stderr.read() == b""
    proc.stderr.close()


@pytest.mark.parametrize("args", [["--version"], ["-tlnp"], ["who", "1"], ["who", "abc"], ["summary", "--json"]])
@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-"])
def test_streams_closed_before_start(args: list[str], closed: str) -> None:
    command = f"{sys.executable} -m sockscope {' '.join(args)} {closed}; echo status=$? >&3"
    result = subprocess.run(["bash", "-c", f"exec 3>&1; {command}"], capture_output=True, text=True, timeout=60, check=False)
    if ">&-" in closed.split():  # output nobody can receive is an error, as `ls` and `cat` say
        expected = {"who abc": 2}.get(" ".join(args), 5)
    else:
        expected = {"who 1": 1, "who abc": 2}.get(" ".join(args), 0)
    assert f"status={expected}" in result.stdout and "Traceback" not in result.stderr + result.stdout


@pytest.mark.skipif(not have("head"), reason="needs head (coreutils)")
def test_head_through_a_shell_pipe() -> None:
    script = f"{sys.executable} -m sockscope ls -a | head -1; echo status=${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.stderr == "" and "status=0" in result.stdout


@pytest.mark.skipif(not have("socat"), reason="needs socat")
def test_who_a_unix_path_that_is_not_utf8_on_a_strict_stdout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = os.fsencode(tmp_path) + b"/odd\xff\x1b.sock"
    server = subprocess.Popen([b"socat", b"UNIX-LISTEN:" + path + b",fork", b"STDOUT"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(path):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        strict = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
        query = os.fsdecode(path)
        text = subprocess.run([sys.executable, "-m", "sockscope", "who", query], capture_output=True, env=strict, timeout=60, check=False)
        assert text.returncode == ExitCode.OK, text.stderr
        assert b"Traceback" not in text.stderr
        first = text.stdout.decode("utf-8").splitlines()[0]
        assert first == f"{os.fsdecode(tmp_path)}/odd\\xff\\x1b.sock: held by 1 process"
        assert f"pid {server.pid}  socat" in text.stdout.decode("utf-8")
        raw = subprocess.run([sys.executable, "-m", "sockscope", "who", "--json", query], capture_output=True, env=strict, timeout=60, check=False)
        assert raw.returncode == ExitCode.OK, raw.stderr
        answer = json.loads(raw.stdout.decode("utf-8"))
        assert answer["query"] == f"{os.fsdecode(tmp_path)}/odd\\xff\x1b.sock"
        assert [p["pid"] for p in answer["processes"]] == [server.pid]
    finally:
        server.kill()
        server.wait(10)


ODD_PORTS = ["0", "70000", "abc", "-1", "8080/xyz", "99999999999999999999", "8080/", ":"]


@pytest.mark.parametrize("port", ODD_PORTS)
@pytest.mark.parametrize("command", ["who", "kill", "services", "wait", "free"])
def test_odd_ports_are_one_line_and_exit_2(command: str, port: str) -> None:
    args = {
        "who": ["who", "--", port],
        "kill": ["kill", "--yes", "--", port],
        "services": ["services", "--", port],
        "wait": ["wait", "-t", "0.1", "--", f"127.0.0.1:{port}"],
        "free": ["free", f"--range={port}"],
    }[command]
    result = sockscope(*args)
    if command == "services" and port == "abc":  # a service name that does not exist: "nothing found"
        assert result.returncode == ExitCode.NOTHING_FOUND
        return
    assert result.returncode == ExitCode.USAGE, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("port", ["0", "70000", "abc", "-1"])
def test_odd_ports_in_filters_are_one_line_and_exit_2(port: str) -> None:
    for command in (["ls", "-t"], ["close", "--yes"], ["ls", "-tK", "--yes"]):
        result = sockscope(*command, "dport", "=", f":{port}")
        if port == "0" and command == ["ls", "-t"]:
            assert result.returncode == ExitCode.OK  # port 0 is a port a socket can show (unbound)
            continue
        if port == "0":
            assert result.returncode in (ExitCode.NOTHING_FOUND, ExitCode.PERMISSION)
            continue
        assert result.returncode == ExitCode.USAGE, (command, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args", [["kill", "1", "--yes", "-t", "inf"], ["kill", "1", "--yes", "-t", "nan"], ["wait", ":1", "-t", "nan"], ["wait", ":1", "-i", "inf"]]
)
def test_timeouts_that_would_never_end_are_refused(args: list[str]) -> None:
    result = sockscope(*args)
    assert result.returncode == ExitCode.USAGE and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("host", ["\udcff", "a..b", "x" * 300])
def test_wait_for_a_host_that_cannot_be_a_name(host: str) -> None:
    result = sockscope("wait", "-t", "0.2", f"{host}:1")
    assert result.returncode == ExitCode.USAGE and "not a host name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_listener_is_untouched_by_all_that(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        for odd in ("-1", f"{port}/xyz", f"{port}/"):
            assert sockscope("kill", "--yes", "--", odd).returncode == ExitCode.USAGE
        sock.settimeout(0)
        client = socket.create_connection(("127.0.0.1", port))
        client.close()
        sock.accept()[0].close()  # still listening

"""Habits people bring from ss, lsof and fuser: each works, or is one line saying what to type."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from conftest import have, needs_root, sockscope
from sockscope.errors import ExitCode


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


@contextlib.contextmanager
def running(*command: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run a peer tool for the length of a test; end it (by its pid) afterwards."""
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.stdin is not None
        proc.stdin.close()


def wait_bound(port: int, udp: bool = False) -> None:
    """Wait (at most 5 s) until something is bound to a loopback port."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return
        finally:
            probe.close()
        time.sleep(0.05)
    raise AssertionError(f"nothing bound port {port} in 5 s")


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr and "unrecognized arguments" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


# ---------------------------------------------------------------- ss


@pytest.mark.parametrize("args", [["-s"], ["ls", "-s"], ["-ts"]])
def test_dash_s_is_the_summary(args: list[str], listener: socket.socket) -> None:
    result = sockscope(*args)
    assert result.returncode == ExitCode.OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Total: ") and lines[1].startswith("TCP: ")
    assert int(lines[0].split()[1]) >= 1


def test_dash_s_json_is_the_summary_json(listener: socket.socket) -> None:
    data = json.loads(sockscope("-s", "--json").stdout)
    assert data["by_netid"]["tcp"] >= 1


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["-E"], "-E/--events"),
        (["-Z"], "-Z/--context"),
        (["-z"], "-z/--contexts"),
        (["-b"], "-b/--bpf"),
        (["-tlnpE"], "-E/--events"),
        (["-tnT"], "-T/--threads"),
        (["-t", "--tos"], "--tos"),
        (["ls", "--tipc"], "--tipc"),
        (["ls", "--xdp"], "--xdp"),
        (["-D", "/tmp/never-written"], "-D/--diag"),
    ],
)
def test_ss_flags_not_there_yet_are_one_line_naming_the_flag(args: list[str], flag: str) -> None:
    result = sockscope(*args)
    assert result.returncode == ExitCode.USAGE
    assert flag in one_line(result) and "not in sockscope yet" in result.stderr
    assert not os.path.exists("/tmp/never-written")


@pytest.mark.parametrize("bundle", ["-tlnp", "-tulpn", "-ltnpe", "-tlnpO"])
def test_ss_bundles_keep_working(bundle: str, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    result = sockscope(bundle)
    assert result.returncode == ExitCode.OK, result.stderr
    mine = [line for line in result.stdout.splitlines() if f"127.0.0.1:{port} " in line]
    assert len(mine) == 1 and f"pid={os.getpid()}," in mine[0]


def test_xa_lists_unix_sockets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "habit.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        result = sockscope("-xa")
    assert result.returncode == ExitCode.OK and path in result.stdout


def test_family_and_net_flags_of_ss(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert f"127.0.0.1:{port}" in sockscope("-tln", "-f", "inet").stdout
    assert f"127.0.0.1:{port}" not in sockscope("-tln", "-f", "inet6").stdout
    bad = sockscope("-f", "tipc")
    assert bad.returncode == ExitCode.USAGE and "unknown family" in one_line(bad)
    assert sockscope("-N", "no-such-namespace-here").stderr == sockscope("--netns", "no-such-namespace-here").stderr


def test_filter_from_a_file_as_ss_reads_it(tmp_path, listener: socket.socket) -> None:  # type: ignore[no-untyped-def]
    port = listener.getsockname()[1]
    (tmp_path / "filter").write_text(f"sport = :{port}\n")
    rows = json.loads(sockscope("-tl", "--json", "-F", str(tmp_path / "filter")).stdout)
    assert [row["local"]["port"] for row in rows] == [port]
    missing = sockscope("-F", str(tmp_path / "none"))
    assert missing.returncode == ExitCode.USAGE and "No such file" in one_line(missing)


def test_quick_parse_gives_what_argparse_gives() -> None:
    from sockscope.cli import build_parser
    from sockscope.cli.ls import quick_options

    parser = build_parser("ls")
    for words in (
        [],
        ["-tlnp"],
        ["-tulpn", "sport", "=", ":22"],
        ["-a", "-x", "--json"],
        ["state", "listening", "-t"],
        ["-tan", "--csv", "-H"],
        ["-0", "-M", "-e", "--numeric", "--processes"],
        ["-46w", "--jsonl", "-"],
    ):
        quick = quick_options(words)
        assert quick is not None, words
        assert vars(quick) == vars(parser.parse_args(["ls", *words])), words
    for words in (["-tlK"], ["--json", "--csv"], ["-t", "sport", "-l", "= :22"], ["-A", "tcp"], ["-1"], ["--"]):
        assert quick_options(words) is None, words


@needs_root
@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_dash_K_closes_only_with_yes_under_the_close_rules() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with running("nc", "-l", "127.0.0.1", str(port)) as nc:
        wait_bound(port)
        client = socket.create_connection(("127.0.0.1", port))
        with client:
            # both ends named, so that no connection of anyone else can match
            mine = f"dport = :{port} and sport = :{client.getsockname()[1]}"
            asked = sockscope("-tK", mine)
            assert asked.returncode == ExitCode.USAGE and "--yes" in one_line(asked)
            assert f"127.0.0.1:{port}" in asked.stdout
            everything = sockscope("-tK", "state", "established")  # without --yes: safe even if the rule broke
            assert everything.returncode == ExitCode.USAGE and "state alone" in one_line(everything)
            unix = sockscope("-xK", "--yes", "src", "/x")
            assert unix.returncode == ExitCode.USAGE and "TCP and UDP" in one_line(unix)
            client.settimeout(0)
            with pytest.raises(BlockingIOError):
                client.recv(1)  # still connected after the refusals
            closed = sockscope("-tK", "--yes", mine)
            if "CONFIG_INET_DIAG_DESTROY" in closed.stderr:
                pytest.skip("this kernel cannot close sockets")
            assert closed.returncode == ExitCode.OK and "closed 1" in closed.stdout
            with pytest.raises(ConnectionAbortedError):
                client.recv(1)
        nc.wait(5)  # the peer saw the reset and ended


# ---------------------------------------------------------------- lsof and fuser


def test_dash_p_pid_lists_that_process_sockets(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    result = sockscope("-p", str(os.getpid()))
    assert result.returncode == ExitCode.OK, result.stderr
    assert f"pid={os.getpid()}" in one_line(result)  # the note says how it was read
    assert f"127.0.0.1:{port}" in result.stdout  # listening too, as lsof shows it
    assert all(f"pid={os.getpid()}," in line for line in result.stdout.splitlines()[1:])
    several = sockscope("-p", f"{os.getpid()},{os.getppid()}")
    assert several.returncode == ExitCode.OK and f"127.0.0.1:{port}" in several.stdout
    assert f"pid={os.getpid()} or pid={os.getppid()}" in one_line(several)
    still_ss = sockscope("-tlnp")
    assert still_ss.returncode == ExitCode.OK and still_ss.stderr == "" and f"127.0.0.1:{port}" in still_ss.stdout


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [(["-i", ":8080"], "sockscope who 8080"), (["-iTCP:8080"], "sockscope who 8080"), (["-i", "UDP:53"], "sockscope who 53/udp")],
)
def test_lsof_dash_i_points_to_who(args: list[str], suggestion: str) -> None:
    result = sockscope(*args)
    assert result.returncode == ExitCode.USAGE and suggestion in one_line(result)


def test_who_takes_fuser_port_slash_protocol(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    held = sockscope("who", f"{port}/tcp")
    assert held.returncode == ExitCode.OK and held.stdout.startswith(f"{port}/tcp: held by 1 process")
    free = sockscope("who", f"{port}/udp")
    assert free.returncode == ExitCode.NOTHING_FOUND and free.stdout == f"{port}/udp: free\n"


@pytest.mark.skipif(not have("nc"), reason="needs nc (netcat-openbsd)")
def test_who_and_kill_a_udp_port_written_as_fuser_does() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with running("nc", "-u", "-l", "127.0.0.1", str(port)) as nc:
        wait_bound(port, udp=True)
        result = sockscope("who", f"{port}/udp", "--json")
        assert result.returncode == ExitCode.OK, result.stderr
        assert [p["pid"] for p in json.loads(result.stdout)["processes"]] == [nc.pid]
        tcp = sockscope("kill", f"{port}/tcp", "--yes")
        assert tcp.returncode == ExitCode.NOTHING_FOUND and nc.poll() is None
        killed = sockscope("kill", f"{port}/udp", "--yes")
        assert killed.returncode == ExitCode.OK and f"port {port}/udp is free" in killed.stdout
        assert nc.wait(5) == -signal.SIGTERM


def test_quick_path_leaves_argparse_unimported() -> None:
    script = "import sys; sys.argv = ['sockscope', '-tln']; from sockscope.cli import main; main(); print('argparse' in sys.modules, file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert result.stderr.strip() == "False"


def test_small_listing_with_processes_loads_no_heavy_module() -> None:
    # typing, socket.py, threading and queue were a third of `sockscope -tlnp` on a small host
    heavy = ["argparse", "typing", "socket", "threading", "queue", "importlib", "json"]
    script = "import sys; sys.argv = ['sockscope', '-tlnp']; from sockscope.cli import main; main()"
    script += f"; print(sorted(set({heavy!r}) & set(sys.modules)), file=sys.stderr)"
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # -S: no site, as in a bare venv
    )
    assert result.stderr.strip() == "[]"
    assert "LISTEN" in result.stdout or result.stdout.startswith("State")


def test_records_made_at_run_time_behave_as_typed_named_tuples() -> None:
    from sockscope.model import Endpoint, Socket
    from sockscope.records import NamedTuple

    class Pair(NamedTuple):
        """Two numbers."""

        left: int
        right: int = 2

        def total(self) -> int:
            return self.left + self.right

    assert Pair(1).total() == 3 and Pair(1, 5) == (1, 5) and Pair.__doc__ == "Two numbers."
    assert Pair._fields == ("left", "right") and Pair(1)._replace(left=4) == Pair(4, 2)
    assert Socket._field_defaults["owners"] is None and Endpoint("::1", 80).port == 80
    with pytest.raises(TypeError):

        class Wrong(NamedTuple):
            first: int = 1
            second: int

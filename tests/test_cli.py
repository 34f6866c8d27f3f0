"""The command as a user meets it: overview, ls flags and formats, errors and exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid

import pytest

from conftest import IS_ROOT, have, needs_root, sockscope
from sockscope.errors import ExitCode


@pytest.fixture
def listener():  # type: ignore[no-untyped-def]
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_version_and_help_on_every_command():
    assert sockscope("--version").stdout.startswith("sockscope ")
    for command in ("ls", "summary", "listening", "completion"):
        result = sockscope(command, "--help")
        assert result.returncode == 0 and "usage: sockscope " + command in result.stdout


def test_overview_shows_our_listener_with_its_process(listener):  # type: ignore[no-untyped-def]
    port = listener.getsockname()[1]
    result = sockscope()
    assert result.returncode == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0][:3] == ["Proto", "Address", "Port"]
    mine = [row for row in rows if row[:3] == ["tcp", "127.0.0.1", str(port)]]
    assert mine and str(os.getpid()) in mine[0]


def test_ls_json_follows_the_contract(listener):  # type: ignore[no-untyped-def]
    port = listener.getsockname()[1]
    result = sockscope("ls", "-tlp", "--json", f"sport = :{port}")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert set(row) == {"netid", "family", "state", "recv_q", "send_q", "local", "peer", "inode", "uid", "netns", "owners", "service"}
    assert (row["netid"], row["family"], row["state"], row["local"]) == ("tcp", "inet", "LISTEN", {"address": "127.0.0.1", "port": port})
    assert row["inode"] == os.fstat(listener.fileno()).st_ino
    assert [o["pid"] for o in row["owners"]] == [os.getpid()]
    assert row["owners"][0]["fd"] == listener.fileno()


def test_jsonl_and_csv_have_the_same_sockets(listener):  # type: ignore[no-untyped-def]
    port = listener.getsockname()[1]
    lines = sockscope("ls", "-tln", "--jsonl", f":{port}").stdout.splitlines()
    csv = sockscope("ls", "-tln", "--csv", f":{port}").stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["local"]["port"] == port
    assert csv[0].startswith("netid,family,state") and f",{port}," in csv[1]


def test_table_without_owners_does_not_show_process_column(listener):  # type: ignore[no-untyped-def]
    port = listener.getsockname()[1]
    out = sockscope("-tln", f"sport = {port}").stdout.splitlines()
    assert out[0].split()[:2] == ["State", "Recv-Q"] and "Process" not in out[0]
    assert f"127.0.0.1:{port}" in out[1]


def test_bad_filter_is_one_line_and_exit_2():
    result = sockscope("ls", "sport", "=", "nonsense-service")
    assert result.returncode == ExitCode.USAGE
    assert result.stderr.count("\n") == 1 and "'nonsense-service'" in result.stderr


@pytest.mark.parametrize("args", [["ls", "--bogus"], ["ls", "-A", "tcpx"], ["ls", "--source", "x"], ["summary", "--top", "-1"], ["nosuch"]])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str]) -> None:
    result = sockscope(*args)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_summary_counts_our_listener(listener):  # type: ignore[no-untyped-def]
    result = sockscope("summary", "--json")
    data = json.loads(result.stdout)
    assert data["by_netid"]["tcp"] >= 1 and data["total"] >= data["by_netid"]["tcp"]
    assert any(p["pid"] == os.getpid() for p in data["processes"]) or data["processes"]


def test_proc_source_from_fixture_tree(tmp_path):  # type: ignore[no-untyped-def]
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures", "proc")
    result = sockscope("ls", "-tan", "--source", "proc", "--json", env={"SOCKSCOPE_PROC": fixtures})
    assert result.returncode == 0, result.stderr
    assert any(row["state"] == "LISTEN" for row in json.loads(result.stdout))


def test_pipe_closed_early_is_not_an_error():
    ls = subprocess.Popen([sys.executable, "-m", "sockscope", "ls", "-a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert ls.stdout is not None and ls.stderr is not None
    ls.stdout.readline()
    ls.stdout.close()
    assert ls.wait(30) == 0
    assert b"Traceback" not in ls.stderr.read()
    ls.stderr.close()


@needs_root
@pytest.mark.skipif(not have("setpriv"), reason="needs setpriv (util-linux)")
def test_unprivileged_user_sees_own_sockets_and_is_told_why_others_lack_owners(listener):  # type: ignore[no-untyped-def]
    result = sockscope("ls", "-tlp", user="65534", env={"PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    port = listener.getsockname()[1]
    assert f"127.0.0.1:{port}" in result.stdout  # the socket is listed, its owner (root) is not
    assert result.stderr.count("note:") == 1 and "root" in result.stderr


@needs_root
@pytest.mark.skipif(not have("ip"), reason="needs ip (iproute2)")
def test_netns_lists_sockets_of_another_namespace():
    name = f"sockscope-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        script = "import socket,sys; s=socket.create_server(('127.0.0.1', 4242)); print('up', flush=True); sys.stdin.read()"
        command = ["ip", "netns", "exec", name, sys.executable, "-c", script]
        inside = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert inside.stdout is not None and inside.stdin is not None
        assert inside.stdout.readline().strip() == "up"
        ours = sockscope("ls", "-tln", "--json", "sport = 4242")
        assert json.loads(ours.stdout) == [] or all(row["netns"] is None for row in json.loads(ours.stdout))
        theirs = json.loads(sockscope("ls", "-tlnp", "--json", "--netns", name, "sport = 4242").stdout)
        assert [(row["netns"], row["local"]["port"]) for row in theirs] == [(name, 4242)]
        assert theirs[0]["owners"][0]["pid"] == inside.pid or theirs[0]["owners"][0]["name"].startswith("python")
        every = json.loads(sockscope("ls", "-tln", "--json", "--netns", "all", "sport = 4242").stdout)
        assert name in {row["netns"] for row in every}
        inside.stdin.close()
        inside.wait(10)
        inside.stdout.close()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_netns_unknown_name_is_a_usage_error():
    result = sockscope("ls", "--netns", "no-such-namespace-here")
    assert result.returncode == ExitCode.USAGE and "no network namespace" in result.stderr


@pytest.mark.skipif(IS_ROOT, reason="checks the message an unprivileged user gets")
def test_netns_without_privilege_says_so():  # pragma: no cover - runs only as non-root
    result = sockscope("ls", "--netns", "all")
    assert result.returncode in (ExitCode.PERMISSION, ExitCode.OK)

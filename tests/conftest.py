from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces, other users' processes)")


def chunks(name: str) -> list[bytes]:
    """The recorded reply chunks of one netlink dump, in order."""
    paths = sorted(glob.glob(os.path.join(FIXTURES, "netlink", f"{name}.*.bin")), key=lambda p: int(p.rsplit(".", 2)[1]))
    out = []
    for path in paths:
        with open(path, "rb") as handle:
            out.append(handle.read())
    return out


@pytest.fixture(scope="session")
def expected() -> dict[str, list[object]]:
    with open(os.path.join(FIXTURES, "expected.json")) as handle:
        data: dict[str, list[object]] = json.load(handle)
    return data


def sockscope(*args: str, env: dict[str, str] | None = None, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed command the way a user would."""
    command = [sys.executable, "-m", "sockscope", *args]
    full_env = dict(os.environ, **(env or {}))
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
        # another user may read neither root's site-packages nor a checkout in a private directory
        # (mktemp -d): it runs a world-readable copy of the package, then whatever else is on the path
        found = full_env.get("PYTHONPATH") or os.pathsep.join(sys.path)
        full_env["PYTHONPATH"] = os.pathsep.join([_readable_package(), found])
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=60, check=False)


_COPIES: list[str] = []


def _readable_package() -> str:
    """Give a directory any user can read holding a copy of the package under test (made once)."""
    if not _COPIES:
        import atexit
        import tempfile

        import sockscope as package

        where = tempfile.mkdtemp(prefix="sockscope-any-user-")
        os.chmod(where, 0o755)
        shutil.copytree(os.path.dirname(package.__file__), os.path.join(where, "sockscope"), ignore=shutil.ignore_patterns("__pycache__"))
        for folder, dirs, files in os.walk(where):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644 if not name.endswith(".so") else 0o755)
        atexit.register(shutil.rmtree, where, True)
        _COPIES.append(where)
    return _COPIES[0]


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def sockscope_bytes(*args: str, data: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run the command with `data` on standard input; stdout and stderr as bytes."""
    return subprocess.run([sys.executable, "-m", "sockscope", *args], input=data, capture_output=True, timeout=timeout, check=False)


def nmap_states(kind: str, address: str, spec: str) -> dict[int, str]:
    """nmap's state for each port it lists (its grepable output), e.g. nmap_states("-sS", "::1", "22,80")."""
    flags = ["-6"] if ":" in address else []
    out = subprocess.run(["nmap", kind, *flags, "-n", "-Pn", "-p", spec, address, "-oG", "-"], capture_output=True, text=True, check=True).stdout
    states: dict[int, str] = {}
    for line in out.splitlines():
        if "Ports:" in line:
            for item in line.split("Ports:")[1].split("Ignored")[0].split(","):
                fields = item.strip().split("/")
                states[int(fields[0])] = fields[1]
    return states


def free_port() -> int:
    """Give a TCP port of 127.0.0.1 that nothing was bound to a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(proc: subprocess.Popen[Any]) -> None:
    """End a process a test started: SIGTERM, then SIGKILL if it is still there after 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

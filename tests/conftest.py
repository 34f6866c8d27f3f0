from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

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
        # another user cannot read root's site-packages, where the editable install points to the source
        full_env.setdefault("PYTHONPATH", os.pathsep.join(sys.path))
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=60, check=False)


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

"""Start-up on a small host: sockscope against ss and the bare interpreter, side by side in one run.

    sudo python bench/startup.py [--runs 40] [--sockets 30]

A fresh network namespace with about SOCKETS sockets (listeners, connected pairs, UDP) stands
for the small host most machines are; hyperfine times every command inside it, interleaved,
and the ratios are printed against the goals, three ways: this interpreter as installed (with
whatever .pth start-up hooks its site-packages hold), the same interpreter in a bare venv (site
without those hooks: what a usual host runs), and with -S (no site at all: the strict bound).
In the venv, `sockscope` is the console script pip writes, run from the same sources. The /proc/<pid>/fd scan behind -p still sees
every process of the machine (namespaces do not hide them), so the process count is printed too.
Needs root (ip netns), ip and hyperfine; the namespace is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid

from ls import PY, SOCKSCOPE, compile_bytecode, medians

# Run inside the namespace: hold the sockets until standard input closes.
HOLDER = """
import socket, sys
count = int(sys.argv[1])
held = []
while len(held) + 4 <= count:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    held += [listener, client, server, udp]
print("ready", flush=True)
sys.stdin.read()
"""


# What pip writes for a console script (its `import re` is part of every start-up).
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from sockscope.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def bare_venv(where: str) -> tuple[str, str]:
    """Give (python, sockscope script) of a venv without packages, running these sources."""
    subprocess.run([PY, "-m", "venv", "--without-pip", where], check=True)
    python = os.path.join(where, "bin", "python")
    script = os.path.join(where, "bin", "sockscope")
    with open(script, "w") as handle:
        handle.write(CONSOLE_SCRIPT.format(python=python))
    os.chmod(script, 0o755)
    return python, script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--sockets", type=int, default=30)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it creates a network namespace")
    compile_bytecode()
    import sockscope

    # the venv sees no site-packages: point it (and everything else timed) at these sources
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(sockscope.__file__)))
    venv = tempfile.TemporaryDirectory(prefix="sockscope-startup-")
    venv_python, venv_script = bare_venv(venv.name)
    name = f"sockscope-startup-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    holder = None
    try:
        inside = ("ip", "netns", "exec", name)
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        holder = subprocess.Popen([*inside, PY, "-c", HOLDER, str(opts.sockets)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "ready":
            sys.exit("the socket holder did not start")
        sockets = len(subprocess.run([*inside, "ss", "-anH"], capture_output=True, text=True, check=True).stdout.splitlines())
        # -S: the same without site-packages' .pth start-up hooks, which some machines run in
        # every interpreter (and which would hide our own start-up behind theirs)
        script = SOCKSCOPE if SOCKSCOPE.endswith("sockscope") else "-m sockscope"
        times = medians(
            {
                "python -c pass": f"{PY} -c pass",
                "sockscope --version": f"{SOCKSCOPE} --version",
                "sockscope -tlnp": f"{SOCKSCOPE} -tlnp",
                "python -c pass [venv]": f"{venv_python} -c pass",
                "sockscope --version [venv]": f"{venv_script} --version",
                "sockscope -tlnp [venv]": f"{venv_script} -tlnp",
                "python -c pass [-S]": f"{PY} -S -c pass",
                "sockscope --version [-S]": f"{PY} -S {script} --version",
                "sockscope -tlnp [-S]": f"{PY} -S {script} -tlnp",
                "ss -tlnp": "ss -tlnp",
            },
            opts.runs,
            inside,
        )
    finally:
        if holder is not None:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(10)
            holder.stdout.close()
        subprocess.run(["ip", "netns", "delete", name], check=False)
        venv.cleanup()
    processes = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    print(f"{PY}; namespace with {sockets} sockets; {processes} processes on the machine; load {' '.join(load)}")
    for label, seconds in times.items():
        print(f"{label:22} {seconds * 1000:7.1f} ms")
    for flag in ("", " [venv]", " [-S]"):
        base = times[f"python -c pass{flag}"]
        print(f"sockscope --version / python -c pass{flag}  {times[f'sockscope --version{flag}'] / base:.2f}  (goal <= 2)")
        print(f"sockscope -tlnp     / python -c pass{flag}  {times[f'sockscope -tlnp{flag}'] / base:.2f}  (goal <= 3)")
    print(f"sockscope -tlnp / ss -tlnp  {times['sockscope -tlnp'] / times['ss -tlnp']:.2f}")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()

"""Start-up on a small host: sockscope against ss and the bare interpreter, side by side in one run.

    sudo python bench/startup.py [--runs 30] [--rounds 3] [--sockets 30] [--baseline /tmp/old/src]

A fresh network namespace with about SOCKETS sockets (listeners, connected pairs, UDP) stands
for the small host most machines are; hyperfine times every command inside it, interleaved,
and the ratios are printed against the goals, three ways: this interpreter as installed (with
whatever .pth start-up hooks its site-packages hold), the same interpreter in a bare venv (site
without those hooks: what a usual host runs), and with -S (no site at all: the strict bound).
In the venv, `sockscope` is the console script pip writes, run from these sources (and, with
--baseline, from another tree beside them, e.g. `git archive OLD src | tar -x -C /tmp/old`). The /proc/<pid>/fd scan behind -p still sees
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


# What pip writes for a console script (its `import re` is part of every start-up); {function}
# is the entry point pyproject.toml names (`entry`; trees from before it was added: `main`).
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from sockscope.cli import {function}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({function}())
"""


def bare_venv(where: str, sources: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Give the python of a venv without packages, and label -> console script running those sources."""
    subprocess.run([PY, "-m", "venv", "--without-pip", where], check=True)
    python = os.path.join(where, "bin", "python")
    scripts = {}
    for label, path in sources.items():
        script = os.path.join(where, "bin", f"sockscope-{label}")
        with open(os.path.join(path, "sockscope", "cli", "__init__.py")) as source:
            function = "entry" if "\ndef entry(" in source.read() else "main"
        text = CONSOLE_SCRIPT.format(python=python, function=function)
        with open(script, "w") as handle:  # the sources go first on the path, as an install would put them
            handle.write(text.replace("import sys\n", f"import sys\nsys.path.insert(0, {path!r})\n", 1))
        os.chmod(script, 0o755)
        scripts[label] = script
    return python, scripts


def lowest_medians(commands: dict[str, str], runs: int, rounds: int, inside: tuple[str, ...]) -> dict[str, float]:
    """Give name -> the lowest of `rounds` hyperfine medians: a shared machine's bursts of load fall
    on one command of one round, rarely on the same command every round."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for label, seconds in medians(commands, runs, inside).items():
            best[label] = min(seconds, best.get(label, seconds))
    return best


def commands_for(venv_python: str, scripts: dict[str, str]) -> dict[str, str]:
    # -S: no site at all, so no site-packages .pth start-up hooks (which some machines run in every
    # interpreter and which hide our own start-up behind theirs); the strict bound
    script = SOCKSCOPE if SOCKSCOPE.endswith("sockscope") else "-m sockscope"
    commands = {
        "python -c pass": f"{PY} -c pass",
        "sockscope --version": f"{SOCKSCOPE} --version",
        "sockscope -tlnp": f"{SOCKSCOPE} -tlnp",
        "python -c pass [venv]": f"{venv_python} -c pass",
        "python -c pass [-S]": f"{PY} -S -c pass",
        "sockscope --version [-S]": f"{PY} -S {script} --version",
        "sockscope -tlnp [-S]": f"{PY} -S {script} -tlnp",
        "ss -tlnp": "ss -tlnp",
    }
    for label, path in scripts.items():
        suffix = "[venv]" if label == "ours" else f"[venv, {label}]"
        commands[f"sockscope --version {suffix}"] = f"{path} --version"
        commands[f"sockscope -tlnp {suffix}"] = f"{path} -tlnp"
    return commands


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=30)
    parser.add_argument("--baseline", metavar="SRC", help="another source tree (its src/) to time side by side, e.g. an older commit")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it creates a network namespace")
    compile_bytecode()
    import compileall

    import sockscope

    sources = {"ours": os.path.dirname(os.path.dirname(os.path.abspath(sockscope.__file__)))}
    os.environ.setdefault("PYTHONPATH", sources["ours"])  # for the -S runs, which skip the installed .pth
    if opts.baseline:
        compileall.compile_dir(opts.baseline, quiet=1)
        sources["baseline"] = os.path.abspath(opts.baseline)
    venv = tempfile.TemporaryDirectory(prefix="sockscope-startup-")
    venv_python, scripts = bare_venv(venv.name, sources)
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
        times = lowest_medians(commands_for(venv_python, scripts), opts.runs, opts.rounds, inside)
    finally:
        if holder is not None:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(10)
            holder.stdout.close()
        subprocess.run(["ip", "netns", "delete", name], check=False)
        venv.cleanup()
    report(times, sockets)


def report(times: dict[str, float], sockets: int) -> None:
    processes = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    print(f"{PY}; namespace with {sockets} sockets; {processes} processes on the machine; load {' '.join(load)}")
    print("lowest median of the rounds:")
    for label, seconds in times.items():
        print(f"  {label:34} {seconds * 1000:7.1f} ms")
    for flag in ("", " [venv]", " [venv, baseline]", " [-S]"):
        if f"sockscope -tlnp{flag}" not in times:
            continue
        base = times[f"python -c pass{flag.replace(', baseline', '')}"]
        print(f"sockscope --version{flag} / python -c pass  {times[f'sockscope --version{flag}'] / base:.2f}  (goal <= 2)")
        print(f"sockscope -tlnp{flag}     / python -c pass  {times[f'sockscope -tlnp{flag}'] / base:.2f}  (goal <= 3)")
    print(f"sockscope -tlnp / ss -tlnp  {times['sockscope -tlnp'] / times['ss -tlnp']:.2f}")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()

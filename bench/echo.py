"""`serve --mode echo` against a bare asyncio Protocol echo server, socat and ncat; and the memory of
10,000 idle connections.

Load comes from bench/echo_load.c (compiled here with the system C compiler), a separate process:
CONNS connections, SIZE-byte messages, closed loop. Each server gets the load in turn, the rounds
interleaved; the medians of round trips per second and their ratios are printed.

    python bench/echo.py [--rounds 5] [--seconds 5] [--conns 100] [--size 1024] [--idle 10000]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from ls import PY, SOCKSCOPE, compile_bytecode

HERE = os.path.dirname(os.path.abspath(__file__))


def build_load(directory: str) -> str:
    binary = os.path.join(directory, "echo_load")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "echo_load.c")], check=True)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not come up")


# the idle round holds 10,000 connections from one address: above the default --max-per-client
LIMITS = ["--max-conns", "20000", "--max-per-client", "20000"]


def servers(port: int) -> dict[str, list[str]]:
    return {
        "sockscope serve --mode echo": [*SOCKSCOPE.split(), "serve", f"127.0.0.1:{port}", "--mode", "echo", *LIMITS],
        "bare asyncio Protocol (same loop)": [PY, os.path.join(HERE, "bare_echo.py"), str(port)],
        "socat fork EXEC:cat": ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=1024", "EXEC:cat"],
        "ncat -lk --exec /bin/cat": ["ncat", "-lk", "127.0.0.1", str(port), "--exec", "/bin/cat", "-m", "1000"],
    }


def start(command: list[str], port: int, cwd: str | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    wait_up(port)
    time.sleep(0.2)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def idle_memory(load: str, name: str, command: list[str], port: int, conns: int) -> float:
    process = start(command, port)
    try:
        time.sleep(0.5)
        before = rss_kib(process.pid)
        holder = subprocess.Popen([load, "--idle", "127.0.0.1", str(port), str(conns), "30"], stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != f"held {conns}":
            raise SystemExit(f"{name}: could not hold {conns} connections")
        # wait until the server holds a descriptor for every connection
        end = time.monotonic() + 20
        while len(os.listdir(f"/proc/{process.pid}/fd")) < conns and time.monotonic() < end:
            time.sleep(0.1)
        held = len(os.listdir(f"/proc/{process.pid}/fd"))
        if held < conns:
            raise SystemExit(f"{name}: holds only {held} descriptors for {conns} connections")
        time.sleep(1.0)
        after = rss_kib(process.pid)
        holder.terminate()
        holder.wait()
    finally:
        stop(process)
    return (after - before) / conns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--idle", type=int, default=10000)
    args = parser.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory() as directory:
        load = build_load(directory)
        port = free_port()
        results: dict[str, list[float]] = {name: [] for name in servers(port)}
        for round_number in range(args.rounds):
            for name, command in servers(port).items():
                process = start(command, port)
                try:
                    load_command = [load, "127.0.0.1", str(port), str(args.conns), str(args.size), str(args.seconds)]
                    out = subprocess.run(load_command, capture_output=True, text=True, check=True)
                finally:
                    stop(process)
                results[name].append(float(out.stdout))
                print(f"round {round_number + 1} {name}: {float(out.stdout):,.0f} round trips/s", file=sys.stderr)
        medians = {name: statistics.median(values) for name, values in results.items()}
        ours = medians["sockscope serve --mode echo"]
        print(f"\n{args.conns} connections, {args.size}-byte messages, closed loop, median of {args.rounds} x {args.seconds:g}s")
        for name, value in medians.items():
            print(f"  {name:<36} {value:>10,.0f} round trips/s   sockscope / this = {ours / value:.2f}")
        if args.idle:
            print(f"\n{args.idle} idle connections, server RSS growth per connection:")
            for name in ("sockscope serve --mode echo", "bare asyncio Protocol (same loop)"):
                per = idle_memory(load, name, servers(port)[name], port, args.idle)
                print(f"  {name:<36} {per:.2f} KiB")


if __name__ == "__main__":
    main()

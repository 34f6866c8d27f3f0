"""`sockscope events` under load: 5,000 short connections a second for 10 s, and at idle.

Load: bench/events_load.c (compiled here), a server that reads IN bytes, writes OUT bytes and
closes, and a client that opens RATE connections a second (connect, send, receive until the
server closes, close). `sockscope events --jsonl -t` runs beside them; afterwards every close
event of the client's connections is checked: one per connection, bytes equal to what the
client sent and received, pid the client's (a guess where the socket was never seen open, as
the event says). Close messages lost must be 0. The load runs twice, as `events` names clients
by default (eBPF, as root) and with --no-bpf, side by side. Then the CPU `events` uses at idle
with a few hundred sockets open. Run by hand, as root (the receive buffer is forced past rmem_max):

    sudo python bench/events.py [--rate 5000] [--seconds 10] [--out 1000] [--in 3000] [--idle-sockets 300]
    sudo python bench/events.py --own-netns      # idle only, in a namespace of its own (a shared host's sockets left out)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))


def build(directory: str) -> str:
    binary = os.path.join(directory, "events_load")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "events_load.c")], check=True)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_events(out_path: str, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    out = open(out_path, "wb")  # noqa: SIM115 (the child writes it until it ends)
    events = subprocess.Popen([PY, "-m", "sockscope", "events", "--jsonl", "-t", *extra], stdout=out, stderr=subprocess.PIPE)
    time.sleep(1.5)  # started, subscribed, first dump and owner scan done
    if events.poll() is not None:
        _out, err = events.communicate()
        raise SystemExit(f"sockscope events did not start: {err.decode(errors='replace').strip()}")
    return events


def stop(events: subprocess.Popen[bytes]) -> tuple[float, str]:
    cpu = cpu_seconds(events.pid)
    events.send_signal(signal.SIGINT)
    _out, err = events.communicate(timeout=30)
    return cpu, err.decode(errors="replace")


def drain(log: str, quiet: float = 2.0, at_most: float = 30.0) -> float:
    """Wait until the log has not grown for `quiet` seconds (at most `at_most`); give how long it took."""
    start = last_change = time.monotonic()
    size = -1
    while time.monotonic() - start < at_most and time.monotonic() - last_change < quiet:
        now = os.path.getsize(log)
        if now != size:
            size, last_change = now, time.monotonic()
        time.sleep(0.2)
    return time.monotonic() - start


def load(binary: str, args: argparse.Namespace, extra: tuple[str, ...] = ()) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        log = os.path.join(directory, "events.jsonl")
        server = subprocess.Popen([binary, "--serve", str(port), str(args.out), str(args.inn), str(args.seconds + 15)], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        server_pid = int(server.stdout.readline().split()[1])
        events = start_events(log, extra)
        before = time.monotonic()
        client = subprocess.run(
            [binary, "127.0.0.1", str(port), str(args.rate), str(args.seconds), str(args.out), str(args.inn), "32"], capture_output=True, text=True, check=True
        )
        took = time.monotonic() - before
        client_pid = int(client.stdout.split()[1])
        done = int(client.stdout.split()[3])
        settled = drain(log)  # the last closes reach the log (a watcher behind the load catches up)
        cpu, err = stop(events)
        server.send_signal(signal.SIGTERM)
        server.wait()
        with open(log, "rb") as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
    closes = [e for e in lines if e["kind"] == "close" and e["peer"].get("port") == port]
    served = [e for e in lines if e["kind"] == "close" and e["local"].get("port") == port and e["direction"] == "in"]
    lost = sum(e["count"] for e in lines if e["kind"] == "lost")
    right_bytes = sum(1 for e in closes if e["tx_bytes"] == args.out and e["rx_bytes"] == args.inn)
    right_pid = sum(1 for e in closes if e["process"] and e["process"]["pid"] == client_pid)
    guessed = sum(1 for e in closes if e["process"] and e["process"]["how"] == "guessed")
    by_kernel = sum(1 for e in closes if e["process"] and e["process"]["how"] == "ebpf")
    server_bytes = sum(1 for e in served if e["tx_bytes"] == args.inn and e["rx_bytes"] == args.out)
    server_pid_ok = sum(1 for e in served if e["process"] and e["process"]["pid"] == server_pid)
    name = " ".join(("load", *extra))
    print(f"{name}: {done} connections in {took:.1f} s ({done / took:.0f}/s), client pid {client_pid}, server pid {server_pid}")
    print(f"  client close events: {len(closes)} of {done}; bytes exact {right_bytes}; pid right {right_pid}", end="")
    print(f" (of which guessed {guessed}, from eBPF {by_kernel})")
    print(f"  server close events: {len(served)}; bytes exact {server_bytes}; pid right {server_pid_ok}")
    share = 100 * cpu / (took + settled + 1.5)
    print(f"  close messages lost: {lost}; events CPU {cpu:.2f} s over the run ({share:.0f}% of a core); the log settled {settled:.1f} s after the load")
    print(f"  events said: {err.strip().splitlines()[-1] if err.strip() else '(nothing)'}")


def idle(args: argparse.Namespace) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    pairs = []
    for _ in range(args.idle_sockets // 2):
        client = socket.create_connection(listener.getsockname())
        accepted, _peer = listener.accept()
        pairs.append((client, accepted))
    with tempfile.TemporaryDirectory() as directory:
        events = start_events(os.path.join(directory, "idle.jsonl"))
        start = cpu_seconds(events.pid)
        time.sleep(args.idle_seconds)
        cpu, _err = stop(events)
    for a, b in pairs:
        a.close()
        b.close()
    listener.close()
    used = cpu - start
    share = 100 * used / args.idle_seconds
    print(f"idle: {2 * len(pairs) + 1} sockets open, events used {used:.2f} s CPU in {args.idle_seconds:.0f} s ({share:.1f}% of a core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=int, default=1000, help="bytes the client sends")
    parser.add_argument("--in", dest="inn", type=int, default=3000, help="bytes the server sends back")
    parser.add_argument("--idle-sockets", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--idle-only", action="store_true", help="only the idle measurement")
    parser.add_argument("--own-netns", action="store_true", help="the idle measurement in a new network namespace (root): other sockets of the host left out")
    args = parser.parse_args()
    if args.own_netns:
        again = f"{PY} {os.path.abspath(__file__)} --idle-only --idle-sockets {args.idle_sockets} --idle-seconds {args.idle_seconds}"
        command = f"ip link set lo up && exec {again}"
        subprocess.run(["unshare", "--net", "sh", "-c", command], check=True)
        return
    if args.idle_only:
        idle(args)
        return
    if not (1 <= args.rate <= 20000 and 0 < args.seconds <= 60):
        parser.error("--rate 1..20000, --seconds up to 60")
    with tempfile.TemporaryDirectory() as directory:
        binary = build(directory)
        load(binary, args)
        load(binary, args, ("--no-bpf",))
    idle(args)


if __name__ == "__main__":
    main()

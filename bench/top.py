"""`sockscope top` against its goals, run by hand as root (needs tmux):

1. at N established loopback sockets (bench/pairs.py), one refresh (dump with tcp_info, owners
   kept up to date incrementally, diff, order, draw the visible lines) against `ss -tinp`;
2. the resident memory of the real `sockscope top` in an 80x24 tmux at those sockets;
3. with the pairs gone, the CPU the real `sockscope top` uses over 30 s at the default refresh.

Usage: python bench/top.py [PAIRS] [CPU_SECONDS]   (default 25000 pairs = 50,000 sockets, 30 s)

It runs itself in a new network namespace (unshare), so that the sockets of whatever else runs
on the host do not count; top in tmux enters that namespace too. Processes are the host's.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from pairs import hold_pairs
from sockscope.cli.top import Layout
from sockscope.live.sampler import Sampler, collector_paused
from sockscope.live.view import rows

TICKS = os.sysconf("SC_CLK_TCK")


def timed_ss(runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["ss", "-tinp"], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def timed_refreshes(runs: int = 5) -> tuple[float, float, int]:
    """Give (first refresh, median later refresh, sockets): each one is a refresh as top does it."""
    sampler = Sampler()
    layout = Layout(80, "process")
    times = []
    count = 0
    for _ in range(runs + 1):
        started = time.perf_counter()
        sample = sampler.sample()
        with collector_paused():
            lines = rows(sample.conns, "process", "send", True)
        for row in lines[:20]:  # what an 80x24 screen draws
            layout.line(row)
        times.append(time.perf_counter() - started)
        count = len(sample.conns)
        time.sleep(0.2)
    return times[0], statistics.median(times[1:]), count


@contextlib.contextmanager
def top_in_tmux() -> Iterator[int]:
    """Yield the pid of a real `sockscope top` running in a detached 80x24 tmux session."""
    name = f"bench-top-{os.getpid()}"
    pid_file = f"/tmp/{name}.pid"
    path = shlex.quote(os.pathsep.join(sys.path))
    # the tmux server lives in the host's namespace: enter ours for top
    enter = f"nsenter --net=/proc/{os.getpid()}/ns/net"
    command = f"echo $$ > {pid_file}; exec {enter} env PYTHONPATH={path} {shlex.quote(sys.executable)} -m sockscope top"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24", "sh", "-c", command], check=True)
    try:
        deadline = time.monotonic() + 10
        while not _read(pid_file):
            if time.monotonic() > deadline:
                raise RuntimeError("top did not start in tmux")
            time.sleep(0.05)
        yield int(_read(pid_file))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            os.unlink(pid_file)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def cpu_ticks(pid: int) -> tuple[int, int]:
    """Give (utime, stime) of a process in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _kernel_sockets() -> str:
    with open("/proc/1/net/sockstat") as handle:  # pid 1's namespace: the host's
        return " ".join(line.strip() for line in handle if line.startswith(("TCP", "sockets")))


def memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main() -> None:
    if os.environ.get("BENCH_TOP_NETNS") != "1":
        script = f"ip link set lo up && exec {shlex.quote(sys.executable)} {shlex.join(sys.argv)}"
        os.execvpe("unshare", ["unshare", "--net", "--", "sh", "-c", script], dict(os.environ, BENCH_TOP_NETNS="1"))
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 25000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    # first, while the namespace is quiet: helpers that end leave their sockets in TIME-WAIT
    with hold_pairs(150), top_in_tmux() as pid:  # a host with a few hundred sockets
        time.sleep(5)  # start-up and the first full owner scan are not the steady state
        before, started = cpu_ticks(pid), time.monotonic()
        time.sleep(seconds)
        after = cpu_ticks(pid)
        wall = time.monotonic() - started
        user, system = ((a - b) / TICKS / wall * 100 for a, b in zip(after, before, strict=True))
        count = len(Sampler(owners=False).sample().conns)
        print(f"top CPU over {wall:.0f} s at {count} sockets, 1 s refresh: {user + system:.2f}% of one core (user {user:.2f}%, system {system:.2f}%; goal < 3)")
        # the kernel walks every namespace's sockets for each dump: on a busy host that is most of the system time
        print(f"  sockets in the kernel's tables, all namespaces: {_kernel_sockets()}")
    with hold_pairs(pairs):
        ss = timed_ss()
        first, refresh, count = timed_refreshes()
        print(f"sockets seen (tcp, whole host): {count}")
        print(f"ss -tinp                       {ss:7.3f} s (median of 3)")
        print(f"top refresh, first (cold)      {first:7.3f} s")
        print(f"top refresh, later (median 5)  {refresh:7.3f} s  = {refresh / ss:.2f} x ss -tinp (goal < 0.5)")
        with top_in_tmux() as pid:
            time.sleep(max(10.0, 4 * refresh + 5))  # several refreshes at full size
            print(f"top in tmux at {count} sockets: VmRSS {memory_kb(pid, 'VmRSS') / 1024:.0f} MB, VmHWM {memory_kb(pid, 'VmHWM') / 1024:.0f} MB (goal < 250)")


if __name__ == "__main__":
    main()

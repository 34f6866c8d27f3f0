"""What a process is: its command line, start time, user and container, read from /proc."""

from __future__ import annotations

import os
import re

from ..records import NamedTuple
from .owners import process_name, process_user, stat_fields


class ProcessInfo(NamedTuple):
    """A process as `who` shows it. `started` is seconds since the epoch (None when unknown)."""

    pid: int
    name: str
    user: str
    command: tuple[str, ...]
    started: float | None
    container: str | None


def command_line(proc_root: str, pid: int) -> tuple[str, ...]:
    """Give a process's argv (empty for kernel threads and processes that have gone)."""
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return ()
    return tuple(part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")) if raw else ()


_boot_time: dict[str, float | None] = {}


def boot_time(proc_root: str) -> float | None:
    """Give when the system booted (seconds since the epoch), from `btime` in /proc/stat."""
    if proc_root not in _boot_time:
        found = None
        try:
            with open(f"{proc_root}/stat", "rb") as handle:
                for line in handle:
                    if line.startswith(b"btime "):
                        found = float(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
        _boot_time[proc_root] = found
    return _boot_time[proc_root]


def start_time(proc_root: str, pid: int) -> float | None:
    """Give when a process started (seconds since the epoch), or None."""
    fields = stat_fields(proc_root, pid)
    boot = boot_time(proc_root)
    if fields is None or boot is None or len(fields) < 20 or not fields[19].isdigit():
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


# cgroup path patterns of container runtimes: (runtime, regex whose group 1 is the id or name)
_CONTAINERS = (
    ("docker", re.compile(r"docker[-/]([0-9a-f]{12,64})")),
    ("podman", re.compile(r"libpod-(?:conmon-)?([0-9a-f]{12,64})")),
    ("containerd", re.compile(r"cri-containerd-([0-9a-f]{12,64})")),
    ("cri-o", re.compile(r"crio-([0-9a-f]{12,64})")),
    ("kubepods", re.compile(r"kubepods.*?([0-9a-f]{64})")),
    ("lxc", re.compile(r"lxc\.payload\.([^/\s]+)|/lxc/([^/\s]+)")),
    ("systemd-nspawn", re.compile(r"machine\.slice/machine-([^/\s]+)\.scope")),
)


def container_of(cgroup_text: str) -> str | None:
    """Give `runtime:id` (ids cut to 12 characters) for a process's /proc/<pid>/cgroup text, or None."""
    for runtime, pattern in _CONTAINERS:
        match = pattern.search(cgroup_text)
        if match:
            ident = next(group for group in match.groups() if group)
            return f"{runtime}:{ident[:12] if re.fullmatch('[0-9a-f]+', ident) else ident}"
    return None


def container(proc_root: str, pid: int) -> str | None:
    """Give the container a process runs in, judged from its cgroup, or None."""
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            return container_of(handle.read())
    except OSError:
        return None


def describe(pid: int, proc_root: str = "/proc") -> ProcessInfo:
    """Give what /proc tells about a process (fields it cannot read are empty or None)."""
    return ProcessInfo(
        pid,
        process_name(proc_root, pid),
        process_user(proc_root, pid),
        command_line(proc_root, pid),
        start_time(proc_root, pid),
        container(proc_root, pid),
    )

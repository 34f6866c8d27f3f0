"""cgroup v2 ids -> paths, and the container a path belongs to (`ls --cgroup`).

The kernel gives each socket the id of its cgroup (INET_DIAG_CGROUP_ID). On cgroup v2 that id
is the inode number of the cgroup's directory, so one walk of the cgroup2 mount names them all.
The walk costs a `scandir` per cgroup: it runs once per listing, and only when asked for.
"""

from __future__ import annotations

import os
import re

#: Where cgroup2 is mounted when /proc/self/mounts does not say (the usual place on v2 hosts).
DEFAULT_ROOT = "/sys/fs/cgroup"

# How engines name a container's cgroup directory: systemd drivers a scope
# (docker-<id>.scope, libpod-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope), cgroupfs
# drivers the bare 64-digit id (under docker/, kubepods/...), LXC `lxc.payload.<name>`.
_SCOPE = re.compile(r"(?:docker|libpod|cri-containerd|crio|containerd)-([0-9a-f]{12,64})\.scope")
_BARE_ID = re.compile(r"[0-9a-f]{64}")
_LXC = re.compile(r"lxc\.payload\.(.+)")


def mount_point(mounts: str) -> str | None:
    """Give where cgroup2 is mounted, from the text of /proc/self/mounts (None: not mounted)."""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            # the kernel writes a space in a mount point as \040 (and \011, \012, \134 likewise)
            return re.sub(r"\\([0-7]{3})", lambda found: chr(int(found[1], 8)), fields[1])
    return None


def find_root(proc_root: str = "/proc") -> str:
    """Give the cgroup2 mount to walk: $SOCKSCOPE_CGROUP when set (tests point it at a tree),
    else the cgroup2 mount /proc/self/mounts names, else /sys/fs/cgroup."""
    given = os.environ.get("SOCKSCOPE_CGROUP")
    if given:
        return given
    try:
        with open(f"{proc_root}/self/mounts", encoding="utf-8", errors="surrogateescape") as handle:
            found = mount_point(handle.read())
    except OSError:
        found = None
    return found or DEFAULT_ROOT


def paths(root: str) -> dict[int, str]:
    """Give cgroup id (its directory's inode number) -> path under `root` (`/` for the root).

    Directories that vanish or cannot be read during the walk are left out: their sockets are
    then shown as unreachable, as `ss` shows them. A root that does not exist gives {}.
    """
    found: dict[int, str] = {}
    try:
        found[os.stat(root).st_ino] = "/"
    except OSError:
        return found
    pending = [(root, "")]
    while pending:
        directory, relative = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        path = f"{relative}/{entry.name}"
                        found[entry.inode()] = path
                        pending.append((entry.path, path))
        except OSError:
            continue
    return found


def container(path: str | None) -> str | None:
    """Give the short id (12 hex digits) or name of the container a cgroup path belongs to, or None.

    Known: docker, podman (libpod), containerd and CRI-O (systemd `<engine>-<id>.scope`, or a
    bare 64-digit id directory as cgroupfs drivers make under docker/, kubepods/...) and LXC
    (`lxc.payload.<name>`). A container's own sub-cgroups count as the container; the
    innermost container wins.
    """
    if not path:
        return None
    for part in reversed(path.split("/")):
        if found := _SCOPE.fullmatch(part):
            return found[1][:12]
        if _BARE_ID.fullmatch(part):
            return part[:12]
        if found := _LXC.fullmatch(part):
            return found[1]
    return None

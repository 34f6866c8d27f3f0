"""Network namespaces: find them, enter one for a moment, and name them for row labels."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import PermissionDenied, UsageError

CLONE_NEWNET = 0x40000000
NAMED_DIR = "/run/netns"


@dataclass(frozen=True)
class Namespace:
    """A network namespace: its label, a path that opens it, and a pid living in it (if any)."""

    label: str
    path: str
    inode: int
    pid: int | None = None


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def current(proc_root: str = "/proc") -> int | None:
    """Give the inode of the namespace this process is in."""
    return _inode(f"{proc_root}/thread-self/ns/net") or _inode(f"{proc_root}/self/ns/net")


def discover(proc_root: str = "/proc", named_dir: str = NAMED_DIR) -> list[Namespace]:
    """Give every namespace we can see: named ones (ip netns), then those only processes hold."""
    found: dict[int, Namespace] = {}
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(named_dir)):
            path = os.path.join(named_dir, name)
            inode = _inode(path)
            if inode is not None and inode not in found:
                found[inode] = Namespace(name, path, inode)
    own = current(proc_root)
    pids = sorted(int(p) for p in os.listdir(proc_root) if p.isdigit())
    for pid in pids:
        path = f"{proc_root}/{pid}/ns/net"
        inode = _inode(path)
        if inode is None:
            continue
        known = found.get(inode)
        if known is None:
            label = "self" if inode == own else f"pid:{pid}"
            found[inode] = Namespace(label, path, inode, pid)
        elif known.pid is None:
            found[inode] = Namespace(known.label, known.path, inode, pid)
    return sorted(found.values(), key=lambda ns: (ns.inode != own, ns.label))


def resolve(target: str, proc_root: str = "/proc", named_dir: str = NAMED_DIR) -> list[Namespace]:
    """Give the namespaces named by `--netns`: a name from `ip netns`, a pid, or `all`."""
    if target == "all":
        return discover(proc_root, named_dir)
    if target.isdigit():
        path = f"{proc_root}/{target}/ns/net"
        inode = _inode(path)
        if inode is None:
            if os.path.exists(f"{proc_root}/{target}"):
                raise PermissionDenied(f"cannot see the network namespace of pid {target}: run as root")
            raise UsageError(f"no process with pid {target}")
        return [Namespace(f"pid:{target}", path, inode, int(target))]
    if "/" in target or target in ("", ".", ".."):
        raise UsageError(f"{target!r} is not a namespace name, a pid or 'all'")
    path = os.path.join(named_dir, target)
    inode = _inode(path)
    if inode is None:
        raise UsageError(f"no network namespace named {target!r} (see `ip netns list`)")
    return [Namespace(target, path, inode)]


@contextlib.contextmanager
def entered(namespace: Namespace) -> Iterator[None]:
    """Run the body inside `namespace` (this thread only), then return to where we were.

    Sockets opened inside stay bound to that namespace after we leave. Needs CAP_SYS_ADMIN.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(namespace.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        os.close(home)
        raise PermissionDenied(f"cannot open network namespace {namespace.label}: {exc.strerror}; run as root") from None
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            if code in (errno.EPERM, errno.EACCES):
                raise PermissionDenied(f"entering network namespace {namespace.label} needs root (CAP_SYS_ADMIN)")
            raise PermissionDenied(f"cannot enter network namespace {namespace.label}: {os.strerror(code)}")
        try:
            yield
        finally:
            libc.setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)

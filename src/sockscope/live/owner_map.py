"""Who holds which socket, kept up to date between refreshes without reading every descriptor again.

A full /proc/<pid>/fd scan reads one link per descriptor: at 50,000 sockets that is most of a
second, too much to repeat every second. Instead each refresh lists the processes, rereads only
those that are new or whose number of open files changed (the size of /proc/<pid>/fd, Linux 6.2
and later), and for sockets still without an owner rereads the likeliest holders once: the owners
of a listener on the same port (an accepted connection), then the processes of the socket's user.
Processes in another network namespace (containers) hold sockets this view never shows: they
are not read, unless they move into ours.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from itertools import repeat
from operator import add, itemgetter
from typing import NamedTuple

from ..inventory.owners import user_name
from ..model import Endpoint, Owner, Socket, State

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class _Process(NamedTuple):
    name: str
    user: str
    uid: int
    files: int  # st_size of /proc/<pid>/fd when it was read (-1: unknown, reread each time)
    sockets: tuple[tuple[int, int], ...]  # (inode, fd)


class Descriptor(NamedTuple):
    """One open file of a process: its number and what it points at (`socket:[123]`, a path, `pipe:[9]`)."""

    fd: int
    target: str


class Holders:
    """The owner map: socket inode -> processes holding it, refreshed with `update()`.

    Processes whose descriptors we may not read (other users', without root) are counted in
    `denied` and their sockets stay without owners.
    """

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self.processes: dict[int, _Process] = {}
        self.by_inode: dict[int, tuple[Owner, ...]] = {}
        self.denied: set[int] = set()
        self.home = _network_namespace(proc_root, "self")  # None: cannot tell (fixtures), read every process
        self.elsewhere: set[int] = set()  # processes in another network namespace
        self.tried: set[int] = set()  # inodes already searched for once and not found
        self.reads = 0  # processes whose descriptors were read, over the map's life (to measure)
        self._me = os.getpid()

    def update(self, sockets: Iterable[Socket]) -> None:
        """Bring the map up to date for the sockets of one refresh."""
        try:
            pids = {int(name) for name in os.listdir(self.proc_root) if name.isdigit()}
        except OSError:
            pids = set()
        pids.discard(self._me)
        for gone in self.processes.keys() - pids:
            self._forget(gone)
        self.denied &= pids
        self.elsewhere &= pids
        home = self.home
        for pid in pids:
            known = self.processes.get(pid)
            if known is None:
                if pid in self.denied:
                    continue
                space = _network_namespace(self.proc_root, pid) if home is not None else None
                if space is not None and space != home:
                    self.elsewhere.add(pid)
                    continue
                self.elsewhere.discard(pid)
                self._read(pid)
            elif known.files < 0 or self._files(pid) != known.files:
                self._read(pid)
        self._find_missing(sockets)

    def owners(self, inode: int) -> tuple[Owner, ...]:
        """Give every process holding a socket inode (empty when none was seen)."""
        return self.by_inode.get(inode, ())

    def attach(self, sockets: list[Socket]) -> list[Socket]:
        """Give the sockets with their owners filled in from the map."""
        # C-level, as in inventory: a per-socket _replace() costs a quarter second at 50,000
        got = map(self.by_inode.get, map(itemgetter(7), sockets), repeat(()))
        before = map(add, map(itemgetter(slice(None, 10)), sockets), zip(got))
        return list(map(tuple.__new__, repeat(Socket), map(add, before, map(itemgetter(slice(11, None)), sockets))))

    def _files(self, pid: int) -> int:
        try:
            return os.stat(f"{self.proc_root}/{pid}/fd").st_size
        except OSError:
            return -2  # gone (or closed to us): differs from what we had, so it is read again

    def _read(self, pid: int) -> None:
        """Read one process's socket descriptors into the map (or note that we may not)."""
        self.reads += 1
        root = self.proc_root
        previous = self._forget(pid)
        try:
            fd_dir = os.open(f"{root}/{pid}/fd", _DIR_FLAGS)
        except PermissionError:
            self.denied.add(pid)
            return
        except OSError:
            return  # gone, or a kernel thread
        try:
            files = os.fstat(fd_dir).st_size
            names = os.listdir(fd_dir)
            if files == 0 and names:  # a kernel before 6.2 does not count them: read it every time
                files = -1
            found = []
            for name in names:
                try:
                    link = os.readlink(name, dir_fd=fd_dir)
                except OSError:
                    continue  # closed meanwhile
                if link.startswith("socket:["):
                    found.append((int(link[8:-1]), int(name)))
        except OSError:
            return
        finally:
            os.close(fd_dir)
        if previous is not None:
            name, user, uid = previous.name, previous.user, previous.uid
        else:
            name, uid = _command_name(root, pid), _uid(root, pid)
            user = user_name(uid) if uid >= 0 else "?"
        self.processes[pid] = _Process(name, user, uid, files, tuple(found))
        by_inode = self.by_inode
        for inode, fd in found:
            owner = Owner(pid, name, fd, user)
            have = by_inode.get(inode)
            by_inode[inode] = (owner,) if have is None else tuple(sorted((*have, owner)))

    def _forget(self, pid: int) -> _Process | None:
        """Take a process out of the map; give what was known of it."""
        process = self.processes.pop(pid, None)
        if process is None:
            return None
        by_inode = self.by_inode
        for inode, _fd in process.sockets:
            rest = tuple(owner for owner in by_inode.get(inode, ()) if owner.pid != pid)
            if rest:
                by_inode[inode] = rest
            else:
                by_inode.pop(inode, None)
        return process

    def _find_missing(self, sockets: Iterable[Socket]) -> None:
        """Reread the likeliest holders of sockets that have an inode but no owner yet, once each."""
        listeners: dict[int, set[int]] = {}
        missing: list[Socket] = []
        alive: set[int] = set()
        for sock in sockets:
            if not sock.inode:
                continue
            alive.add(sock.inode)
            owners = self.by_inode.get(sock.inode)
            if sock.state is State.LISTEN and owners and isinstance(sock.local, Endpoint):
                listeners.setdefault(sock.local.port, set()).update(owner.pid for owner in owners)
            elif owners is None and sock.inode not in self.tried:
                missing.append(sock)
        self.tried &= alive
        if not missing:
            return
        suspects: list[int] = []
        for sock in missing:
            if isinstance(sock.local, Endpoint):
                suspects += sorted(listeners.get(sock.local.port, ()))
        uids = {sock.uid for sock in missing}
        # the smaller processes first: the cheaper to read, and a busy server was read already
        suspects += [pid for _files, pid in sorted((p.files, pid) for pid, p in self.processes.items() if p.uid in uids)]
        seen: set[int] = set()
        wanted = {sock.inode for sock in missing}
        for pid in suspects:
            if pid in seen:
                continue
            seen.add(pid)
            self._read(pid)
            process = self.processes.get(pid)
            if process is not None:
                wanted.difference_update(inode for inode, _fd in process.sockets)
            if not wanted:
                break
        self.tried |= wanted


def _network_namespace(proc_root: str, pid: int | str) -> str | None:
    """Give a process's network namespace (`net:[4026531840]`), None when it cannot be read."""
    try:
        return os.readlink(f"{proc_root}/{pid}/ns/net")
    except OSError:
        return None


def _command_name(proc_root: str, pid: int) -> str:
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as handle:
            return handle.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return "?"


def _uid(proc_root: str, pid: int) -> int:
    try:
        return os.stat(f"{proc_root}/{pid}").st_uid
    except OSError:
        return -1


def descriptors(pid: int, proc_root: str = "/proc") -> list[Descriptor]:
    """Give every open file of a process, by descriptor number (what people open /proc/PID/fd for).

    Raises PermissionDenied when the process belongs to another user and we are not root,
    NothingFound when it has gone.
    """
    from ..errors import NothingFound, PermissionDenied

    try:
        fd_dir = os.open(f"{proc_root}/{pid}/fd", _DIR_FLAGS)
    except PermissionError:
        raise PermissionDenied(f"the open files of pid {pid} belong to another user; run as root to see them") from None
    except OSError:
        raise NothingFound(f"pid {pid} has gone") from None
    try:
        found = []
        for name in os.listdir(fd_dir):
            try:
                found.append(Descriptor(int(name), os.readlink(name, dir_fd=fd_dir)))
            except OSError:
                continue  # closed meanwhile
    except OSError:
        raise NothingFound(f"pid {pid} has gone") from None
    finally:
        os.close(fd_dir)
    return sorted(found)

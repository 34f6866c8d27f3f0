"""Who holds which socket: scan /proc/<pid>/fd for `socket:[inode]` links.

Processes and descriptors that vanish mid-scan are skipped quietly, as netstat and lsof do.
Processes whose descriptors we may not read (other users', without root) are counted, so the
command can say once why some owners are missing.
"""

from __future__ import annotations

import array
import os
import pwd
import sys
from collections import Counter
from collections.abc import Collection, Iterable
from itertools import repeat

from .. import native
from ..model import Owner
from ..records import NamedTuple

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class OwnerScan(NamedTuple):
    """The result of one scan: socket inode -> every Owner holding it; unreadable processes counted."""

    holders: dict[int, tuple[Owner, ...]]
    denied: int

    def owners(self, inode: int) -> tuple[Owner, ...]:
        """Give every process holding `inode` (empty when none was seen)."""
        return self.holders.get(inode, ())


def group_owners(triples: array.array[int], proc_root: str) -> dict[int, tuple[Owner, ...]]:
    """Give inode -> Owners from flat (inode, pid, fd) triples, sorted by pid and fd.

    Tens of thousands of sockets pass through here, so the common case (one holder) is
    built with C-level map/zip; only inodes held several times are grouped in Python.
    """
    inodes, pids, fds = triples[0::3], triples[1::3], triples[2::3]
    people = {pid: (process_name(proc_root, pid), process_user(proc_root, pid)) for pid in set(pids)}
    names = {pid: person[0] for pid, person in people.items()}
    users = {pid: person[1] for pid, person in people.items()}
    made = map(tuple.__new__, repeat(Owner), zip(pids, map(names.__getitem__, pids), fds, map(users.__getitem__, pids), strict=False))
    holders: dict[int, tuple[Owner, ...]] = dict(zip(inodes, zip(made), strict=False))
    if len(holders) < len(inodes):  # some sockets are shared: group those properly
        shared = {inode for inode, count in Counter(inodes).items() if count > 1}
        groups: dict[int, list[Owner]] = {inode: [] for inode in shared}
        for inode, pid, fd in zip(inodes, pids, fds, strict=False):
            if inode in shared:
                groups[inode].append(Owner(pid, names[pid], fd, users[pid]))
        for inode, group in groups.items():
            holders[inode] = tuple(sorted(group))
    return holders


PART_SIZE = 2048  # descriptors in one task of a big process
Task = tuple[int, int, int]
"""(pid, low, high): read the descriptors of a process numbered low..high-1 (high -1: no limit)."""


class _Worker:
    """Reads tasks for one process (ours or the forked helper), opening each fd directory once."""

    def __init__(self, proc_root: str) -> None:
        self.proc_root = proc_root
        self.found = array.array("q")
        self.denied = 0
        self.opened: dict[int, int | None] = {}
        self.names: dict[int, list[str]] = {}  # the Python twin lists each directory once

    def read(self, task: Task) -> None:
        """Append (inode, pid, fd) of every socket descriptor in one task to `found`."""
        pid, low, high = task
        if pid in self.opened:
            fd_dir = self.opened[pid]
        else:
            fd_dir = self.opened[pid] = self._open(pid, low)
        if fd_dir is None:
            return
        fast = native.accel
        if fast is not None:  # the readlinks in C, without the GIL, each part listed from its own start
            triples = fast.fd_sockets(fd_dir, pid, low, high)
            if triples is not None:
                self.found.frombytes(triples)
                return
        names = self.names.get(pid)
        if names is None:
            try:
                names = self.names[pid] = os.listdir(fd_dir)
            except OSError:
                return
        if low > 0 or high >= 0:
            names = [name for name in names if low <= int(name) and (high < 0 or int(name) < high)]
        read_task((pid, fd_dir, names), self.found)

    def _open(self, pid: int, low: int) -> int | None:
        try:
            return os.open(f"{self.proc_root}/{pid}/fd", _DIR_FLAGS)
        except PermissionError:
            if low == 0:  # count each process once, whichever worker meets it
                self.denied += 1
            return None
        except OSError:
            return None  # gone, or a kernel thread

    def close(self) -> None:
        for fd_dir in self.opened.values():
            if fd_dir is not None:
                os.close(fd_dir)
        self.opened = {}
        self.names = {}


def _plan(proc_root: str, pids: Iterable[int] | None) -> tuple[list[Task], int]:
    """Give the tasks (big processes cut into parts, biggest first) and the number of descriptors.

    The size of /proc/<pid>/fd is its number of open files (Linux 6.2 and later; 0 before,
    which only makes the plan less even).
    """
    if pids is None:
        try:
            pids = [int(name) for name in os.listdir(proc_root) if name.isdigit()]
        except OSError:
            pids = []
    me = os.getpid()
    sized = []
    for pid in pids:
        if pid == me:
            continue
        try:
            size = os.stat(f"{proc_root}/{pid}/fd").st_size
        except OSError:
            size = 0
        sized.append((size, pid))
    sized.sort(reverse=True)
    tasks = [
        (pid, part * PART_SIZE, (part + 1) * PART_SIZE if part + 1 < parts else -1)
        for size, pid in sized
        for parts in [max(1, size // PART_SIZE)]
        for part in range(parts)
    ]
    return tasks, sum(size for size, _pid in sized)


def read_task(task: tuple[int, int, list[str]], out: array.array[int]) -> None:
    """Append (inode, pid, fd) of every socket descriptor among `names` to `out`."""
    pid, fd_dir, names = task
    readlink = os.readlink
    for name in names:
        try:
            link = readlink(name, dir_fd=fd_dir)
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            out.extend((int(link[8:-1]), pid, int(name)))


def _steal(tasks: list[Task], tasks_fd: int, worker: _Worker) -> None:
    """Take task numbers from the shared pipe until it is empty, reading each task."""
    while True:
        try:
            taken = os.read(tasks_fd, 4)
        except BlockingIOError:
            return
        if len(taken) < 4:
            return
        worker.read(tasks[int.from_bytes(taken, "little")])


def _single_threaded() -> bool:
    """Tell whether fork() is safe: no other threads (a program without `threading` loaded has none
    of its making; importing it here only to ask would cost every small listing its start-up)."""
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


class Scanner:
    """An owner scan under way: a forked helper reads descriptors while the caller does other work.

    Reading /proc/<pid>/fd links costs microseconds each in the kernel; with tens of thousands
    of sockets that dominates `ls -p`. A helper process (not a thread: the GIL would serialise
    the work) takes tasks from a pipe alongside us, so both cores list directories and read links.
    """

    MIN_PARALLEL = 4096  # below this many descriptors a helper costs more than it saves

    def __init__(self, proc_root: str = "/proc", pids: Iterable[int] | None = None, parallel: bool = True) -> None:
        self.proc_root = proc_root
        self.tasks, total = _plan(proc_root, pids)
        self.worker = _Worker(proc_root)
        self.helper: int | None = None
        self.tasks_fd: int | None = None
        self.result_fd: int | None = None
        if parallel and total >= self.MIN_PARALLEL and (os.cpu_count() or 1) > 1 and _single_threaded():
            self._fork()

    def _fork(self) -> None:
        numbers = b"".join(index.to_bytes(4, "little") for index in range(len(self.tasks)))
        if len(numbers) > 65536:  # more than a pipe holds without a reader: do it alone
            return
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.write(write_end, numbers)
        os.close(write_end)
        os.set_blocking(read_end, False)
        result_read, result_write = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the helper: read tasks, send back the denied count and (inode, pid, fd) triples, leave at once
            code = 0
            try:
                os.close(result_read)
                _steal(self.tasks, read_end, self.worker)
                with open(result_write, "wb", closefd=True) as sink:
                    sink.write(self.worker.denied.to_bytes(8, "little"))
                    sink.write(self.worker.found.tobytes())
            except BaseException:
                code = 1
            os._exit(code)
        os.close(result_write)
        self.helper, self.tasks_fd, self.result_fd = pid, read_end, result_read

    def finish(self, wanted: Collection[int] | None = None) -> OwnerScan:
        """Read what is left (with the helper), and give the holders of the `wanted` inodes."""
        worker = self.worker
        try:
            if self.tasks_fd is None:
                for task in self.tasks:
                    worker.read(task)
            else:
                _steal(self.tasks, self.tasks_fd, worker)
                theirs = self._helper_result()
                if theirs is None:  # the helper failed: read everything ourselves rather than lose owners
                    worker.close()
                    worker = self.worker = _Worker(self.proc_root)
                    for task in self.tasks:
                        worker.read(task)
                else:
                    worker.denied += int.from_bytes(theirs[:8], "little")
                    worker.found.frombytes(theirs[8:])
        finally:
            worker.close()
        found = worker.found
        if wanted is not None:
            wanted_set = set(wanted)
            triples = iter(found)
            keep = array.array("q")
            for triple in zip(triples, triples, triples, strict=False):
                if triple[0] in wanted_set:
                    keep.extend(triple)
            found = keep
        return OwnerScan(group_owners(found, self.proc_root), worker.denied)

    def _helper_result(self) -> bytes | None:
        assert self.result_fd is not None and self.tasks_fd is not None and self.helper is not None
        with open(self.result_fd, "rb", closefd=True) as source:
            data = source.read()
        os.close(self.tasks_fd)
        _pid, status = os.waitpid(self.helper, 0)
        return data if status == 0 and len(data) >= 8 and (len(data) - 8) % 24 == 0 else None


def scan(proc_root: str = "/proc", wanted: Collection[int] | None = None, pids: Iterable[int] | None = None) -> OwnerScan:
    """Give the holders of every socket (or only of the `wanted` inodes) among all (or `pids`) processes."""
    return Scanner(proc_root, pids).finish(wanted)


def _process_sockets(proc_root: str, pid: int) -> list[tuple[int, int]] | None:
    """Give (inode, fd) of every socket a process holds; None when we may not look."""
    try:
        fd_dir = os.open(f"{proc_root}/{pid}/fd", _DIR_FLAGS)
    except PermissionError:
        return None
    except OSError:
        return []  # gone, or a kernel thread
    try:
        found = array.array("q")
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return []
        read_task((pid, fd_dir, names), found)
    finally:
        os.close(fd_dir)
    return [(found[i], found[i + 2]) for i in range(0, len(found), 3)]


def holds(proc_root: str, pid: int, inodes: Collection[int]) -> bool:
    """Tell whether a process holds any of the socket inodes right now."""
    sockets = _process_sockets(proc_root, pid)
    return bool(sockets) and any(inode in inodes for inode, _fd in sockets or ())


def stat_fields(proc_root: str, pid: int) -> list[str] | None:
    """Give the fields of /proc/<pid>/stat after the command name (field 3 on), or None."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def parent_pids(proc_root: str, pids: Iterable[int]) -> dict[int, int]:
    """Give pid -> parent pid for the processes still there."""
    parents = {}
    for pid in pids:
        fields = stat_fields(proc_root, pid)
        if fields is not None and len(fields) > 1 and fields[1].isdigit():
            parents[pid] = int(fields[1])
    return parents


def find_holders(wanted: Collection[int], proc_root: str = "/proc", likely_uids: Collection[int] = ()) -> OwnerScan:
    """Give every process holding the `wanted` socket inodes, reading as few processes as it can.

    The processes most likely to hold them are read first (those running as one of
    `likely_uids`, the sockets' creators; then those with fewer open files), and the search
    stops once every wanted socket has a holder and the relatives of the holders (parents and
    children, which share sockets through fork) have been read too. A socket passed to an
    unrelated process over a unix socket is not looked for: `scan()` reads every process.
    """
    remaining = set(wanted)
    me = os.getpid()
    try:
        pids = [int(name) for name in os.listdir(proc_root) if name.isdigit() and int(name) != me]
    except OSError:
        pids = []
    uids = set(likely_uids)

    def priority(pid: int) -> tuple[bool, int]:
        try:
            uid = os.stat(f"{proc_root}/{pid}").st_uid
            files = os.stat(f"{proc_root}/{pid}/fd").st_size  # the number of open files (Linux 6.2+), else 0
        except OSError:
            return (True, 1 << 40)
        return (uid not in uids, files)

    found = array.array("q")
    denied = 0
    read: set[int] = set()

    def read_process(pid: int) -> None:
        nonlocal denied
        read.add(pid)
        sockets = _process_sockets(proc_root, pid)
        if sockets is None:
            denied += 1
            return
        for inode, fd in sockets:
            if inode in wanted:
                found.extend((inode, pid, fd))
                remaining.discard(inode)

    for pid in sorted(pids, key=priority):
        if not remaining:
            break
        read_process(pid)
    holders = set(found[1::3])
    if holders:
        parents = parent_pids(proc_root, pids)
        children: dict[int, list[int]] = {}
        for child, parent in parents.items():
            children.setdefault(parent, []).append(child)
        todo = list(holders)
        while todo:
            pid = todo.pop()
            for relative in [*children.get(pid, ()), parents.get(pid, 0)]:
                if relative > 0 and relative not in read:
                    before = len(found)
                    read_process(relative)
                    if len(found) > before:
                        todo.append(relative)
    return OwnerScan(group_owners(found, proc_root), denied)


_names: dict[tuple[str, int], str] = {}
_users: dict[tuple[str, int], str] = {}
_uid_names: dict[int, str] = {}


def forget(proc_root: str, pids: Iterable[int]) -> None:
    """Drop the remembered name and user of processes that exited, so a reused pid is not named
    after them (a listing lasts a moment; a watcher lives long enough for pids to come round)."""
    for pid in pids:
        _names.pop((proc_root, pid), None)
        _users.pop((proc_root, pid), None)


def process_name(proc_root: str, pid: int) -> str:
    """Give a process's command name (`comm`), or `?` when it has gone."""
    key = (proc_root, pid)
    name = _names.get(key)
    if name is None:
        try:
            with open(f"{proc_root}/{pid}/comm", "rb") as handle:
                name = handle.read().rstrip(b"\n").decode("utf-8", "replace")
        except OSError:
            name = "?"
        _names[key] = name
    return name


def user_name(uid: int) -> str:
    """Give the login name of a uid, or the number as text when it has none."""
    name = _uid_names.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        _uid_names[uid] = name
    return name


def process_user(proc_root: str, pid: int) -> str:
    """Give the user a process runs as (the owner of /proc/<pid>), or `?` when it has gone."""
    key = (proc_root, pid)
    user = _users.get(key)
    if user is None:
        try:
            user = user_name(os.stat(f"{proc_root}/{pid}").st_uid)
        except OSError:
            user = "?"
        _users[key] = user
    return user

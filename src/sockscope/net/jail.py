"""The root jail of `serve --mode http`: files under a directory are opened, nothing outside ever is.

Every request is resolved when its file is opened, by the kernel where it can: `openat2(2)` with
RESOLVE_BENEATH from a descriptor of the root held for the server's life. Where openat2 is missing
(kernels before 5.6, or refused by a seccomp filter), the same rule is kept by a walk, one component
at a time, that never follows a link by name: links are read and their targets walked inside the
root. Callers serve from the descriptor they get (fstat it, read it), never from a path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Any

SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64 (and every architecture added since 5.6)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
PATH_MAX = 4096
MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup
OPEN_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # NONBLOCK: opening a FIFO must not hang the server


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall() -> Any:
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    return call


_SYSCALL = _load_syscall()


class Root:
    """A directory served as the whole world: files under it are opened, nothing outside ever is.

    `kernel` False forces the component walk (SOCKSCOPE_NO_OPENAT2=1 does the same), so that both
    ways are tested on a kernel that has openat2.
    """

    def __init__(self, path: str, kernel: bool | None = None) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        held = os.fstat(self.fd)
        self.identity = (held.st_dev, held.st_ino)  # what `path` must still name for this root to be served
        if kernel is None:
            kernel = not os.environ.get("SOCKSCOPE_NO_OPENAT2")
        self.kernel = kernel and _SYSCALL is not None and self._openat2_works()

    def close(self) -> None:
        os.close(self.fd)

    def _openat2_works(self) -> bool:
        try:
            os.close(self._openat2(".", os.O_PATH | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                return False  # no openat2 here (old kernel, or a seccomp filter that refuses it)
        return True

    def _openat2(self, name: str, flags: int) -> int:
        assert _SYSCALL is not None
        how = _OpenHow(flags, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
        fd = _SYSCALL(SYS_OPENAT2, ctypes.c_int(self.fd), os.fsencode(name), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), name)
        return int(fd)

    def open(self, parts: list[str], flags: int = OPEN_FILE) -> int:
        """Give a descriptor of the file that `parts` (path components) name under the root.

        Raises OSError when it does not exist, cannot be opened, or lies outside the root
        (EXDEV, as openat2 says it). The caller closes the descriptor.
        """
        if self.kernel:
            for _attempt in range(8):
                try:
                    return self._openat2("/".join(parts) or ".", flags)
                except OSError as exc:
                    # EAGAIN: a rename raced the lookup and the kernel asks to retry; renames without end get the walk
                    if exc.errno not in (errno.EAGAIN, errno.EINTR):
                        raise
        return self._walk(parts, flags)

    def _walk(self, parts: list[str], flags: int) -> int:
        if sum(len(part) + 1 for part in parts) >= PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, "file name too long")  # as openat2 says
        trail = [self.fd]  # the directories from the root down to where the walk is; trail[0] is not ours
        todo = list(reversed(parts))
        links = 0
        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(trail) == 1:
                        raise OSError(errno.EXDEV, "outside the served directory", name)
                    os.close(trail.pop())
                    continue
                last = not any(part not in ("", ".") for part in todo)
                want = flags if last else os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
                fd = _open_no_follow(name, want, trail[-1])
                if fd is None:  # a link: its target is walked from here, inside the root
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, "too many levels of symbolic links", name)
                    target = os.readlink(name, dir_fd=trail[-1])
                    if target.startswith("/"):
                        raise OSError(errno.EXDEV, "link to an absolute path", name)
                    todo.extend(reversed(target.split("/")))
                    continue
                if last:
                    return fd
                trail.append(fd)
            return os.open(".", flags, dir_fd=trail[-1])
        finally:
            for fd in trail[1:]:
                os.close(fd)


def _open_no_follow(name: str, flags: int, directory: int) -> int | None:
    """Give a descriptor of `name` in `directory`, or None when `name` is a symbolic link."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=directory)
    except OSError as exc:
        # a link opened with O_NOFOLLOW fails with ELOOP, or ENOTDIR when a directory was asked for
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
            raise
        return None
    if flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH|O_NOFOLLOW opens the link itself
        os.close(fd)
        return None
    return fd


_ROOTS: dict[str, Root] = {}


def root_of(path: str) -> Root:
    """Give the Root for a directory, opened once per process and kept open while `path` names it.

    When `path` names another directory now (removed and made again, as a site generator does
    on each build), that one is opened: the one held open would only ever be empty.
    """
    found = _ROOTS.get(path)
    if found is not None:
        try:
            now = os.stat(path)
        except OSError:  # gone for now: the old one still answers (404s)
            return found
        if (now.st_dev, now.st_ino) == found.identity:
            return found
        try:
            fresh = Root(path)
        except OSError:
            return found
        found.close()
        found = _ROOTS[path] = fresh
        return found
    found = _ROOTS[path] = Root(path)
    return found

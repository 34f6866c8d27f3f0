"""Unix socket names in the filesystem: the file each socket was bound to, and where its name leads now.

A unix socket keeps the name it was bound with after its file is removed or replaced, and `ss`
still prints that name; only the file's device and inode (sock_diag's UNIX_DIAG_VFS) tell
whether the name still leads to this socket.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import Iterable

from ..records import NamedTuple

UDIAG_SHOW_NAME = 0x01
UDIAG_SHOW_VFS = 0x02
UNIX_DIAG_VFS = 1
_MESSAGE = struct.Struct("=BBBxIII")  # unix_diag_msg: family, type, state, pad, inode, cookie
_VFS = struct.Struct("=II")  # unix_diag_vfs: the file's inode, then its device as the kernel keeps it (MKDEV)

FileKey = tuple[int, int, int]
"""A file as (device major, device minor, inode)."""


class NameCheck(NamedTuple):
    """Where a socket's filesystem name leads now.

    `leads` is `it` (its own file), `nothing` (no file at that path: removed after bind), `other`
    (another file: removed and bound again, or replaced). `now` is the inode of the socket whose
    file is there now, when that is a socket on this host. `holder_view` tells that the path was
    looked up through a holder's root (/proc/PID/root), as that process sees its filesystem.
    """

    leads: str
    now: int | None = None
    holder_view: bool = False


def decode_files(chunk: bytes, spans: Iterable[tuple[int, int, int]]) -> dict[int, FileKey]:
    """Give the file (major, minor, inode) of each bound unix socket of a unix_diag dump reply, by socket inode."""
    from ..inventory import diag

    found: dict[int, FileKey] = {}
    for message in diag.messages(chunk, spans):
        if len(message) < 16 + _MESSAGE.size:
            continue
        inode = _MESSAGE.unpack_from(message, 16)[3]
        raw = diag.attributes(message, 16 + _MESSAGE.size, "netlink unix_diag reply").get(UNIX_DIAG_VFS)
        if raw is not None and len(raw) >= _VFS.size:
            file_inode, device = _VFS.unpack_from(raw)
            found[inode] = (device >> 20, device & 0xFFFFF, file_inode)
    return found


def socket_files() -> dict[int, FileKey]:
    """Give the file of each bound unix socket on this host by socket inode; {} when the kernel does not say."""
    from ..errors import SockscopeError
    from ..inventory import diag, netlink

    request = diag.request(struct.pack("=BBHIII8x", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_NAME | UDIAG_SHOW_VFS))
    found: dict[int, FileKey] = {}
    try:
        for chunk, spans in netlink.dump(request, "netlink unix_diag (files)"):
            found.update(decode_files(chunk, spans))
    except SockscopeError:
        return {}
    return found


def file_key(path: str) -> FileKey | None:
    """Give the socket file a path leads to (symbolic links followed); None when it leads to no socket file."""
    try:
        info = os.stat(path.encode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return None
    return os.major(info.st_dev), os.minor(info.st_dev), info.st_ino


def check_name(path: str, inode: int, files: dict[int, FileKey], holders: Iterable[int], root: str) -> NameCheck | None:
    """Give where a socket's filesystem name leads now; None when that cannot be told (no file facts, a relative name)."""
    mine = files.get(inode)
    if mine is None or not path.startswith("/"):
        return None
    for pid in holders:  # the holder's view: a process in another mount namespace bound it there
        seen = _look(f"{root}/{pid}/root{path}")
        if seen is not None:
            return _compare(seen[1], mine, files, holder_view=True)
    seen = _look(path)
    return _compare(seen[1], mine, files, holder_view=False) if seen is not None else None


def _look(path: str) -> tuple[bool, FileKey | None] | None:
    """Give (found, socket file) for a path; None when it cannot be looked at (permission)."""
    try:
        info = os.stat(path.encode("utf-8", "surrogateescape"))
    except FileNotFoundError:
        return False, None
    except (OSError, ValueError):
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return True, (-1, -1, info.st_ino)
    return True, (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)


def _compare(seen: FileKey | None, mine: FileKey, files: dict[int, FileKey], holder_view: bool) -> NameCheck | None:
    """Give where the name leads; None when that is not sure.

    Some filesystems (btrfs subvolumes, overlayfs) show stat() a device or inode other than the
    one the kernel keeps for the socket: a socket file that matches no socket proves nothing.
    """
    if seen is None:
        return NameCheck("nothing", None, holder_view)
    if seen == mine:
        return NameCheck("it", None, holder_view)
    if seen[0] == -1:  # not a socket file at all
        return NameCheck("other", None, holder_view)
    now = next((inode for inode, key in files.items() if key == seen), None)
    return NameCheck("other", now, holder_view) if now is not None else None

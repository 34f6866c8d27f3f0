"""A process that holds one socket of every kind the tests check, then waits for stdin to close.

Prints one JSON line: its pid, its forked child's pid, and name -> inode of each socket.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def main() -> None:
    keep: dict[str, socket.socket] = {}
    tcp = socket.create_server(("127.0.0.1", 0))
    keep["tcp_listen"] = tcp
    keep["tcp_client"] = socket.create_connection(tcp.getsockname())
    keep["tcp_server"], _ = tcp.accept()
    tcp6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    keep["tcp6_listen"] = tcp6
    keep["tcp6_client"] = socket.create_connection(tcp6.getsockname()[:2])
    keep["tcp6_server"], _ = tcp6.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    keep["udp"] = udp
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("::1", 0))
    udp6.connect(("::1", 9))
    keep["udp6_connected"] = udp6
    if os.geteuid() == 0:
        keep["raw"] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        keep["raw6"] = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    folder = tempfile.mkdtemp(prefix="sockscope test ")
    for kind, name in ((socket.SOCK_STREAM, "stream"), (socket.SOCK_SEQPACKET, "seqpacket")):
        server = socket.socket(socket.AF_UNIX, kind)
        server.bind(os.path.join(folder, f"{name} with spaces.sock"))
        server.listen()
        keep[f"unix_{name}_listen"] = server
        keep[f"unix_{name}_client"] = client = socket.socket(socket.AF_UNIX, kind)
        client.connect(server.getsockname())
        keep[f"unix_{name}_server"], _ = server.accept()
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(os.path.join(folder, "dgram.sock"))
    keep["unix_dgram"] = dgram
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0sockscope-test-{os.getpid()}")
    abstract.listen()
    keep["unix_abstract"] = abstract
    keep["unix_pair_a"], keep["unix_pair_b"] = socket.socketpair()
    shared = socket.create_server(("127.0.0.1", 0))
    keep["shared_listen"] = shared
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child holds `shared` (and everything else) until its parent goes
        os.close(writer)
        os.read(reader, 1)
        os._exit(0)
    os.close(reader)
    info = {
        "pid": os.getpid(),
        "child": child,
        "folder": folder,
        "inodes": {name: inode(sock) for name, sock in keep.items()},
        "ports": {name: sock.getsockname()[1] for name, sock in keep.items() if sock.family != socket.AF_UNIX},
    }
    print(json.dumps(info), flush=True)
    sys.stdin.read()
    os.close(writer)
    os.waitpid(child, 0)
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


if __name__ == "__main__":
    main()

from collections.abc import Sequence

def inet_sockets(
    chunk: bytes,
    spans: list[tuple[int, int, int]],
    netid: object,
    inet: object,
    inet6: object,
    states: tuple[object, ...],
    endpoint: type,
    socket: type,
    netns: str | None,
    devices: object,
) -> list[object] | None: ...
def table_text(titles: tuple[str, ...], columns: tuple[Sequence[object], ...], right: tuple[bool, ...], header: bool) -> str | None: ...
def fd_sockets(dir_fd: int, pid: int, low: int, high: int) -> bytes | None: ...

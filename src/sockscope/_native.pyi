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
    inside: tuple[int, type, type, type, type, tuple[str, ...]] | None = None,
) -> list[object] | None: ...
def table_text(
    titles: tuple[str, ...],
    columns: tuple[Sequence[object], ...],
    right: tuple[bool, ...],
    header: bool,
    after: list[str] | tuple[list[object], object, bool, bool, bool] | None = None,
) -> str | None: ...
def internals_lines(sockets: list[object], listen: object, numeric: bool, options: bool, cgroups: bool) -> list[str] | None: ...
def internals_json(sockets: list[object], asked: int, tcp_keys: tuple[str, ...], memory_keys: tuple[str, ...]) -> list[str] | None: ...
def fd_sockets(dir_fd: int, pid: int, low: int, high: int) -> bytes | None: ...

"""Any name a user can give a socket (or a process) keeps every output format valid and exact."""

from __future__ import annotations

import base64
import csv
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sockscope.cli import render
from sockscope.inventory.diag import unix_path
from sockscope.model import Family, NetId, Owner, Socket, State, UnixEndpoint

# a unix name is up to 107 bytes, any byte but NUL for a path; an abstract one starts with NUL
names = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda raw: b"/" + raw.replace(b"\0", b"")),
    st.binary(min_size=1, max_size=40).map(lambda raw: b"\0" + raw),
)
process_names = st.binary(max_size=15).map(lambda raw: raw.decode("utf-8", "surrogateescape"))


def sockets_named(raw: list[bytes], who: str) -> list[Socket]:
    owners = (Owner(1, who, 3, who),)
    return [
        Socket(NetId.UNIX_STREAM, Family.UNIX, State.LISTEN, 0, 0, UnixEndpoint(unix_path(name)), UnixEndpoint(unix_path(name), 7), n, 0, None, owners)
        for n, name in enumerate(raw)
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=5), process_names)
def test_json_is_utf8_and_gives_back_every_byte(raw: list[bytes], who: str) -> None:
    out = io.StringIO()
    render.json_array(out, sockets_named(raw, who), lambda _s: None)
    rows = json.loads(out.getvalue().encode("utf-8").decode("utf-8"))  # strict: no lone surrogate got out
    for name, row in zip(raw, rows, strict=True):
        shown = b"@" + name[1:] if name[0] == 0 else name
        for end in (row["local"], row["peer"]):
            exact = base64.b64decode(end["path_b64"]) if "path_b64" in end else end["path"].encode("utf-8")
            assert exact == shown
            assert ("path_b64" in end) == (not _is_utf8(shown))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=5), process_names)
def test_table_and_csv_keep_one_line_a_socket(raw: list[bytes], who: str) -> None:
    sockets = sockets_named(raw, who)
    table = io.StringIO()
    render.table(table, sockets, render.EndpointText(None, None), netid=True, extended=True, processes=True, netns=False)
    lines = table.getvalue().encode("utf-8").decode("utf-8").split("\n")
    assert len(lines) == len(sockets) + 2 and lines[-1] == ""  # header, one line each, final newline
    assert all(line.isprintable() for line in lines)
    sheet = io.StringIO()
    render.csv_rows(sheet, sockets, lambda _s: None)
    assert sheet.getvalue().count("\n") == len(sockets) + 1
    assert [row[9] for row in csv.reader(io.StringIO(sheet.getvalue()))][1:] == [str(n) for n in range(len(sockets))]

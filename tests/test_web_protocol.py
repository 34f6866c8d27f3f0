"""The page's HTTP and WebSocket protocol, driven by aiohttp's client against the real server code."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import ClientSession, WSMsgType, web
from aiohttp.test_utils import TestServer

from conftest import free_port, needs_root
from sockscope.cli.web import Feed, Settings, add_web_routes
from sockscope.inventory import INET_NETIDS, Query, take
from sockscope.model import Endpoint, Family, NetId, Socket, State

Take = Callable[[], tuple[list[Socket], list[str]]]


def on_port(port: int) -> Take:
    """Give a take of the sockets bound to one local port (the kernel filters: fast on a busy host)."""

    def take_port() -> tuple[list[Socket], list[str]]:
        found = take(Query(netids=INET_NETIDS, owners=True, internals=frozenset({"info"}), local_port=port))
        return found.sockets, found.notes

    return take_port


@asynccontextmanager
async def serving(take_sockets: Take, token: str | None = None, interval: float = 0.1, actions: bool = False) -> AsyncIterator[TestServer]:
    app = web.Application()
    add_web_routes(app, Feed(Settings("127.0.0.1", 0, token, actions, interval), take_sockets))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def until(ws: Any, wanted: Callable[[dict[str, Any]], bool], seconds: float = 10.0) -> dict[str, Any]:
    """Give the first message that `wanted` accepts, within `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = await ws.receive(timeout=left)
        assert message.type is WSMsgType.TEXT, message
        data: dict[str, Any] = json.loads(message.data)
        if wanted(data):
            return data
    raise AssertionError("the awaited message never came")


def rows_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    return list(message.get("table", {}).get("upsert", []))


@pytest.fixture
def listener() -> Any:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def test_a_socat_listener_a_connection_from_nc_and_its_close_reach_the_page() -> None:
    port = free_port()
    socat = subprocess.Popen(["socat", "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "-"], stdout=subprocess.DEVNULL)

    async def scenario() -> None:
        async with serving(on_port(port)) as server, ClientSession() as session, session.ws_connect(server.make_url("/ws")) as ws:
            listening = await until(ws, lambda m: any(r["state"] == "LISTEN" for r in m.get("listeners", {}).get("upsert", [])))
            [row] = listening["listeners"]["upsert"]
            assert (row["local"]["port"], row["process"]) == (port, f"socat({socat.pid})")
            nc = subprocess.Popen(["nc", "-N", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            try:
                opened = await until(ws, lambda m: any(r["state"] == "ESTAB" for r in rows_of(m)))
                [row] = [r for r in rows_of(opened) if r["state"] == "ESTAB"]
                assert row["process"] == f"socat({socat.pid})" and row["peer"]["port"] != 0
                assert nc.stdin is not None
                nc.stdin.close()  # nc sends its FIN, socat sees the end and closes its side
                closed = await until(ws, lambda m: any(e["kind"] == "close" for e in m.get("events", [])))
                assert any(e["socket"]["local"]["port"] == port and e["process"] == f"socat({socat.pid})" for e in closed["events"])
            finally:
                nc.kill()
                nc.wait()

    try:
        asyncio.run(scenario())
    finally:
        socat.kill()
        socat.wait()


def test_a_filter_that_does_not_parse_is_an_error_on_the_page_and_the_server_goes_on(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    async def scenario() -> None:
        async with serving(on_port(port)) as server, ClientSession() as session, session.ws_connect(server.make_url("/ws")) as ws:
            await until(ws, lambda m: "hello" in m)
            for bad in ({"view": {"filter": "sport = = ("}}, {"view": {"sort": "?"}}, {"view": "x"}, [1], {"view": {"page": "1"}}):
                await ws.send_json(bad)
                answer = await until(ws, lambda m: "error" in m or "accepted" in m)
                assert "error" in answer and "\n" not in answer["error"], answer
            await ws.send_str("{not json")
            assert "error" in await until(ws, lambda m: "error" in m or "accepted" in m)
            await ws.send_json({"view": {"filter": f"sport = {port + 1}"}})
            narrowed = await until(ws, lambda m: "accepted" in m)
            assert narrowed["table"]["remove"] and narrowed["counts"]["shown"] == 0

    asyncio.run(scenario())


def test_a_message_too_large_closes_that_page_only() -> None:
    async def scenario() -> None:
        async with serving(lambda: ([], [])) as server, ClientSession() as session:
            async with session.ws_connect(server.make_url("/ws")) as ws:
                await until(ws, lambda m: "hello" in m)
                await ws.send_str(json.dumps({"view": {"filter": "x" * 100_000}}))
                message = await ws.receive(timeout=5)
                assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
            async with session.ws_connect(server.make_url("/ws")) as ws:
                assert "hello" in await until(ws, lambda m: "hello" in m)

    asyncio.run(scenario())


def test_the_token_guards_the_page_and_the_websocket() -> None:
    async def scenario() -> None:
        async with serving(lambda: ([], []), token="s3cret") as server, ClientSession() as session:
            for path in ("/", "/ws", "/?token=wrong", "/ws?token=wrong"):
                async with session.get(server.make_url(path)) as response:
                    assert response.status == 401, path
            async with session.get(server.make_url("/?token=s3cret")) as response:
                assert response.status == 200 and "sockscope" in await response.text()
            async with session.ws_connect(server.make_url("/ws?token=s3cret")) as ws:
                assert "hello" in await until(ws, lambda m: "hello" in m)
            async with session.get(server.make_url("/static/app.js")) as response:
                assert response.status == 200  # the assets hold no data of the host

    asyncio.run(scenario())


def test_other_sites_and_other_host_names_are_refused() -> None:
    async def scenario() -> None:
        async with serving(lambda: ([], [])) as server, ClientSession() as session:
            async with session.get(server.make_url("/"), headers={"Host": "attacker.example"}) as response:
                assert response.status == 421  # a rebound DNS name
            async with session.get(server.make_url("/ws"), headers={"Origin": "http://attacker.example"}) as response:
                assert response.status == 403  # a page of another site opening our WebSocket
            for name in ("/static/../cli/web.py", "/static/%2e%2e%2fcli%2fweb.py", "/static/nothing.js"):
                async with session.get(server.make_url(name)) as response:
                    assert response.status == 404, name
            async with session.get(server.make_url("/")) as response:
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert "default-src 'self'" in response.headers["Content-Security-Policy"]

    asyncio.run(scenario())


def busy_host(rows: int = 500) -> Take:
    """Give a take whose every socket changes at each refresh: the largest deltas a page can get."""
    counter = iter(range(10**9))

    def churn() -> tuple[list[Socket], list[str]]:
        turn = next(counter)
        found = [
            Socket(NetId.TCP, Family.INET, State.ESTAB, turn, n, Endpoint("127.0.0.1", 1 + n), Endpoint("127.0.0.1", 80), n, 0, owners=(), cookie=n)
            for n in range(rows)
        ]
        return found, []

    return churn


def test_a_page_that_never_reads_is_cut_off_and_the_server_does_not_grow() -> None:
    async def scenario() -> None:
        async with serving(busy_host(), interval=0.05) as server:
            feed_viewers = _viewers(server)
            loop = asyncio.get_running_loop()
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.setblocking(False)
            await loop.sock_connect(raw, ("127.0.0.1", server.port))
            request = (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await loop.sock_sendall(raw, request.encode())
            deadline = time.monotonic() + 5
            while not feed_viewers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert feed_viewers, "the page never connected"
            started = time.monotonic()
            while feed_viewers and time.monotonic() - started < 20:
                await asyncio.sleep(0.1)  # never reading a byte
            assert not feed_viewers, "a page that reads nothing is still being fed"
            assert time.monotonic() - started < 20
            raw.close()
            # the others are still served
            async with ClientSession() as session, session.ws_connect(server.make_url("/ws")) as ws:
                assert "hello" in await until(ws, lambda m: "hello" in m)

    asyncio.run(scenario())


def _viewers(server: TestServer) -> set[Any]:
    for route in server.app.router.routes():
        handler = route.handler
        for cell in getattr(handler, "__closure__", None) or ():
            if isinstance(cell.cell_contents, Feed):
                return cell.cell_contents.viewers
    raise AssertionError("no feed behind the routes")


def sockscope_web(*args: str, seconds: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sockscope", "web", *args], capture_output=True, text=True, timeout=seconds, check=False)


def test_a_port_in_use_is_one_line_and_exit_4(listener: socket.socket) -> None:
    done = sockscope_web("--listen", f"127.0.0.1:{listener.getsockname()[1]}")
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1 and "in use" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "0.0.0.0:8731"], "--token"),
        (["--listen", "[::]:8731"], "--token"),
        (["--allow-actions"], "--token"),
        (["--listen", "127.0.0.1:99999"], "out of range"),
        (["--listen", "unix:/tmp/x"], "TCP"),
        (["--interval", "0"], "--interval"),
        (["--tls-client-ca", "/nonexistent"], "--tls"),
        (["--tls", "/nonexistent", "/nonexistent"], "--tls"),
        (["--token", ""], "--token"),
    ],
)
def test_rules_of_who_may_look_and_bad_options_are_usage_errors(args: list[str], says: str) -> None:
    done = sockscope_web(*args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1


@needs_root
def test_with_actions_a_page_closes_a_connection_and_stops_a_listener_but_not_without() -> None:
    port = free_port()
    socat = subprocess.Popen(["socat", "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", "-"], stdout=subprocess.DEVNULL)
    nc = None

    async def scenario() -> None:
        nonlocal nc
        for allow in (False, True):
            async with (
                serving(on_port(port), token="t0ken", actions=allow) as server,
                ClientSession() as session,
                session.ws_connect(server.make_url("/ws?token=t0ken")) as ws,
            ):
                if nc is None:
                    await until(ws, lambda m: bool(m.get("listeners", {}).get("upsert")))
                    nc = subprocess.Popen(["nc", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
                opened = await until(ws, lambda m: any(r["state"] == "ESTAB" for r in rows_of(m)))
                [row] = [r for r in rows_of(opened) if r["state"] == "ESTAB"]
                await ws.send_json({"action": "close", "id": row["id"]})
                answer = await until(ws, lambda m: "done" in m or "error" in m)
                if not allow:
                    assert "actions are off" in answer["error"]
                    continue
                assert answer == {"done": "closed 1 socket(s)"}, answer
                assert nc.wait(timeout=5) is not None  # nc saw the reset
                [listener] = [r for r in rows_of(opened) if r["state"] == "LISTEN"]
                await ws.send_json({"action": "kill", "id": listener["id"]})
                answer = await until(ws, lambda m: "done" in m or "error" in m, seconds=15)
                assert f"socat (pid {socat.pid}): SIGTERM" in answer["done"] and "is free" in answer["done"], answer
                assert socat.wait(timeout=5) is not None

    try:
        asyncio.run(scenario())
    finally:
        for process in (nc, socat):
            if process is not None:
                process.kill()
                process.wait()
                if process.stdin is not None:
                    process.stdin.close()


def test_pages_beyond_the_most_are_refused_until_one_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sockscope.cli.web.MOST_PAGES", 2)

    async def scenario() -> None:
        async with serving(lambda: ([], [])) as server, ClientSession() as session:
            first = await session.ws_connect(server.make_url("/ws"))
            async with session.ws_connect(server.make_url("/ws")) as second:
                await until(second, lambda m: "hello" in m)
                async with session.get(server.make_url("/ws")) as response:
                    assert response.status == 503
            await first.close()
            async with session.ws_connect(server.make_url("/ws")) as third:
                assert "hello" in await until(third, lambda m: "hello" in m)

    asyncio.run(scenario())


def test_garbage_from_ncat_and_curl_never_prints_a_traceback_and_sigterm_stops_cleanly() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sockscope", "web", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and "serving the live page" in server.stdout.readline()
        for garbage in (b"GARBAGE\xff\x00\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n"):
            subprocess.run(["ncat", "-w", "2", "127.0.0.1", str(port)], input=garbage, capture_output=True, timeout=10, check=False)
        big = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Big: " + "a" * 20000, f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert big.stdout == "400"
        server.terminate()
        _out, err = server.communicate(timeout=20)
        assert server.returncode == 0
        assert "Traceback" not in err and err.count("\n") <= 1, err
    finally:
        server.kill()
        server.wait()
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def test_tls_with_client_certificates_lets_in_only_a_client_with_one(tmp_path: Any) -> None:
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *names, "-keyout", key, "-out", cert],
        capture_output=True,
        check=True,
        timeout=30,
    )
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--tls", cert, key, "--tls-client-ca", cert]
    server = subprocess.Popen([sys.executable, "-m", "sockscope", "web", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and f"https://127.0.0.1:{port}/" in server.stdout.readline()
        curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", cert, f"https://127.0.0.1:{port}/"]
        without = subprocess.run(curl, capture_output=True, text=True, timeout=10, check=False)
        assert without.stdout == "000" and without.returncode != 0  # the handshake itself is refused
        with_one = subprocess.run([*curl, "--cert", cert, "--key", key], capture_output=True, text=True, timeout=10, check=False)
        assert with_one.stdout == "200"
    finally:
        server.terminate()
        server.communicate(timeout=20)


def test_a_refresh_that_fails_is_told_to_the_page_and_the_next_one_goes_on() -> None:
    turns = iter(range(10**6))

    def flaky() -> tuple[list[Socket], list[str]]:
        if next(turns) == 1:
            raise OSError(24, "Too many open files")
        return [], []

    async def scenario() -> None:
        async with serving(flaky) as server, ClientSession() as session, session.ws_connect(server.make_url("/ws")) as ws:
            failed = await until(ws, lambda m: "error" in m)
            assert "Too many open files" in failed["error"]
            assert "rates" in await until(ws, lambda m: "rates" in m)

    asyncio.run(scenario())

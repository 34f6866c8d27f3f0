"""`sockscope web` at 50,000 sockets: is the page responsive, and how much does a quiet page cost?

Run by hand, as root (it holds 25,000 loopback connection pairs through bench/pairs.py):

    python bench/web.py [PAIRS] [SECONDS]

It starts `sockscope web` on a free loopback port and connects a page over the WebSocket (as
the browser does, with permessage-deflate, and once more without it), then measures:
  - the first message (everything a new page shows) and how long it took;
  - how long the server takes to answer a view (a filter, a sort by traffic, a grouping);
  - the largest message and the most table rows in one message (never more than a page);
  - bytes the server sends to one page in SECONDS (default 30) while nothing is asked:
    the goal is under 50 KB/s. Wire bytes are read from the page's own socket (tcp_info
    bytes_received), payload bytes from the messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from pairs import hold_pairs

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/http.py would stand in for the standard library's `http`, which aiohttp imports
sys.path[:] = [path for path in sys.path if os.path.abspath(path or ".") != HERE]

TCP_INFO_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received in struct tcp_info


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def received_on(sock: socket.socket) -> int:
    """Give the bytes this socket received, as the kernel counts them (tcp_info)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("Q", info, TCP_INFO_BYTES_RECEIVED)[0])


async def measure(url: str, seconds: float, compress: int) -> dict[str, Any]:
    from aiohttp import ClientSession

    found: dict[str, Any] = {"compress": bool(compress)}
    async with ClientSession() as session:
        started = time.perf_counter()
        async with session.ws_connect(url, compress=compress, max_msg_size=64 * 1024 * 1024) as ws:
            first = await ws.receive_str(timeout=120)
            found["first_message_s"] = round(time.perf_counter() - started, 3)
            found["first_message_bytes"] = len(first)
            hello = json.loads(first)
            found["sockets"] = hello.get("counts", {}).get("sockets")
            found["first_table_rows"] = len(hello.get("table", {}).get("upsert", []))
            for name, view in (
                ("filter", {"filter": "sport = 22 or dport = 443"}),
                ("sort_by_traffic", {"sort": "tx", "descending": True}),
                ("group_by_process", {"group": "process"}),
                ("back_to_rows", {}),
            ):
                asked = time.perf_counter()
                await ws.send_json({"view": view})
                while True:
                    answer = json.loads(await ws.receive_str(timeout=120))
                    if "accepted" in answer or "error" in answer:
                        break
                found[f"answer_{name}_s"] = round(time.perf_counter() - asked, 3)
            raw = ws.get_extra_info("socket")
            wire_before, payload, messages, largest, most_rows = received_on(raw), 0, 0, 0, 0
            until = time.monotonic() + seconds
            while (left := until - time.monotonic()) > 0:
                try:
                    text = await ws.receive_str(timeout=left)
                except TimeoutError:
                    break
                messages += 1
                payload += len(text)
                largest = max(largest, len(text))
                most_rows = max(most_rows, len(json.loads(text).get("table", {}).get("upsert", [])))
            wire = received_on(raw) - wire_before
            found.update(
                quiet_seconds=seconds,
                quiet_messages=messages,
                quiet_payload_bytes_per_s=round(payload / seconds),
                quiet_wire_bytes_per_s=round(wire / seconds),
                quiet_largest_message=largest,
                quiet_most_rows_in_a_message=most_rows,
            )
    return found


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 25000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    port = free_port()
    with hold_pairs(pairs):
        server = subprocess.Popen([sys.executable, "-m", "sockscope", "web", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            print(server.stdout.readline().strip(), file=sys.stderr)
            for compress in (15, 0):
                found = asyncio.run(measure(f"http://127.0.0.1:{port}/ws", seconds, compress))
                print(json.dumps(found))
            with open(f"/proc/{server.pid}/status") as status:
                rss = next(line for line in status if line.startswith("VmRSS"))
            print(json.dumps({"server_rss": rss.split(":")[1].strip()}))
        finally:
            server.terminate()
            server.wait(timeout=30)
            if server.stdout is not None:
                server.stdout.close()


if __name__ == "__main__":
    main()

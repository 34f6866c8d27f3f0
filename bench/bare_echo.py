"""The anchor of bench/echo.py: the barest asyncio Protocol echo server, on uvloop when installed.

python bench/bare_echo.py PORT [--asyncio]
"""

from __future__ import annotations

import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    factory = None
    if "--asyncio" not in sys.argv:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(int(sys.argv[1])))

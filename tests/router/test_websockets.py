"""WebSockets through both data planes: a real client (`websockets`) and a real server,
the data plane between them run as the real process (and HAProxy). The upgrade is passed
on, the 101 comes back, bytes pass both ways as they come, and the whole connection counts
as one request (status class 1xx) on its instance.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.router.test_dataplanes import Plane, ask, backend
from tests.servers import KINDS


class EchoServer:
    """A WebSocket server on a loop of its own: echoes each message, and says "bye" and
    closes when told "close"."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port = int(next(iter(self.server.sockets)).getsockname()[1])
        self.paths: list[str] = []

    async def _start(self) -> object:
        return await serve(self._handle, "127.0.0.1", 0)

    async def _handle(self, connection: ServerConnection) -> None:
        self.paths.append(connection.request.path if connection.request else "?")
        async for message in connection:
            if message == "close":
                await connection.send("bye")
                await connection.close()
                return
            await connection.send(message)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()  # type: ignore[attr-defined]
            await self.server.wait_closed()  # type: ignore[attr-defined]

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Plane, EchoServer]]:
    server = EchoServer()
    plane = Plane(request.param, tmp_path / "state")
    plane.start()
    try:
        plane.sync(
            {"web": [{"host": None, "path": "/"}]},
            {
                "web": {
                    "backends": [backend("web-0", server.port)],
                    "timeouts": {"connect": 5, "first_byte": 5, "idle": 1.0},
                }
            },
        )
        yield plane, server
    finally:
        plane.stop()
        server.close()


def test_messages_pass_both_ways_and_the_connection_counts_once(
    world: tuple[Plane, EchoServer],
) -> None:
    plane, server = world
    big = "x" * 1_000_000  # more than any buffer on the way: backpressure both ways
    with connect(f"ws://127.0.0.1:{plane.port}/chat?room=1", max_size=None) as ws:
        for message in ("hello", big, b"\x00\x01binary"):
            ws.send(message)
            assert ws.recv(timeout=10) == message
        ws.send("close")
        assert ws.recv(timeout=10) == "bye"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert server.paths == ["/chat?room=1"]
    assert ask(plane.port)[0] == 426  # plain HTTP still works (the server wants an upgrade)
    backends = plane.call({"op": "stats"})["backends"]
    counters = backends[f"web-0_{server.port}"]
    assert counters["status"]["1xx"] == 1


def test_the_client_closing_ends_the_connection(world: tuple[Plane, EchoServer]) -> None:
    plane, _ = world
    with connect(f"ws://127.0.0.1:{plane.port}/") as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
    # the close handshake went through the router: connect's exit waits for it


def test_an_upgraded_connection_idle_past_the_timeout_is_closed(
    world: tuple[Plane, EchoServer],
) -> None:
    plane, _ = world
    with connect(f"ws://127.0.0.1:{plane.port}/", ping_interval=None) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
        with pytest.raises(ConnectionClosed):  # nothing for 1 s: the router closes it
            ws.recv(timeout=20)

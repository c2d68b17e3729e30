"""The embedded proxy on a kept-alive connection that carries the same heads again and
again (a client polling, an instance answering alike): what it keeps from one request to
the next (the parsed head, its route, the answer's head as sent) never outlives a change
that would make it wrong."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import cast

import pytest

from sqlifier.router.proxy import Proxy
from sqlifier.router.state import Backend, DesiredState, ServiceTraffic
from sqlifier.stack.model import Route
from tests.router.test_proxy_edges import EDGES, Running


class Canned(asyncio.Protocol):
    """An instance answering every request head with the same head and a 5-byte body
    (the head alone for HEAD); it counts the connections it was given."""

    connections = 0
    open: list[asyncio.Transport] = []  # noqa: RUF012 (closed when the test ends)

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        Canned.connections += 1
        Canned.open.append(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
            self.transport.write(answer if head.startswith(b"HEAD ") else answer + self.body)


@pytest.fixture
def running() -> Iterator[Running]:
    Canned.connections = 0
    running = Running()
    try:
        yield running
    finally:
        for transport in Canned.open:
            running.loop.call_soon_threadsafe(transport.close)
        Canned.open.clear()
        running.close()


def instance(running: Running, body: bytes) -> int:
    async def start() -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: Canned(body), "127.0.0.1", 0)

    server = running.run(start())
    running.servers.append(server)
    return int(server.sockets[0].getsockname()[1])


def routed(ports: dict[str, int], root: str) -> DesiredState:
    """Services "web" and "api", one instance each; `root` is the one that gets "/"."""
    services = {
        name: ServiceTraffic((Backend(name, f"{name}-0", "127.0.0.1", port),), timeouts=EDGES)
        for name, port in ports.items()
    }
    other = "api" if root == "web" else "web"
    return DesiredState({root: (Route(None, "/"),), other: (Route(None, "/other"),)}, services)


def answer(sock: socket.socket, request: bytes, body: bool = True) -> bytes:
    """Send `request` on `sock` and read one answer: its head, and its 5-byte body unless
    `body` is False."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    want = data.index(b"\r\n\r\n") + 4 + (5 if body else 0)
    while len(data) < want:
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    assert len(data) == want, f"more than one answer: {data!r}"
    return data


GET = b"GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n"


def test_the_same_head_is_routed_again_after_a_new_state(running: Running) -> None:
    ports = {"web": instance(running, b"web!!"), "api": instance(running, b"api!!")}
    proxy = Proxy()
    running.call(proxy.apply, routed(ports, "web"))
    port = running.serve(proxy)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert answer(sock, GET).endswith(b"web!!")
        assert answer(sock, GET).endswith(b"web!!")
        running.call(proxy.apply, routed(ports, "api"))  # "/" moves to api
        assert answer(sock, GET).endswith(b"api!!")


def test_an_answer_repeated_on_a_kept_alive_connection_is_relayed_as_the_first(
    running: Running,
) -> None:
    proxy = Proxy()
    running.call(proxy.apply, routed({"web": instance(running, b"hello")}, "web"))
    port = running.serve(proxy)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        first = answer(sock, GET)
        again = [answer(sock, GET) for _ in range(3)]
        head = answer(sock, b"HEAD / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n", body=False)
        last = answer(sock, b"GET / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n")
        sock.settimeout(2)
        assert sock.recv(100) == b""  # closed after the answer it asked to be the last
    assert first.endswith(b"\r\nConnection: keep-alive\r\n\r\nhello")
    assert b"Via: 1.1 sqlifier" in first
    assert again == [first] * 3
    assert head == first[:-5]  # the same head, no body
    assert last == first.replace(b"Connection: keep-alive", b"Connection: close")
    assert Canned.connections == 1  # one connection to the instance, reused throughout
    counted = running.call(proxy.stats)["backends"]["web"]
    assert (counted["requests"], counted["status"]["2xx"]) == (6, 6)

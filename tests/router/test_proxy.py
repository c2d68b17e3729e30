"""The embedded proxy with real sockets: routing, splits, streaming bodies, keep-alive,
forwarded headers, and its own short replies."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sqlifier.router.proxy import Proxy
from sqlifier.router.routes import RouteTable, Split, Track
from sqlifier.spec.model import Route


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "?"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(length)
        payload = json.dumps(
            {
                "instance": self.name,
                "path": self.path,
                "received": len(body),
                "xff": self.headers.get("X-Forwarded-For"),
                "xfh": self.headers.get("X-Forwarded-Host"),
                "via": self.headers.get("Via"),
            }
        ).encode()
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def backend(name: str) -> tuple[ThreadingHTTPServer, int]:
    handler = type(f"Echo_{name}", (Echo,), {"name": name})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def world() -> Iterator[dict[str, object]]:
    servers = {name: backend(name) for name in ("web-0", "web-1", "canary-0", "api-0")}
    ready: dict[tuple[str, Track], list[tuple[str, int]]] = {
        ("web", Track.STABLE): [
            ("127.0.0.1", servers["web-0"][1]),
            ("127.0.0.1", servers["web-1"][1]),
        ],
        ("web", Track.CANARY): [("127.0.0.1", servers["canary-0"][1])],
        ("api", Track.STABLE): [("127.0.0.1", servers["api-0"][1])],
        ("empty", Track.STABLE): [],
    }
    table = RouteTable(
        {
            "web": [Route(None, "/")],
            "api": [Route("api.localhost", "/")],
            "empty": [Route(None, "/empty")],
        }
    )
    proxy = Proxy(table, lambda service, track: ready.get((service, track), []))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(proxy.serve("127.0.0.1", 0))
        holder["port"] = server.sockets[0].getsockname()[1]
        holder["server"] = server
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    yield {"port": holder["port"], "proxy": proxy, "ready": ready}

    async def close() -> None:
        server = holder["server"]
        assert isinstance(server, asyncio.Server)
        server.close()
        await server.wait_closed()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.sleep(0.1)  # let closing transports finish closing

    asyncio.run_coroutine_threadsafe(close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    for server, _ in servers.values():
        server.shutdown()
        server.server_close()


def ask(port: object, method: str = "GET", path: str = "/", **kwargs: object) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", int(str(port)), timeout=10)
    try:
        connection.request(method, path, **kwargs)  # type: ignore[arg-type]
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_requests_reach_the_routed_service_with_forwarded_headers(world: dict[str, object]) -> None:
    status, body = ask(
        world["port"], headers={"Host": "api.localhost", "X-Forwarded-For": "10.0.0.9"}
    )
    answer = json.loads(body)
    assert status == 200
    assert answer["instance"] == "api-0"
    assert answer["xff"] == "10.0.0.9, 127.0.0.1"
    assert answer["xfh"] == "api.localhost"
    assert answer["via"] == "1.1 sqlifier"


def test_no_route_is_404_and_no_ready_instance_is_503(world: dict[str, object]) -> None:
    proxy = world["proxy"]
    assert isinstance(proxy, Proxy)
    proxy.table = RouteTable({"empty": [Route(None, "/empty")]})
    assert ask(world["port"], path="/nothing") == (404, b"no route\n")
    assert ask(world["port"], path="/empty") == (503, b"no instance ready\n")


def test_keep_alive_and_round_robin_on_one_connection(world: dict[str, object]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(str(world["port"])), timeout=10)
    seen = []
    for _ in range(4):
        connection.request("GET", "/")
        seen.append(json.loads(connection.getresponse().read())["instance"])
    connection.close()
    assert Counter(seen) == {"web-0": 2, "web-1": 2}


def test_bodies_stream_through_by_length_and_chunked(world: dict[str, object]) -> None:
    big = b"x" * 3_000_000
    status, body = ask(world["port"], "POST", "/upload", body=big)
    assert (status, json.loads(body)["received"]) == (200, len(big))

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    status, body = ask(
        world["port"],
        "POST",
        "/stream",
        body=chunks(),
        encode_chunked=True,
        headers={"Transfer-Encoding": "chunked"},
    )
    assert (status, json.loads(body)["received"]) == (200, 10_000)


def test_a_one_percent_split_sends_one_percent_to_the_canary(world: dict[str, object]) -> None:
    proxy = world["proxy"]
    assert isinstance(proxy, Proxy)
    proxy.splits["web"] = Split.percent(1)
    connection = http.client.HTTPConnection("127.0.0.1", int(str(world["port"])), timeout=10)
    seen = Counter()
    for _ in range(2000):
        connection.request("GET", "/")
        seen[json.loads(connection.getresponse().read())["instance"]] += 1
    connection.close()
    assert seen["canary-0"] == 20


def test_an_unreachable_instance_is_retried_on_another_for_a_get(world: dict[str, object]) -> None:
    ready = world["ready"]
    assert isinstance(ready, dict)
    ready[("web", Track.STABLE)] = [("127.0.0.1", 1), *ready[("web", Track.STABLE)][:1]]
    answers = {json.loads(ask(world["port"])[1])["instance"] for _ in range(4)}
    assert answers == {"web-0"}
    status, _ = ask(world["port"], "POST", "/", body=b"data")
    assert status in (200, 503)


def test_bad_requests_get_short_answers(world: dict[str, object]) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", int(str(world["port"])))) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        assert raw.recv(1000).startswith(b"HTTP/1.1 400 Bad Request")

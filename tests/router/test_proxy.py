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
from sqlifier.router.routes import Track
from sqlifier.router.state import Backend, DesiredState, ServiceTraffic
from sqlifier.stack.model import Route
from tests.servers import QuietServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
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
                "peer": self.client_address[1],
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


BACKENDS: dict[str, ThreadingHTTPServer] = {}


def backend(name: str, port: int = 0) -> tuple[ThreadingHTTPServer, int]:
    handler = type(f"Echo_{name}", (Echo,), {"name": name})
    server = QuietServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    BACKENDS[name] = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def state(ports: dict[str, int], canary: int = 0, dead: int | None = None) -> DesiredState:
    def b(name: str, port: int, track: Track = Track.STABLE) -> Backend:
        return Backend(f"{name}_{port}", name, "127.0.0.1", port, track)

    web = [b("web-0", ports["web-0"]), b("web-1", ports["web-1"])]
    if dead is not None:
        web = [b("dead-0", dead), web[0]]
    return DesiredState(
        routes={
            "web": (Route(None, "/"),),
            "api": (Route("api.localhost", "/"),),
            "empty": (Route(None, "/empty"),),
        },
        services={
            "web": ServiceTraffic((*web, b("canary-0", ports["canary-0"], Track.CANARY)), canary),
            "api": ServiceTraffic((b("api-0", ports["api-0"]),)),
            "empty": ServiceTraffic(()),
        },
    )


@pytest.fixture
def world() -> Iterator[dict[str, object]]:
    servers = {name: backend(name) for name in ("web-0", "web-1", "canary-0", "api-0")}
    ports = {name: port for name, (_, port) in servers.items()}
    proxy = Proxy()
    proxy.apply(state(ports))
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
    yield {"port": holder["port"], "proxy": proxy, "ports": ports}

    async def close() -> None:
        server = holder["server"]
        assert isinstance(server, asyncio.Server)
        server.close()
        proxy.close_idle()
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
    for server in BACKENDS.values():
        server.shutdown()
        server.server_close()
    BACKENDS.clear()


def ask(port: object, method: str = "GET", path: str = "/", **kwargs: object) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", int(str(port)), timeout=10)
    try:
        connection.request(method, path, **kwargs)  # type: ignore[arg-type]
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


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


def test_an_unreachable_instance_is_retried_on_another_and_ejected(
    world: dict[str, object],
) -> None:
    proxy, ports = world["proxy"], world["ports"]
    assert isinstance(proxy, Proxy) and isinstance(ports, dict)
    proxy.apply(state(ports, dead=1))
    answers = [json.loads(ask(world["port"], "POST", "/", body=b"data")[1]) for _ in range(4)]
    assert {a["instance"] for a in answers} == {"web-0"}
    assert all(a["received"] == 4 for a in answers)  # nothing was sent before the refusal
    assert proxy.stats()["backends"]["dead-0_1"]["ejected"] is True


def test_bad_requests_get_short_answers(world: dict[str, object]) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", int(str(world["port"])))) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        assert raw.recv(1000).startswith(b"HTTP/1.1 400 Bad Request")


def test_upstream_connections_are_reused(world: dict[str, object]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(str(world["port"])), timeout=10)
    peers = []
    for _ in range(6):
        connection.request("GET", "/peer")
        peers.append(json.loads(connection.getresponse().read())["peer"])
    connection.close()
    assert len(set(peers)) == 2  # two instances, one kept-alive connection each


def test_a_stale_kept_alive_connection_is_replaced_for_a_get(world: dict[str, object]) -> None:
    ports = world["ports"]
    assert isinstance(ports, dict)
    assert ask(world["port"], headers={"Host": "api.localhost"})[0] == 200
    # The instance restarts on the same port: the pooled connection is dead.
    server = BACKENDS["api-0"]
    server.shutdown()
    server.server_close()
    BACKENDS["api-0"] = backend("api-0", ports["api-0"])[0]
    status, body = ask(world["port"], headers={"Host": "api.localhost"})
    assert (status, json.loads(body)["instance"]) == (200, "api-0")


def test_weights_shape_the_rotation(world: dict[str, object]) -> None:
    proxy, ports = world["proxy"], world["ports"]
    assert isinstance(proxy, Proxy) and isinstance(ports, dict)
    heavy = Backend("web-0_a", "web-0", "127.0.0.1", ports["web-0"], weight=200)
    light = Backend("web-1_b", "web-1", "127.0.0.1", ports["web-1"], weight=100)
    proxy.apply(DesiredState({"web": (Route(None, "/"),)}, {"web": ServiceTraffic((heavy, light))}))
    connection = http.client.HTTPConnection("127.0.0.1", int(str(world["port"])), timeout=10)
    seen: Counter[str] = Counter()
    for _ in range(30):
        connection.request("GET", "/")
        seen[json.loads(connection.getresponse().read())["instance"]] += 1
    connection.close()
    assert seen == {"web-0": 20, "web-1": 10}

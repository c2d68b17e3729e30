"""Edge cases of the embedded proxy, against scripted backends."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal, ParamSpec, TypeVar

import psutil
import pytest
import uvloop

from sqlifier.router.proxy import Limits, Proxy
from sqlifier.router.state import Backend, DesiredState, ServiceTraffic
from sqlifier.stack.model import Route, Timeouts
from tests.servers import QuietServer

P = ParamSpec("P")
T = TypeVar("T")


class Running:
    """A uvloop event loop in a thread, and the servers and proxies started on it; `close`
    shuts them all down and closes the loop."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []
        self.proxies: list[Proxy] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async def go() -> T:
            return fn(*args, **kwargs)

        return self.run(go())

    def serve(self, proxy: Proxy) -> int:
        """Start `proxy` listening; its port."""
        server = self.run(proxy.serve("127.0.0.1", 0))
        self.servers.append(server)
        self.proxies.append(proxy)
        return int(server.sockets[0].getsockname()[1])

    def start_scripted(self) -> int:
        """Start a backend answering by `SCRIPTS`; its port."""
        server = self.run(asyncio.start_server(scripted, "127.0.0.1", 0))
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _shut(self) -> None:
        for server in self.servers:
            server.close()
        for proxy in self.proxies:
            proxy.close_idle()
        for server in self.servers:
            await server.wait_closed()
        me = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.sleep(0.05)  # let closing transports finish closing

    def close(self) -> None:
        try:
            self.run(self._shut())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            assert not self.thread.is_alive()
            self.loop.close()


EDGES = Timeouts(first_byte=1.0)  # the tests' instances answer at once, or on purpose late


def web(*backends: Backend, timeouts: Timeouts = EDGES) -> DesiredState:
    """A state routing everything to service "web", served by `backends`."""
    traffic = ServiceTraffic(backends, timeouts=timeouts)
    return DesiredState({"web": (Route(None, "/"),)}, {"web": traffic})


@contextlib.contextmanager
def proxy_to(bport: int, limits: Limits | None = None) -> Iterator[tuple[Running, Proxy, int]]:
    """A proxy in front of the backend on `bport` (id "b"): its loop, itself, its port."""
    running = Running()
    try:
        proxy = Proxy(limits)
        running.call(proxy.apply, web(Backend("b", "web-0", "127.0.0.1", bport)))
        yield running, proxy, running.serve(proxy)
    finally:
        running.close()


class JoinedServer(QuietServer):
    daemon_threads = False  # server_close() waits for the handlers: nothing is left open
    block_on_close = True


@contextlib.contextmanager
def http_backend(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded http.server backend with `handler`: its port."""
    server = JoinedServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


Script = (
    bytes
    | list[tuple[float, bytes]]
    | Literal["close"]
    | Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
)
SCRIPTS: dict[bytes, Script] = {}


async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads a request head; answers by the path's script (bytes, or list of (delay, bytes),
    or 'close', or a coroutine function given the reader and writer)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            script = SCRIPTS.get(path, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if script == "close":
                return
            if callable(script):
                await script(reader, writer)
                continue
            steps = [(0.0, script)] if isinstance(script, bytes) else script
            for delay, data in steps:
                if delay:
                    await asyncio.sleep(delay)
                if data == b"<close>":
                    return
                writer.write(data)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@dataclass
class World:
    running: Running
    proxy: Proxy
    port: int  # the proxy's
    bport: int  # the scripted backend's, id "b"

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self.running.call(fn, *args, **kwargs)

    def stats(self) -> dict[str, Any]:
        return self.call(self.proxy.stats)

    def connect(self, timeout: float = 5) -> contextlib.closing[http.client.HTTPConnection]:
        return contextlib.closing(
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        )


@pytest.fixture
def world() -> Iterator[World]:
    running = Running()
    try:
        bport = running.start_scripted()
        proxy = Proxy(Limits(header_timeout=0.5, idle_timeout=1.0, max_body=10_000_000))
        running.call(proxy.apply, web(Backend("b", "web-0", "127.0.0.1", bport)))
        yield World(running, proxy, running.serve(proxy), bport)
    finally:
        SCRIPTS.clear()
        running.close()


def raw(port: int, data: bytes, wait: float = 0.5, shut: bool = False) -> bytes:
    """Send `data` on a new connection; what comes back within `wait` seconds, or until
    the proxy closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + wait
        s.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            out += chunk
        return out


def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until `condition()` holds; fail if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_chunked_response_with_trailers_is_relayed_and_connection_kept_alive(
    world: World,
) -> None:
    SCRIPTS[b"/c"] = [
        (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (0.05, b"5\r\nhello\r\n"),
        (0.05, b"6;x=y\r\n world\r\n0\r\nX-T: 1\r\n\r\n"),
    ]
    with world.connect() as c:
        c.request("GET", "/c")
        r = c.getresponse()
        assert r.read() == b"hello world"
        c.request("GET", "/c")  # keep-alive works after
        assert c.getresponse().read() == b"hello world"
    out = raw(world.port, b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.endswith(b"0\r\nX-T: 1\r\n\r\n"), out


def test_chunked_response_is_decoded_for_http10_client(world: World) -> None:
    SCRIPTS[b"/c"] = [
        (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    ]
    out = raw(world.port, b"GET /c HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert b"Connection: close" in head
    assert body == b"hello"


def test_response_delimited_by_close_is_relayed_and_closes_client_connection(
    world: World,
) -> None:
    SCRIPTS[b"/u"] = [(0, b"HTTP/1.1 200 OK\r\n\r\npart1"), (0.05, b"part2"), (0.05, b"<close>")]
    with world.connect() as c:
        c.request("GET", "/u")
        r = c.getresponse()
        assert r.read() == b"part1part2"
        assert r.getheader("Connection") == "close"
    assert world.stats()["backends"]["b"]["status"]["2xx"] == 1


def test_head_204_304_have_no_body_and_interim_100_is_relayed(world: World) -> None:
    SCRIPTS[b"/h"] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    SCRIPTS[b"/204"] = b"HTTP/1.1 204 No Content\r\n\r\n"
    SCRIPTS[b"/304"] = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"
    SCRIPTS[b"/100"] = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    )
    with world.connect() as c:
        c.request("HEAD", "/h")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"")
        c.request("GET", "/204")
        r = c.getresponse()
        assert (r.status, r.read()) == (204, b"")
        c.request("GET", "/304")
        r = c.getresponse()
        assert (r.status, r.read()) == (304, b"")
        c.request("GET", "/100")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"hi")
    out = raw(world.port, b"GET /100 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n")


def test_slow_response_head_gets_504_and_oversized_response_head_gets_502(
    world: World,
) -> None:
    SCRIPTS[b"/slow"] = [(3, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    SCRIPTS[b"/big"] = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
    with world.connect() as c:
        c.request("GET", "/slow")  # the instance answers after 3 s; the limit is 1 s
        r = c.getresponse()
        assert r.status == 504
    with world.connect() as c:
        c.request("GET", "/big")
        r = c.getresponse()
        assert r.status == 502
    s = world.stats()
    assert s["backends"]["b"]["failed"] == 2
    assert s["services"]["web"]["stable"]["status"]["5xx"] == 2


def test_client_connection_closed_after_header_timeout_and_idle_timeout(world: World) -> None:
    with socket.create_connection(("127.0.0.1", world.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        s.settimeout(3)  # well past the header timeout: closed, not answered
        assert s.recv(100) == b""
    with socket.create_connection(("127.0.0.1", world.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(3)
        assert s.recv(1000).startswith(b"HTTP/1.1 200")
        assert s.recv(100) == b""  # closed once idle past the idle timeout


def test_oversized_or_malformed_requests_get_431_413_400(world: World) -> None:
    big_head = b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw(world.port, big_head).startswith(b"HTTP/1.1 431")
    big_body = b"POST / HTTP/1.1\r\nContent-Length: 20000000\r\n\r\n"
    assert raw(world.port, big_body).startswith(b"HTTP/1.1 413")
    bad_name = b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"
    assert raw(world.port, bad_name).startswith(b"HTTP/1.1 400")
    bad_length = b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"
    assert raw(world.port, bad_length).startswith(b"HTTP/1.1 400")
    cut_short = b"GET / HTTP/1.1\r\nHost"
    assert raw(world.port, cut_short, shut=True).startswith(b"HTTP/1.1 400")
    bad_coding = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"
    assert raw(world.port, bad_coding).startswith(b"HTTP/1.1 400")


def test_pipelined_requests_are_all_answered_after_client_half_closes(world: World) -> None:
    out = raw(
        world.port,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        shut=True,
    )
    assert out.count(b"HTTP/1.1 200 OK") == 2, out


def test_client_hanging_up_mid_response_is_no_backend_failure(world: World) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n")
        for _ in range(500):
            writer.write(b"x" * 100000)
            await writer.drain()

    SCRIPTS[b"/big"] = big
    with socket.create_connection(("127.0.0.1", world.port), timeout=5) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < 1_000_000:
            data = s.recv(65536)
            assert data
            got += len(data)
    eventually(lambda: world.stats()["backends"]["b"]["inflight"] == 0)
    st = world.stats()
    b = st["backends"]["b"]
    assert b["failed"] == 0, b
    assert st["services"]["web"]["stable"]["status"]["5xx"] == 0
    # still works
    assert raw(world.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_slow_client_backpressure_keeps_proxy_memory_bounded(world: World) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 200000000\r\n\r\n")
        chunk = b"x" * 1000000
        for _ in range(200):
            writer.write(chunk)
            await writer.drain()

    SCRIPTS[b"/big"] = big
    me = psutil.Process(os.getpid())
    before = me.memory_info().rss
    with socket.create_connection(("127.0.0.1", world.port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < 200_000_000:
            data = s.recv(1 << 20)
            assert data
            got += len(data)
            if got < 20_000_000:
                time.sleep(0.001)
        grown = me.memory_info().rss - before
    assert grown < 60_000_000, grown


def test_big_upload_is_streamed_to_backend(world: World) -> None:
    big = b"y" * 9_000_000
    with world.connect(timeout=10) as c:
        c.request("POST", "/up", body=big)
        r = c.getresponse()
        assert r.status == 200
        assert r.read() == b"ok"


def test_stale_pool_post_gets_502_get_retried(world: World) -> None:
    # The backend closes its side after answering: the next GET still succeeds, whether
    # the proxy noticed the close (a new connection) or not (a retry).
    SCRIPTS[b"/once"] = [(0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), (0.01, b"<close>")]
    with world.connect() as c:
        c.request("GET", "/once")
        assert c.getresponse().read() == b"ok"
        c.request("GET", "/")
        assert c.getresponse().read() == b"ok"

    # Deterministically stale: the backend drops a pooled connection on the request
    # it gets, before answering, the first time only.
    dropped: list[bytes] = []

    async def drop_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not dropped:
            dropped.append(b"")
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain")
        await writer.drain()

    SCRIPTS[b"/drop"] = drop_once
    failed = world.stats()["backends"]["b"]["failed"]
    with world.connect() as c:
        c.request("GET", "/")  # pools a connection
        assert c.getresponse().read() == b"ok"
        c.request("GET", "/drop")  # on the pooled one: dropped, so sent again on a new one
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"again")
    assert dropped == [b""]
    assert world.stats()["backends"]["b"]["failed"] == failed

    dropped.clear()
    with world.connect() as c:
        c.request("GET", "/")  # pools a connection
        assert c.getresponse().read() == b"ok"
        c.request("POST", "/drop", body=b"data")  # not safe to send again
        r = c.getresponse()
        assert r.status == 502
        r.read()
    assert dropped == [b""]
    assert world.stats()["backends"]["b"]["failed"] == failed + 1


def test_only_backend_refusing_connections_gives_503_keeps_alive_and_is_ejected(
    world: World,
) -> None:
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
    world.call(world.proxy.apply, web(Backend("d", "web-0", "127.0.0.1", port)))
    with world.connect() as c:
        c.request("GET", "/")
        r = c.getresponse()
        assert (r.status, r.read()) == (503, b"no instance reachable\n")
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 503  # keep-alive after a 503
        r.read()
    assert world.stats()["backends"]["d"]["ejected"] is True


def test_http10_upstream_forwarded_headers_expect_continue_and_request_counts() -> None:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Via", "1.0 other")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.wfile.write(
                b"HTTP/1.0 200 OK\r\n\r\n" + self.headers.get("X-Forwarded-For", "").encode()
            )
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    with http_backend(H) as bport, proxy_to(bport) as (running, proxy, port):
        out = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", wait=1)
        assert out.startswith(b"HTTP/1.1 200"), out
        assert out.endswith(b"1.2.3.4, 127.0.0.1"), out
        assert b"Via: 1.1 sqlifier" in out
        assert b"Connection: close" in out
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            first = s.recv(1000)
            assert first.startswith(b"HTTP/1.1 100"), first
            s.sendall(b"hello")
            rest = b""
            while not rest.endswith(b"hello"):
                data = s.recv(1000)
                assert data, rest
                rest += data
            assert b"Via: 1.0 other" in rest
            assert b"sqlifier" not in rest
        for _ in range(5):
            raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wait=0.3)
        st = running.call(proxy.stats)
        st2 = running.call(proxy.stats)  # folding counters twice counts nothing twice
    assert st["services"]["web"]["stable"]["requests"] == 7
    assert st2["services"]["web"]["stable"]["requests"] == 7
    assert st["backends"]["b"]["requests"] == 7
    assert st["backends"]["b"]["inflight"] == 0


def test_backend_retired_while_in_flight_finishes_and_is_counted(world: World) -> None:
    SCRIPTS[b"/slow"] = [(0.5, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]
    result: dict[str, bytes] = {}

    def go() -> None:
        result["out"] = raw(world.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", wait=1.5)

    t = threading.Thread(target=go)
    t.start()
    try:
        eventually(lambda: world.call(world.proxy.in_flight) == 1)
        world.call(
            world.proxy.apply,
            DesiredState({"web": (Route(None, "/"),)}, {"web": ServiceTraffic(())}),
        )
    finally:
        t.join(10)
    assert result["out"].startswith(b"HTTP/1.1 200")
    st = world.stats()
    assert st["services"]["web"]["stable"]["requests"] == 1


@contextlib.contextmanager
def hung_instance() -> Iterator[int]:
    """A port whose connections open (the kernel accepts them) and are never answered:
    what a stopped (SIGSTOP) or deadlocked instance looks like from the router."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        yield int(hung.getsockname()[1])


def test_an_idempotent_request_with_no_first_byte_goes_to_another_instance(
    world: World,
) -> None:
    with hung_instance() as port:
        hung = Backend("h", "web-1", "127.0.0.1", port)
        ok = Backend("b", "web-0", "127.0.0.1", world.bport)
        world.call(world.proxy.apply, web(hung, ok, timeouts=Timeouts(first_byte=0.3)))
        seen = []
        with world.connect() as c:
            for _ in range(4):  # one of the first two goes to the hung instance
                c.request("GET", "/")
                r = c.getresponse()
                seen.append((r.status, r.read()))
        assert seen == [(200, b"ok")] * 4
        stats = world.stats()["backends"]
        assert (stats["h"]["failed"], stats["h"]["ejected"]) == (1, True)


def test_a_request_with_a_body_is_not_sent_again_after_no_first_byte(world: World) -> None:
    with hung_instance() as port:
        hung = Backend("h", "web-1", "127.0.0.1", port)
        ok = Backend("b", "web-0", "127.0.0.1", world.bport)
        world.call(world.proxy.apply, web(hung, ok, timeouts=Timeouts(first_byte=0.3)))
        statuses = []
        for _ in range(2):  # one of the two goes to the hung instance
            with world.connect() as c:
                c.request("POST", "/", body=b"pay")
                r = c.getresponse()
                statuses.append((r.status, r.read()))
        assert sorted(statuses) == [(200, b"ok"), (504, b"the instance did not answer\n")]


def test_an_answer_that_stops_coming_is_cut_after_the_idle_timeout(world: World) -> None:
    SCRIPTS[b"/stall"] = [(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"), (30, b"")]
    timeouts = Timeouts(first_byte=5.0, idle=0.3)
    world.call(
        world.proxy.apply, web(Backend("b", "web-0", "127.0.0.1", world.bport), timeouts=timeouts)
    )
    with world.connect(timeout=10) as c:
        c.request("GET", "/stall")
        r = c.getresponse()
        assert r.status == 200
        with pytest.raises(http.client.IncompleteRead):
            r.read()
    assert world.stats()["backends"]["b"]["failed"] == 1


def test_an_idempotent_request_whose_instance_dies_before_answering_goes_elsewhere(
    world: World,
) -> None:
    async def die(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # reset, as a killed process's connections are

    SCRIPTS[b"/die"] = die
    killed = Backend("k", "web-1", "127.0.0.1", world.bport)

    other = world.running.run(asyncio.start_server(_plain_ok, "127.0.0.1", 0))
    world.running.servers.append(other)
    ok = Backend("o", "web-0", "127.0.0.1", int(other.sockets[0].getsockname()[1]))
    world.call(world.proxy.apply, web(killed, ok))
    seen = []
    for _ in range(2):
        with world.connect() as c:
            c.request("GET", "/die")
            r = c.getresponse()
            seen.append((r.status, r.read()))
    assert seen == [(200, b"ok")] * 2


async def _plain_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A backend that answers every request 200 ok."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

"""The embedded data plane: an asyncio HTTP/1.1 reverse proxy.

One request at a time per client connection (HTTP/1.1 keep-alive, no pipelining), routed
by `RouteTable`, split between tracks by `Split`, balanced round-robin (by weight) over
the ready backends of the chosen track. Connections to instances are kept alive and
reused. Bodies are streamed in both directions, never held whole: `Content-Length`
bodies are copied by length, chunked bodies chunk by chunk, responses without either
until the instance closes.

A request that cannot connect to its instance is retried once on another (nothing was
sent yet, whatever the method) and the instance is taken out of rotation until its
readiness probe passes again. A request that fails on a reused connection before any
answer is retried on a fresh one when it is idempotent and has no body.

Replies of its own are short plain text and name no internals: 404 when no route
matches, 503 when the route's service has no ready instance, 502 when the instance fails
mid-request, 400/413/431 for requests it will not forward, 504 when the instance does not
answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlifier.router.metrics import Counters
from sqlifier.router.routes import RouteTable, Split, Track
from sqlifier.router.state import Backend, BackendState, DesiredState
from sqlifier.spec.model import Route

__all__ = ["Limits", "Proxy"]

_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    )
)
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS"))
_CHUNK = 64 * 1024
_POOL_IDLE = 2.0  # seconds a kept-alive upstream connection may wait to be reused
_POOL_MAX = 64  # idle connections kept per backend


@dataclass(frozen=True)
class Limits:
    max_header: int = 64 * 1024
    max_body: int = 100 * 1024 * 1024
    header_timeout: float = 10.0  # a new connection's first request head
    idle_timeout: float = 60.0  # a kept-alive client connection waiting for its next request
    connect_timeout: float = 5.0
    response_timeout: float = 60.0  # an instance's response head


class _Reject(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Stale(Exception):
    """A reused upstream connection failed before any answer."""


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(slots=True)
class _Exchange:
    """One request being forwarded: the client's side of it."""

    request: _Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    length: int
    chunked: bool
    client_close: bool
    started: float


@dataclass(eq=False)
class _Live:
    """A backend as the proxy runs it: its spec, its counters, its idle connections."""

    spec: Backend
    service: str
    counters: Counters = field(default_factory=Counters)
    inflight: int = 0
    ejected_at: int | None = None  # the probe count when it was ejected
    idle: list[tuple[Connection, float]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.spec.state is BackendState.READY and self.ejected_at is None

    def close_idle(self) -> None:
        for (_, writer), _ in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class _Service:
    split: Split = field(default_factory=Split)
    rotation: dict[Track, list[_Live]] = field(default_factory=dict)
    turn: dict[Track, int] = field(default_factory=lambda: {Track.STABLE: 0, Track.CANARY: 0})
    counters: dict[Track, Counters] = field(
        default_factory=lambda: {Track.STABLE: Counters(), Track.CANARY: Counters()}
    )


class Proxy:
    def __init__(self, limits: Limits | None = None, name: str = "sqlifier") -> None:
        self.limits = limits or Limits()
        self.name = name
        self.table = RouteTable({})
        self._routes: dict[str, tuple[Route, ...]] = {}
        self._services: dict[str, _Service] = {}
        self._backends: dict[str, _Live] = {}
        self.unrouted = 0  # requests no route matched
        self.generation = 0

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(
            self._client, host, port, limit=self.limits.max_header, backlog=1024
        )

    # --- what the agent tells it, what it tells the agent ---------------------------------

    def apply(self, state: DesiredState) -> None:
        """Take a new desired state; in force for the next request."""
        if state.routes != self._routes:
            self._routes = dict(state.routes)
            self.table = RouteTable(state.routes)
        wanted = {b.id: (name, b) for name, s in state.services.items() for b in s.backends}
        for key in list(self._backends):
            if key not in wanted:
                self._backends.pop(key).close_idle()
        for key, (owner, spec) in wanted.items():
            live = self._backends.get(key)
            if live is None:
                self._backends[key] = _Live(spec, owner)
                continue
            if live.ejected_at is not None and spec.probe > live.ejected_at:
                live.ejected_at = None  # its readiness probe passed since
            live.spec, live.service = spec, owner
            if spec.state is not BackendState.READY:
                live.close_idle()
        for name in list(self._services):
            if name not in state.services:
                del self._services[name]
        for name, traffic in state.services.items():
            service = self._services.setdefault(name, _Service())
            if service.split.canary_thousandths != traffic.canary:
                service.split = Split(traffic.canary)
        self._rebuild()
        self.generation += 1

    def _rebuild(self) -> None:
        for name, service in self._services.items():
            mine = [b for b in self._backends.values() if b.service == name and b.usable]
            service.rotation = {track: _weighted(mine, track) for track in Track}

    def stats(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "unrouted": self.unrouted,
            "backends": {
                key: {
                    "service": live.service,
                    "instance": live.spec.instance,
                    "track": live.spec.track.value,
                    "state": live.spec.state.value,
                    "inflight": live.inflight,
                    "ejected": live.ejected_at is not None,
                    **live.counters.to_json(),
                }
                for key, live in self._backends.items()
            },
            "services": {
                name: {track.value: c.to_json() for track, c in service.counters.items()}
                for name, service in self._services.items()
            },
        }

    def close_idle(self) -> None:
        """Close every kept-alive connection to the instances (the proxy is stopping)."""
        for live in self._backends.values():
            live.close_idle()

    def in_flight(self) -> int:
        return sum(live.inflight for live in self._backends.values())

    def _eject(self, live: _Live) -> None:
        if live.ejected_at is None:
            live.ejected_at = live.spec.probe
            live.close_idle()
            self._rebuild()

    # --- one client connection ------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else "unknown"
        wait = self.limits.header_timeout
        try:
            while True:
                try:
                    request = await self._read_request(reader, wait)
                except _Reject as reject:
                    await _reply(writer, reject.status, reject.text, close=True)
                    return
                if request is None:
                    return
                if not await self._forward(request, reader, writer, client_ip):
                    return
                wait = self.limits.idle_timeout
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, wait: float) -> _Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        except asyncio.IncompleteReadError as end:
            if end.partial.strip():
                raise _Reject(400, "incomplete request\n") from None
            return None
        except asyncio.LimitOverrunError:
            raise _Reject(431, "request header too large\n") from None
        except TimeoutError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Reject(400, "bad request line\n")
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _Reject(400, "bad header\n")
            headers.append((name, value.strip()))
        return _Request(parts[0], parts[1], parts[2], headers)

    def _pick(self, service: _Service, track: Track, avoid: _Live | None) -> _Live | None:
        rotation = service.rotation.get(track) or []
        if not rotation and track is Track.CANARY:
            track, rotation = Track.STABLE, service.rotation.get(Track.STABLE) or []
        if not rotation:
            return None
        turn = service.turn[track]
        service.turn[track] = turn + 1
        live = rotation[turn % len(rotation)]
        if live is avoid:
            others = [b for b in rotation if b is not avoid]
            return others[turn % len(others)] if others else None
        return live

    async def _forward(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_ip: str,
    ) -> bool:
        started = time.monotonic()
        length_text = request.header("content-length")
        chunked = "chunked" in (request.header("transfer-encoding") or "").lower()
        if length_text is not None and not length_text.isdigit():
            await _reply(writer, 400, "bad content-length\n", close=True)
            return False
        length = int(length_text) if length_text else 0
        if length > self.limits.max_body:
            await _reply(writer, 413, "request body too large\n", close=True)
            return False
        connection_header = (request.header("connection") or "").lower()
        client_close = connection_header == "close" or (
            request.version == "HTTP/1.0" and connection_header != "keep-alive"
        )
        host = request.header("host") or ""
        name = self.table.match(host, request.target)
        if name is None:
            self.unrouted += 1
            await _reply(writer, 404, "no route\n", close=client_close)
            return not client_close
        service = self._services.get(name)
        if service is None:  # routed, but nothing was said about its instances yet
            await _reply(writer, 503, "no instance ready\n", close=client_close)
            return not client_close
        track = service.split.choose()
        live = self._pick(service, track, None)
        if live is None:
            service.counters[track].record(503, time.monotonic() - started)
            await _reply(writer, 503, "no instance ready\n", close=client_close)
            return not client_close
        exchange = _Exchange(request, reader, writer, length, chunked, client_close, started)
        return await self._send(service, live, exchange, self._head(request, client_ip, host))

    async def _send(self, service: _Service, live: _Live, x: _Exchange, head: bytes) -> bool:
        """Send to `live`; once more elsewhere if it cannot be reached, or on a fresh
        connection if a reused one turned out stale."""
        bodiless = not x.length and not x.chunked
        for attempt in range(2):
            live.inflight += 1
            try:
                upstream, reused = await self._connect(live)
            except (OSError, TimeoutError):
                live.inflight -= 1
                live.counters.failed += 1
                self._eject(live)
                retry = self._pick(service, live.spec.track, live) if attempt == 0 else None
                if retry is None:
                    return await self._fail(service, live, x, 503, "no instance reachable\n")
                live = retry
                continue
            try:
                status, keep, pooled = await self._exchange(x, head, upstream, reused)
            except _Stale:
                live.inflight -= 1
                live.close_idle()  # its other idle connections are likely stale too
                if attempt == 0 and bodiless and x.request.method in _IDEMPOTENT:
                    continue  # the same backend, on a fresh connection this time
                live.counters.failed += 1
                return await self._fail(service, live, x, 502, "the instance failed\n")
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                live.inflight -= 1
                live.counters.failed += 1
                upstream[1].close()
                return await self._fail(service, live, x, 502, "the instance failed\n")
            except TimeoutError:
                live.inflight -= 1
                live.counters.failed += 1
                upstream[1].close()
                return await self._fail(service, live, x, 504, "the instance did not answer\n")
            live.inflight -= 1
            elapsed = time.monotonic() - x.started
            live.counters.record(status, elapsed)
            service.counters[live.spec.track].record(status, elapsed)
            if pooled and live.usable and len(live.idle) < _POOL_MAX:
                live.idle.append((upstream, time.monotonic()))
            else:
                upstream[1].close()
            return keep
        return False  # pragma: no cover - the loop always returns

    async def _fail(
        self, service: _Service, live: _Live, x: _Exchange, status: int, text: str
    ) -> bool:
        service.counters[live.spec.track].record(status, time.monotonic() - x.started)
        close = x.client_close or status != 503
        with contextlib.suppress(ConnectionError):
            await _reply(x.writer, status, text, close=close)
        return not close

    async def _connect(self, live: _Live) -> tuple[Connection, bool]:
        now = time.monotonic()
        while live.idle:
            (up_reader, up_writer), since = live.idle.pop()
            if now - since < _POOL_IDLE and not up_reader.at_eof() and not up_writer.is_closing():
                return (up_reader, up_writer), True
            up_writer.close()
        spec = live.spec
        connection = await asyncio.wait_for(
            asyncio.open_connection(spec.host, spec.port, limit=self.limits.max_header),
            self.limits.connect_timeout,
        )
        return connection, False

    async def _exchange(
        self, x: _Exchange, head: bytes, upstream: Connection, reused: bool
    ) -> tuple[int, bool, bool]:
        """Send the request, relay the answer; (status, keep the client, pool upstream)."""
        up_reader, up_writer = upstream
        up_writer.write(head)
        if x.chunked:
            await _copy_chunked(x.reader, up_writer)
        elif x.length:
            await _copy_length(x.reader, up_writer, x.length)
        try:
            await up_writer.drain()
            _quick_ack(up_writer)
            answer = await asyncio.wait_for(
                up_reader.readuntil(b"\r\n\r\n"), self.limits.response_timeout
            )
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if reused and not getattr(exc, "partial", b""):
                up_writer.close()
                raise _Stale from None
            raise
        return await self._respond(x.request, answer, up_reader, x.writer, x.client_close)

    def _head(self, request: _Request, client_ip: str, host: str) -> bytes:
        lines = [f"{request.method} {request.target} HTTP/1.1"]
        forwarded_for = client_ip
        for name, value in request.headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == "x-forwarded-for":
                forwarded_for = f"{value}, {client_ip}"
                continue
            if lower in ("x-forwarded-proto", "x-forwarded-host", "via"):
                continue
            lines.append(f"{name}: {value}")
        lines += [
            f"X-Forwarded-For: {forwarded_for}",
            "X-Forwarded-Proto: http",
            f"X-Forwarded-Host: {host}",
            f"Via: 1.1 {self.name}",
            "Connection: keep-alive",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _respond(
        self,
        request: _Request,
        head: bytes,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_close: bool,
    ) -> tuple[int, bool, bool]:
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0]
        words = status_line.split(" ")
        status = int(words[1]) if len(words) > 1 and words[1].isdigit() else 502
        headers = [line.partition(":") for line in lines[1:] if line]
        kept = []
        upstream_close = words[0] == "HTTP/1.0"
        length_text: str | None = None
        chunked = False
        via = False
        for name, _, raw in headers:
            lower, value = name.lower(), raw.strip()
            if lower == "connection":
                tokens = value.lower()
                upstream_close = "close" in tokens or (
                    words[0] == "HTTP/1.0" and "keep-alive" not in tokens
                )
            if lower in _HOP_BY_HOP:
                continue
            if lower == "content-length":
                length_text = value
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lower == "via":
                via = True
            kept.append((name, value))
        no_body = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        until_close = not no_body and not chunked and length_text is None
        close = client_close or until_close
        out = [status_line, *(f"{n}: {v}" for n, v in kept)]
        if not via:
            out.append(f"Via: 1.1 {self.name}")
        out.append("Connection: close" if close else "Connection: keep-alive")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if not no_body:
            if chunked:
                await _copy_chunked(up_reader, writer)
            elif length_text is not None:
                await _copy_length(up_reader, writer, int(length_text))
            else:
                while chunk := await up_reader.read(_CHUNK):
                    writer.write(chunk)
                    await writer.drain()
        await writer.drain()
        return status, not close, not (upstream_close or until_close)


def _quick_ack(writer: asyncio.StreamWriter) -> None:
    """Acknowledge the instance's segments at once: a server that writes its head and
    body separately (Nagle on) otherwise waits up to 40 ms for a delayed ACK on a reused
    connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None and _QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _weighted(backends: Iterable[_Live], track: Track) -> list[_Live]:
    """The rotation of a track: each backend as often as its weight, reduced by the
    weights' greatest common divisor, interleaved."""
    mine = [b for b in backends if b.spec.track is track]
    if not mine:
        return []
    divisor = 0
    for live in mine:
        divisor = math.gcd(divisor, live.spec.weight)
    counts = {id(b): b.spec.weight // divisor for b in mine}
    rotation: list[_Live] = []
    while any(counts.values()):
        for live in mine:
            if counts[id(live)]:
                rotation.append(live)
                counts[id(live)] -= 1
    return rotation


async def _copy_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        chunk = await reader.read(min(n, _CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n)
        writer.write(chunk)
        n -= len(chunk)
        await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy a chunked body as it is, chunk by chunk, through the last chunk and trailers."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                line = await reader.readuntil(b"\r\n")
                writer.write(line)
                if line == b"\r\n":
                    await writer.drain()
                    return
        await _copy_length(reader, writer, size + 2)


_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


async def _reply(writer: asyncio.StreamWriter, status: int, text: str, close: bool) -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}"
        "\r\n\r\n".encode()
        + body
    )
    await writer.drain()

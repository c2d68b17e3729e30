"""The embedded data plane's core: an asyncio HTTP/1.1 reverse proxy.

One request at a time per client connection (HTTP/1.1 keep-alive, no pipelining), routed
by `RouteTable`, split between tracks by `Split`, balanced round-robin over the ready
instances of the chosen track. Bodies are streamed in both directions, never held whole:
`Content-Length` bodies are copied by length, chunked bodies chunk by chunk, responses
without either until the upstream closes. Idempotent requests without a body that cannot
reach an instance are retried once on another.

Replies of its own are short plain text and name no internals: 404 when no route
matches, 503 when the route's service has no ready instance, 502 when the instance fails
mid-request, 400/413/431 for requests it will not forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlifier.router.routes import RouteTable, Split, Track

__all__ = ["Backends", "Limits", "Proxy"]

Address = tuple[str, int]
# (service, track) -> the ready instances' addresses
Backends = Callable[[str, Track], Sequence[Address]]

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


@dataclass(frozen=True)
class Limits:
    max_header: int = 64 * 1024
    max_body: int = 100 * 1024 * 1024
    header_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0


class _Reject(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


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


@dataclass
class Proxy:
    table: RouteTable
    backends: Backends
    splits: dict[str, Split] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    name: str = "sqlifier"
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._client, host, port, limit=self.limits.max_header)

    # --- one client connection ------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else "unknown"
        try:
            while True:
                try:
                    request = await self._read_request(reader)
                except _Reject as reject:
                    await _reply(writer, reject.status, reject.text, close=True)
                    return
                if request is None:
                    return
                keep = await self._forward(request, reader, writer, client_ip)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.idle_timeout)
        except asyncio.IncompleteReadError as end:
            if end.partial.strip():
                raise _Reject(400, "incomplete request\n") from None
            return None
        except asyncio.LimitOverrunError:
            raise _Reject(431, "request header too large\n") from None
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

    async def _forward(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_ip: str,
    ) -> bool:
        length_text = request.header("content-length")
        chunked = "chunked" in (request.header("transfer-encoding") or "").lower()
        length = int(length_text) if length_text and length_text.isdigit() else 0
        if length > self.limits.max_body:
            await _reply(writer, 413, "request body too large\n", close=True)
            return False
        client_close = (request.header("connection") or "").lower() == "close" or (
            request.version == "HTTP/1.0"
            and (request.header("connection") or "").lower() != "keep-alive"
        )
        host = request.header("host") or ""
        service = self.table.match(host, request.target)
        if service is None:
            await _reply(writer, 404, "no route\n", close=client_close)
            return not client_close
        track = self.splits.get(service, Split()).choose()
        addresses = list(self.backends(service, track)) or (
            list(self.backends(service, Track.STABLE)) if track is Track.CANARY else []
        )
        if not addresses:
            await _reply(writer, 503, "no instance ready\n", close=client_close)
            return not client_close
        retries = 1 if request.method in _IDEMPOTENT and not length and not chunked else 0
        start = next(self._turn)
        for attempt in range(retries + 1):
            address = addresses[(start + attempt) % len(addresses)]
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(*address), self.limits.connect_timeout
                )
                break
            except (OSError, TimeoutError):
                if attempt == retries:
                    await _reply(writer, 503, "no instance reachable\n", close=client_close)
                    return not client_close
        up_reader, up_writer = upstream
        try:
            up_writer.write(self._head(request, client_ip, host))
            if chunked:
                await _copy_chunked(reader, up_writer)
            elif length:
                await _copy_length(reader, up_writer, length)
            await up_writer.drain()
            return await self._respond(request, up_reader, writer, client_close)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await _reply(writer, 502, "the instance failed\n", close=True)
            return False
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()

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
            "Connection: close",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _respond(
        self,
        request: _Request,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_close: bool,
    ) -> bool:
        head = await up_reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0]
        headers = [line.partition(":") for line in lines[1:] if line]
        kept = [(n, v.strip()) for n, _, v in headers if n.lower() not in _HOP_BY_HOP]
        names = {n.lower() for n, _ in kept}
        length_text = next((v for n, v in kept if n.lower() == "content-length"), None)
        chunked = "chunked" in next(
            (v.lower() for n, v in kept if n.lower() == "transfer-encoding"), ""
        )
        status = int(status_line.split(" ")[1]) if len(status_line.split(" ")) > 1 else 502
        no_body = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        until_close = not no_body and not chunked and length_text is None
        close = client_close or until_close
        out = [status_line, *(f"{n}: {v}" for n, v in kept)]
        out.append(f"Via: 1.1 {self.name}" if "via" not in names else "")
        out.append("Connection: close" if close else "Connection: keep-alive")
        writer.write(("\r\n".join(x for x in out if x) + "\r\n\r\n").encode("latin-1"))
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
        return not close


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


async def _reply(writer: asyncio.StreamWriter, status: int, text: str, close: bool) -> None:
    reasons = {
        400: "Bad Request",
        404: "Not Found",
        413: "Content Too Large",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}"
        "\r\n\r\n".encode()
        + body
    )
    await writer.drain()

"""The dashboard's HTTP: one request per connection, answers whole or streamed (SSE).

The agent's own `runtime/http.py` answers whole messages only; the dashboard also keeps a
connection open to push server-sent events, so it reads requests with h11 here and writes
either a complete answer or a head followed by chunks until the stream ends or the browser
goes away. A request must arrive within 10 s of its connection; a body is at most 64 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11

__all__ = ["Handler", "Request", "Response", "Stream", "serve"]

MAX_BODY = 64 * 1024
TIMEOUT = 10.0
log = logging.getLogger("sqlifier.dashboard")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body, one value a field."""
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: Sequence[tuple[str, str]] = field(default=())


@dataclass(frozen=True, slots=True)
class Stream:
    """An answer sent piece by piece (server-sent events) until `chunks` ends."""

    chunks: AsyncIterator[bytes]
    content_type: str = "text/event-stream"


Handler = Callable[[Request], Awaitable[Response | Stream]]

_SECURITY = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; form-action 'self'",
    ),
)


async def serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handler
) -> None:
    """Answer the one request of an accepted connection, then close it."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    try:
        try:
            async with asyncio.timeout(TIMEOUT):
                request = await _read(connection, reader)
        except (h11.RemoteProtocolError, ValueError) as exc:
            await _send_raw(writer, 400, f"bad request: {exc}")
            return
        except TimeoutError:
            await _send_raw(writer, 408, "the request did not arrive within 10s")
            return
        if request is None:
            return
        try:
            answer = await handle(request)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("dashboard error %s on %s %s", ref, request.method, request.path)
            answer = Response(500, f"internal error {ref} (in the agent's log)".encode())
        if isinstance(answer, Stream):
            await _until_gone(reader, _stream(connection, writer, answer))
        else:
            await _whole(connection, writer, answer)
    except (ConnectionError, h11.LocalProtocolError, TimeoutError):
        writer.transport.abort()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _read(connection: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data and head is None:
                return None
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ValueError("the body is larger than 64 KiB")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            target = urlsplit(head.target.decode("latin-1"))
            query = {k: v[0] for k, v in parse_qs(target.query).items()}
            headers: dict[str, str] = {}
            for name, value in head.headers:
                headers[name.decode("latin-1").lower()] = value.decode("latin-1")
            return Request(head.method.decode(), target.path, query, headers, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _head(status: int, content_type: str, extra: Sequence[tuple[str, str]]) -> h11.Response:
    headers = [("Content-Type", content_type), ("Connection", "close"), *_SECURITY, *extra]
    if not any(name.lower() == "cache-control" for name, _ in extra):
        headers.append(("Cache-Control", "no-store"))
    return h11.Response(status_code=status, headers=headers, reason=_phrase(status))


async def _whole(
    connection: h11.Connection, writer: asyncio.StreamWriter, answer: Response
) -> None:
    extra = [*answer.headers, ("Content-Length", str(len(answer.body)))]
    parts = (
        _head(answer.status, answer.content_type, extra),
        h11.Data(data=answer.body),
        h11.EndOfMessage(),
    )
    writer.write(b"".join(connection.send(part) or b"" for part in parts))
    async with asyncio.timeout(TIMEOUT):
        await writer.drain()


async def _stream(connection: h11.Connection, writer: asyncio.StreamWriter, answer: Stream) -> None:
    writer.write(connection.send(_head(200, answer.content_type, ())) or b"")
    try:
        async for chunk in answer.chunks:
            writer.write(connection.send(h11.Data(data=chunk)) or b"")
            async with asyncio.timeout(TIMEOUT):
                await writer.drain()
            if writer.is_closing():
                break
    finally:
        with contextlib.suppress(Exception):
            await answer.chunks.aclose()  # type: ignore[attr-defined]


async def _until_gone(reader: asyncio.StreamReader, streaming: Awaitable[None]) -> None:
    """Stream until the stream ends or the browser closes the connection (a closed tab
    stops costing anything at once, not at the next keep-alive)."""
    pump = asyncio.ensure_future(streaming)
    gone = asyncio.ensure_future(_closed(reader))
    try:
        await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            task.cancel()
        for task in (pump, gone):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, TimeoutError):
                await task


async def _closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


async def _send_raw(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status} {_phrase(status)}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await writer.drain()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"

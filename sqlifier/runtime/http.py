"""HTTP/1.1 for sqlifier's own clients and servers, on h11, over asyncio streams.

Every HTTP message sqlifier sends or answers by itself goes through here: probes, webhook
POSTs and Prometheus queries on the client side, the agent's API and `/metrics` on the
server side. h11 does the message syntax (strict parsing, framing by length, chunks or
close, limits on heads); this module does the I/O around it and nothing else: opening the
connection, TLS and timeouts stay with the caller, who knows what each failure means to it.
The embedded router's proxy keeps its own parser (`router/h1.py`): it passes heads on
unread and is measured request by request.

One exchange per connection, both ways (`Connection: close`): the agent's clients ask
rarely, and a connection that lives for one exchange can never be left half-read.

A server never closes a connection without an answer: a head it cannot read gets 400 (431
when too large), a body over the limit 413, a request that has not fully arrived within
`timeout` seconds of the connection 408 (so an idle connection or a slowloris client holds
nothing for long), a connection beyond its `Gate`'s limit 503 at once, and a handler that
raises gets 500 with an id that is also in the log beside the traceback. An answer the
client does not read within `timeout` is dropped with the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

import h11

__all__ = [
    "MAX_HEAD",
    "REQUEST_TIMEOUT",
    "Answer",
    "ClosedEarly",
    "Gate",
    "Incoming",
    "NotHttp",
    "Outgoing",
    "TooLarge",
    "close",
    "exchange",
    "serve",
]

MAX_HEAD = 16 * 1024  # a request's or response's head, its blank line included
REQUEST_TIMEOUT = 10.0  # seconds for a whole request to arrive, and for its answer to leave
LINGER = 2.0  # seconds of a refused request's bytes read and dropped before closing
_READ = 65536
log = logging.getLogger("sqlifier.http")

Headers = Sequence[tuple[str, str]]


class NotHttp(Exception):
    """The other side's bytes are not an HTTP message, or break off in the middle of one."""


class ClosedEarly(NotHttp):
    """The connection closed before a single byte of the answer arrived."""


class TooLarge(NotHttp):
    """The body is longer than the caller allowed."""


# --- the client side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names in lower case; repeated ones joined with ", "
    body: bytes  # empty when the caller did not read it


async def exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    target: str,
    headers: Headers,
    body: bytes = b"",
    *,
    read_body: bool = True,
    max_body: int = 16 * 1024 * 1024,
) -> Answer:
    """Send one request on an open connection and read the final answer (1xx skipped).

    `headers` must hold Host; Content-Length and Connection are added. Without
    `read_body`, only the status line and headers are read. Raises NotHttp (and its
    kinds) for what is not a well-formed answer, OSError for the connection's failures.
    """
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    sent = [*headers, ("Content-Length", str(len(body))), ("Connection", "close")]
    try:
        data = connection.send(h11.Request(method=method, target=target, headers=sent))
    except h11.LocalProtocolError as exc:
        raise ValueError(f"cannot send {method} {target}: {exc}") from None
    if body:
        data += connection.send(h11.Data(data=body)) or b""
    writer.write(data + (connection.send(h11.EndOfMessage()) or b""))
    await writer.drain()
    head = await _response(connection, reader)
    found = _headers(head.headers)
    if not read_body:
        return Answer(head.status_code, found, b"")
    return Answer(head.status_code, found, await _body(connection, reader, max_body))


async def _next(connection: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next event, reading as much as it needs."""
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            raise NotHttp(str(exc)) from None
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(await reader.read(_READ))


async def _response(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Response:
    first = await reader.read(_READ)
    if not first:
        raise ClosedEarly("the connection closed without an answer")
    connection.receive_data(first)
    while True:
        event = await _next(connection, reader)
        if isinstance(event, h11.Response):
            return event
        if not isinstance(event, h11.InformationalResponse):
            raise NotHttp("no answer before the connection closed")


async def _body(connection: h11.Connection, reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        event = await _next(connection, reader)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                raise TooLarge(f"the body is longer than {limit} bytes")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return bytes(body)


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        found[key] = f"{found[key]}, {text}" if key in found else text
    return found


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a connection; one interrupted while closing is aborted, never left half-open."""
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    except BaseException:
        writer.transport.abort()
        raise


# --- the server side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incoming:
    method: str
    target: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Headers = field(default=())


Handler = Callable[[Incoming], Awaitable[Outgoing]]
Failure = Callable[[int, str], Outgoing]  # an error's answer in the server's own shape


class Gate:
    """How many connections a server has open, and how many it takes at most. At the
    limit a new connection pushes out the one that has waited longest for its request
    (it gets 503), so that a crowd of idle or slow clients cannot keep a prompt one out;
    when every open connection is being answered, the new one gets 503 itself."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0  # connections answered 503 since the start, pushed out or turned away
        self._waiting: dict[object, Callable[[], None]] = {}  # oldest first

    def enter(self, key: object) -> bool:
        if self.open >= self.limit:
            if not self._waiting:
                self.refused += 1
                return False
            oldest = next(iter(self._waiting))
            self.refused += 1
            self._waiting.pop(oldest)()
        self.open += 1
        return True

    def waiting(self, key: object, push_out: Callable[[], None]) -> None:
        self._waiting[key] = push_out

    def answering(self, key: object) -> None:
        self._waiting.pop(key, None)

    def leave(self, key: object) -> None:
        self._waiting.pop(key, None)
        self.open -= 1


class _Late(Exception):
    """The request did not arrive in time, or its connection was pushed out for a newer."""

    def __init__(self, pushed_out: bool) -> None:
        super().__init__()
        self.pushed_out = pushed_out


async def serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Handler,
    fail: Failure,
    max_body: int = 64 * 1024,
    *,
    timeout: float = REQUEST_TIMEOUT,
    gate: Gate | None = None,
) -> None:
    """Answer one request on a connection the server accepted, then close it."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    key = object()
    entered = gate is None or gate.enter(key)
    data: bytes | None
    try:
        if gate is not None and not entered:
            data = _raw(fail(503, f"too many connections at once ({gate.limit}); retry"))
        else:
            try:
                answer = await _answer(
                    connection, reader, handle, fail, max_body, timeout, gate, key
                )
                data = None if answer is None else _encode(connection, answer)
            except _Late as exc:
                if exc.pushed_out:
                    why = "too many connections at once: this one waited longest for its request"
                    data = _raw(fail(503, why))
                else:
                    late = f"request timeout: the request did not arrive within {timeout:g}s"
                    data = _raw(fail(408, late))
        if data is not None:
            writer.write(data)
            async with asyncio.timeout(timeout):
                await writer.drain()
            if connection.their_state is not h11.DONE:
                await _linger(reader, writer)
    except (ConnectionError, TimeoutError):
        writer.transport.abort()  # a client that does not read its answer
    finally:
        if entered and gate is not None:
            gate.leave(key)
        with contextlib.suppress(ConnectionError):
            await close(writer)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After answering a request not read to its end (413, 408, 503): say the answer is
    complete, and read what the client is still sending for a moment before closing, so
    that the close does not reset the connection and take the answer with it."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER):
            while await reader.read(_READ):
                pass


async def _answer(
    connection: h11.Connection,
    reader: asyncio.StreamReader,
    handle: Handler,
    fail: Failure,
    max_body: int,
    timeout: float,
    gate: Gate | None,
    key: object,
) -> Outgoing | None:
    """The answer to the request on `connection`; None when the client left first."""
    pushed_out = False

    def push_out() -> None:
        nonlocal pushed_out
        pushed_out = True
        deadline.reschedule(-1.0)  # at once

    try:
        async with asyncio.timeout(timeout) as deadline:
            if gate is not None:
                gate.waiting(key, push_out)
            request = await _request(connection, reader, max_body)
    except TimeoutError:
        raise _Late(pushed_out) from None
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        return fail(status, f"bad request: {exc}" if status == 400 else _phrase(status).lower())
    except TooLarge as exc:
        return fail(413, str(exc))
    finally:
        if gate is not None:
            gate.answering(key)
    if request is None:
        return None
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_until_closed(reader, gone))
    token = _GONE.set(gone)
    try:
        return await handle(request)
    except Exception as exc:
        ident = secrets.token_hex(6)
        log.error("error %s answering %s %s", ident, request.method, request.target, exc_info=exc)
        return fail(500, f"internal error {ident}: a bug in sqlifier; the agent's log has it")
    finally:
        _GONE.reset(token)
        watcher.cancel()


_GONE: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("gone", default=None)


def client_gone() -> asyncio.Event | None:
    """Inside a handler: set once the client of the request closed its connection (a
    handler that waits long withdraws what it was asked); None outside one."""
    return _GONE.get()


async def _until_closed(reader: asyncio.StreamReader, gone: asyncio.Event) -> None:
    """Set `gone` when the client closes (one request a connection: nothing follows)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(_READ):
            pass
    gone.set()


async def _request(
    connection: h11.Connection, reader: asyncio.StreamReader, max_body: int
) -> Incoming | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(_READ))
        elif isinstance(event, h11.Request):
            if _size(event) > MAX_HEAD:  # h11 bounds only heads that arrive in pieces
                raise h11.RemoteProtocolError("head too large", error_status_hint=431)
            head = event
            length = _headers(event.headers).get("content-length", "0")
            if length.isdigit() and int(length) > max_body:
                raise TooLarge(f"request body larger than {max_body // 1024} KiB")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                raise TooLarge(f"request body larger than {max_body // 1024} KiB")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            method, target = head.method.decode("ascii"), head.target.decode("latin-1")
            return Incoming(method, target, _headers(head.headers), bytes(body))
        else:  # the client closed the connection before its request was complete
            return None


def _size(head: h11.Request) -> int:
    """The length of a request's head as it was sent, give or take its spacing."""
    line = len(head.method) + len(head.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in head.headers) + 2


def _encode(connection: h11.Connection, answer: Outgoing) -> bytes:
    headers = [
        *answer.headers,
        ("Content-Type", answer.content_type),
        ("Content-Length", str(len(answer.body))),
        ("Connection", "close"),
    ]
    status = answer.status
    head = h11.Response(status_code=status, headers=headers, reason=_phrase(status))
    return b"".join(
        connection.send(event) or b""
        for event in (head, h11.Data(data=answer.body), h11.EndOfMessage())
    )


def _raw(answer: Outgoing) -> bytes:
    """An answer sent without h11: to a request not read (503) or not complete (408)."""
    head = [
        f"HTTP/1.1 {answer.status} {_phrase(answer.status)}",
        *(f"{name}: {value}" for name, value in answer.headers),
        f"Content-Type: {answer.content_type}",
        f"Content-Length: {len(answer.body)}",
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"

"""A client's connection to the embedded proxy (`Client`): its requests, read and answered
one at a time.

HTTP/1.1 keep-alive: a request sent before the previous answer is read after it, up to a
head's worth (reading pauses beyond that). A request head is parsed, routed and handed to
an `Exchange` in the callback that completed it; a connection often carries the same head
again and again, so it keeps the last head it read and what was made of it. The proxy's own
replies (400, 404, 413, 431, 503) are written here. A client has `header_timeout` for its
first request head and `idle_timeout` for each next one; the proxy's sweep calls `look()`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from sqlifier.router import h1
from sqlifier.router.exchange import Exchange
from sqlifier.router.flow import READ_AHEAD

if TYPE_CHECKING:
    from sqlifier.router.proxy import Proxy
    from sqlifier.router.upstreams import Service

__all__ = ["PLAIN", "Client", "Listener"]

_HEAD_END = h1.HEAD_END


@dataclass(frozen=True, slots=True)
class Listener:
    """What a listening address adds to its connections' requests and answers."""

    proto: bytes = b"http"  # X-Forwarded-Proto
    extra: bytes = b""  # header lines added to every answer (HSTS), each after a CRLF
    https_port: int | None = None  # a redirect listener: 308 to https on this port


PLAIN = Listener()


class Client(asyncio.Protocol):
    """One client connection: its requests, read and answered one at a time."""

    __slots__ = (
        "address",
        "buffer",
        "closing",
        "eof",
        "exchange",
        "holds",
        "last",
        "listener",
        "outbox",
        "patience",
        "proxy",
        "routed",
        "since",
        "transport",
        "write_paused",
    )

    transport: asyncio.Transport

    def __init__(self, proxy: Proxy, listener: Listener = PLAIN) -> None:
        self.proxy = proxy
        self.listener = listener
        self.outbox = proxy.outbox
        self.address = b"unknown"
        self.buffer = b""  # received, not yet part of a request being forwarded
        self.exchange: Exchange | None = None
        self.eof = False  # the client has sent all it will send
        self.closing = False  # nothing more is read or answered
        self.holds = 0  # why its reading is paused (BODY_WAITS, READ_AHEAD)
        self.write_paused = False
        self.last: tuple[bytes, h1.Request] | None = None  # the last head read, parsed
        # The last request routed, the proxy's generation then, and its service.
        self.routed: tuple[h1.Request, int, Service] | None = None
        self.since = time.monotonic()  # when it began to wait for a request head
        self.patience = proxy.limits.header_timeout  # how long it may wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = str(peer[0]).encode()
        self.proxy.clients.add(self)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.buffer = self.buffer + data if self.buffer else data
            self.next()
            return
        if exchange.tunnel:
            exchange.tunnel_data(data)
            return
        if not exchange.request_body.done:
            data = exchange.request_data(data)
        self.buffer += data  # the next request, read ahead
        if len(self.buffer) > self.proxy.limits.max_header:
            self.hold(READ_AHEAD)

    def eof_received(self) -> bool:
        self.eof = True
        exchange = self.exchange
        if exchange is None:
            self.next()
        elif exchange.tunnel:
            exchange.client_ended()
        elif not exchange.request_body.done:  # the rest of the body will never come
            exchange.abandon()
            self.closing = True
            return False
        return True  # the answer can still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy.clients.discard(self)
        if self.exchange is not None:
            self.exchange.abandon()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None and self.exchange.upstream is not None:
            self.exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None and self.exchange.upstream is not None:
            self.exchange.upstream.resume_reading()

    def next(self) -> None:
        """Take the requests waiting in the buffer, one at a time."""
        scan = self.proxy.limits.max_header + len(_HEAD_END)
        while self.exchange is None and not self.closing:
            buffer = self.buffer
            end = buffer.find(_HEAD_END, 0, scan)
            if end < 0:
                self._wait_for_head()
                return
            self.buffer = buffer[end + len(_HEAD_END) :]
            self._request(buffer[:end])

    def _wait_for_head(self) -> None:
        """No whole request head is there: wait for more, unless there can be no more."""
        if len(self.buffer) > self.proxy.limits.max_header:
            self.reply(431, "request header too large\n", close=True)
        elif h1.BARE_LF_END.search(self.buffer):  # it will never end with CRLF CRLF
            self.reply(400, h1.BARE_LF, close=True)
        elif self.eof and self.buffer.strip():
            self.reply(400, "incomplete request\n", close=True)
        elif self.eof:  # the client has finished, and everything it sent was answered
            self.close()
        elif self.holds:
            self.release(READ_AHEAD)

    def _request(self, head: bytes) -> None:
        started = time.monotonic()
        try:
            request = self._parse(head)
        except h1.TooLarge as big:
            self.reply(431, str(big), close=True)
            return
        except h1.BadMessage as bad:
            self.reply(400, str(bad), close=True)
            return
        proxy = self.proxy
        if request.length > proxy.limits.max_body:
            self.reply(413, "request body too large\n", close=True)
            return
        service = self.service_for(request)
        if service is None:
            return
        track = service.split.choose()
        live = service.pick(track)
        if live is None:
            service.track(track).counters.record(503, time.monotonic() - started)
            self._refuse(request, 503, "no instance ready\n")
            return
        exchange = self.exchange = Exchange(self, service, request, started)
        exchange.dispatch(live, started)
        if self.buffer and not exchange.request_body.done:  # the body's start came along
            buffer, self.buffer = self.buffer, b""
            self.buffer = exchange.request_data(buffer)

    def service_for(self, request: h1.Request) -> Service | None:
        """The service a request goes to, by its route; None once refused (404, 503).
        The same request (the same head: `_parse`) goes where it went last time, as long
        as the proxy has had no new state since."""
        proxy = self.proxy
        routed = self.routed
        if routed is not None and routed[0] is request and routed[1] == proxy.generation:
            return routed[2]
        name = proxy.table.match(request.host, request.target)
        if name is None:
            proxy.unrouted += 1
            self._refuse(request, 404, "no route\n")
            return None
        service = proxy.services.get(name)
        if service is None:  # routed, but nothing was said about its instances yet
            self._refuse(request, 503, "no instance ready\n")
        else:
            self.routed = (request, proxy.generation, service)
        return service

    def _parse(self, head: bytes) -> h1.Request:
        """The request head, parsed; a client often sends the same head again."""
        last = self.last
        if last is not None and last[0] == head:
            return last[1]
        request = h1.parse_request(head, self.address, self.proxy.via, self.listener.proto)
        self.last = (head, request)
        return request

    def _refuse(self, request: h1.Request, status: int, text: str) -> None:
        """A reply of the proxy's own instead of the instance's. The request's body is
        left unread, so the connection closes if it has one."""
        self.reply(status, text, close=request.close or request.length > 0 or request.chunked)

    def send(self, data: bytes) -> None:
        if not self.closing:
            self.outbox.write(self.transport, data)

    def close(self) -> None:
        """Close the connection once what was written to it is out."""
        if not self.closing:
            self.closing = True
            self.outbox.close(self.transport)

    def reply(self, status: int, text: str, close: bool) -> None:
        self.send(h1.reply(status, text, close, self.listener.extra))
        self.ready(close)

    def ready(self, close: bool, now: float | None = None) -> None:
        """An answer was sent: close, or wait for the next request."""
        if close:
            self.close()
        else:
            self.since = time.monotonic() if now is None else now
            self.patience = self.proxy.limits.idle_timeout

    def hold(self, why: int) -> None:
        if not self.holds and not self.closing:
            self.transport.pause_reading()
        self.holds |= why

    def release(self, why: int) -> None:
        if self.holds & why:
            self.holds &= ~why
            if not self.holds and not self.closing:
                self.transport.resume_reading()

    def look(self, now: float) -> None:
        """Close the connection if no request head came in time; let the exchange see
        whether its instance is past one of its timeouts."""
        exchange = self.exchange
        if exchange is None:
            if now - self.since > self.patience:
                self.close()
        else:
            exchange.look(now)

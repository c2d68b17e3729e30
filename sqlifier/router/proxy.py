"""The embedded data plane: an HTTP/1.1 reverse proxy on asyncio protocols.

Routing. One request at a time per client connection (HTTP/1.1 keep-alive; a request
sent before the previous answer is read after it), routed by `RouteTable`, split between
tracks by `Split`, balanced round-robin (by weight) over the usable backends of the
chosen track. The canary's requests go to stable when the canary has no usable backend.

Protocols, not streams. A client connection is a `_Client` protocol, a connection to an
instance an `_Upstream`, and an `_Exchange` joins the two for one request. All the work
happens in the transports' callbacks: a request head that arrives is parsed (`h1`),
routed and written to a kept-alive connection in the same callback, and the answer is
passed to the client as its bytes arrive. Only opening a connection to an instance runs
as a task. A connection often carries the same head again and again (a client polling,
an instance answering alike), so each keeps the last head it read and what was made of
it: a repeated head costs one comparison.

Writes are gathered during a turn of the event loop and made together at its end
(`_Outbox`): a write wakes the process that reads it, and waking one that sleeps on
another CPU costs more than the write itself; in a row, the writes of a turn find their
readers awake after the first.

Bodies stream in both directions, never held whole: by `Content-Length`, chunk by chunk
(trailers included), or, for a response without either, until the instance closes.
Backpressure: when a transport's write buffer fills, its protocol's `pause_writing()`
pauses reading on the other side until `resume_writing()`: the client's reading while the
instance's connection is full, the instance's while the client's is. Body bytes that
arrive while a connection is being opened wait, up to 64 KiB; reading stops beyond that.

Connections to instances are kept alive, in a pool per backend (the most recent first).
One idle for 2 s or more is closed rather than reused; one the instance closes while it
is idle leaves the pool.

Timeouts take no timer per request: a connection notes when it began to wait, and one
timer for the whole proxy looks over the client connections every second (more often if
a limit is shorter than 4 s). A client has `header_timeout` for its first request head
and `idle_timeout` for each next one; an instance has `response_timeout` for its
response head once it has the whole request (504 past it). Opening a connection has
`connect_timeout`.

Failures. A request that cannot connect to its instance is retried once on another of
its track (nothing was sent, whatever the method), and the instance is ejected until a
later state shows its readiness probe passed again (a larger `probe`). A request whose
reused connection fails before any answer is sent again on a fresh one when it is
idempotent and has no body. Otherwise the instance failed: that counts against it, and
the client gets a 502 (a 504 when no head came in time) or, if its answer had begun, a
connection cut short. A client that goes away just ends its exchange: nothing counts
against the instance, and the connection to the instance is closed unless the answer
was relayed whole.

Counts. An answer is counted on its backend as it goes; the counts of each (service,
track) are brought up to date from its backends' when they are read, not on every
request.

Replies of its own are short plain text and name no internals: 404 when no route
matches, 503 when the route's service has no ready (or reachable) instance, 502 and 504
as above, 400/413/431 for requests it will not forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlifier.router import h1
from sqlifier.router.metrics import Counters
from sqlifier.router.routes import RouteTable, Split, Track
from sqlifier.router.state import Backend, BackendState, DesiredState
from sqlifier.stack.model import Route

__all__ = ["Limits", "Proxy"]

_HEAD_END = h1.HEAD_END
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS"))
_PENDING_MAX = 64 * 1024  # body bytes kept while a connection to the instance opens
_POOL_IDLE = 2.0  # seconds a kept-alive upstream connection may wait to be reused
_POOL_MAX = 64  # idle connections kept per backend
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_SWEEP = 1.0  # seconds between looks for connections that waited too long

# Why a client's reading is paused: bits of `_Client.holds`.
_BODY_WAITS = 1  # the request body has nowhere to go: no connection yet, or it is full
_READ_AHEAD = 2  # the next request came early, and more than a head of it is waiting


@dataclass(frozen=True)
class Limits:
    max_header: int = 64 * 1024
    max_body: int = 100 * 1024 * 1024
    header_timeout: float = 10.0  # a new connection's first request head
    idle_timeout: float = 60.0  # a kept-alive client connection waiting for its next request
    connect_timeout: float = 5.0
    response_timeout: float = 60.0  # an instance's response head


class _Outbox:
    """Writes gathered during a turn of the event loop, and made together at its end.

    A write wakes the process that reads it; when that process sleeps on another CPU,
    waking it costs this one more than the write does (an interprocessor interrupt, and
    in a virtual machine a trip through the hypervisor). Made one after the other, the
    writes of a turn find their readers awake after the first. A connection to close
    is closed in its turn, after what was written to it."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[tuple[asyncio.Transport, bytes | None]] = []

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        if not self._items:
            asyncio.get_running_loop().call_soon(self._flush)
        self._items.append((transport, data))

    def close(self, transport: asyncio.Transport) -> None:
        if not self._items:
            asyncio.get_running_loop().call_soon(self._flush)
        self._items.append((transport, None))

    def _flush(self) -> None:
        items, self._items = self._items, []
        for transport, data in items:
            if transport.is_closing():
                continue
            if data is None:
                transport.close()
            else:
                transport.write(data)


class _Upstream(asyncio.Protocol):
    """One connection to an instance: idle in its backend's pool, or carrying an exchange."""

    __slots__ = (
        "exchange",
        "idle_since",
        "last",
        "live",
        "outbox",
        "paused",
        "sock",
        "transport",
    )

    transport: asyncio.Transport
    sock: Any  # the socket, for TCP_QUICKACK

    def __init__(self, live: _Live, outbox: _Outbox) -> None:
        self.live = live
        self.outbox = outbox
        self.exchange: _Exchange | None = None
        self.idle_since = 0.0
        self.paused = False  # reading paused: the client's connection is full
        self.last: tuple[bytes, h1.Response] | None = None  # the last head read, parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:  # an idle connection has nothing to say: it is unusable
            self.transport.close()
        else:
            self.exchange.response_data(self, data)

    def eof_received(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_ended(eof=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.exchange is not None:
            self.exchange.upstream_ended(eof=False)
        else:
            with contextlib.suppress(ValueError):
                self.live.idle.remove(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.hold(_BODY_WAITS)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.release(_BODY_WAITS)

    def send(self, data: bytes) -> None:
        self.outbox.write(self.transport, data)

    def parse(self, head: bytes, via: bytes) -> h1.Response:
        """The response head, parsed; an instance often sends the same head again."""
        last = self.last
        if last is not None and last[0] == head:
            return last[1]
        response = h1.parse_response(head, via)
        self.last = (head, response)
        return response

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self.transport.resume_reading()

    def quick_ack(self) -> None:
        """Acknowledge what arrived at once. An instance that writes a response in two
        parts with Nagle's algorithm on holds the second back until the first is
        acknowledged, and Linux delays that acknowledgement by up to 40 ms on a
        connection in use; this is only needed when a response came in parts."""
        if _QUICKACK is not None and self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


@dataclass(eq=False)
class _Live:
    """A backend as the proxy runs it: its spec, its counters, its idle connections."""

    spec: Backend
    service: str
    counters: Counters = field(default_factory=Counters)
    inflight: int = 0
    ejected_at: int | None = None  # the probe count when it was ejected
    usable: bool = False  # ready, not ejected, still in the desired state
    idle: list[_Upstream] = field(default_factory=list)
    folded: Counters = field(default_factory=Counters)  # what its track's counters have

    def checkout(self) -> _Upstream | None:
        """The most recent idle connection, if one is fresh enough to reuse."""
        while self.idle:
            upstream = self.idle.pop()
            fresh = time.monotonic() - upstream.idle_since < _POOL_IDLE
            if fresh and not upstream.transport.is_closing():
                return upstream
            upstream.transport.close()
        return None

    def checkin(self, upstream: _Upstream) -> None:
        if self.usable and len(self.idle) < _POOL_MAX:
            if upstream.paused:
                upstream.resume_reading()  # to notice when the instance closes it
            upstream.idle_since = time.monotonic()
            self.idle.append(upstream)
        else:
            upstream.transport.close()

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for upstream in idle:
            upstream.transport.close()


@dataclass(eq=False)
class _Rotation:
    """One track of a service: its usable backends, taken in turn, and its counters."""

    backends: list[_Live] = field(default_factory=list)
    turn: int = 0
    counters: Counters = field(default_factory=Counters)


@dataclass(eq=False)
class _Service:
    """A routed service: its canary's share, its stable and canary tracks."""

    split: Split = field(default_factory=Split)
    stable: _Rotation = field(default_factory=_Rotation)
    canary: _Rotation = field(default_factory=_Rotation)

    def track(self, track: Track) -> _Rotation:
        return self.canary if track is Track.CANARY else self.stable

    def pick(self, track: Track, avoid: _Live | None = None) -> _Live | None:
        """The next backend of `track` (the canary's requests go to stable when it has
        none), other than `avoid`."""
        rotation = self.canary if track is Track.CANARY else self.stable
        backends = rotation.backends or self.stable.backends
        if not backends:
            return None
        if backends is not rotation.backends:
            rotation = self.stable
        turn = rotation.turn
        rotation.turn = turn + 1
        live = backends[turn % len(backends)]
        if live is avoid:
            others = [b for b in backends if b is not avoid]
            return others[turn % len(others)] if others else None
        return live


class Proxy:
    def __init__(self, limits: Limits | None = None, name: str = "sqlifier") -> None:
        self.limits = limits or Limits()
        self.name = name
        self.via = f"Via: 1.1 {name}".encode()
        self.table = RouteTable({})
        self._routes: dict[str, tuple[Route, ...]] = {}
        self._services: dict[str, _Service] = {}
        self._backends: dict[str, _Live] = {}
        self._retiring: list[_Live] = []  # gone from the state, with requests in flight
        self._connecting: set[asyncio.Task[None]] = set()  # held until done (asyncio's rule)
        self._clients: set[_Client] = set()
        self._outbox = _Outbox()
        self._sweeping: asyncio.TimerHandle | None = None
        self.unrouted = 0  # requests no route matched
        self.generation = 0

    async def serve(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Client(self), host, port, backlog=1024)
        if self._sweeping is None:
            self._sweep()
        return server

    def _sweep(self) -> None:
        """Look for connections that waited too long, now and every so often after."""
        now = time.monotonic()
        for client in list(self._clients):
            client.look(now)
        limits = self.limits
        shortest = min(limits.header_timeout, limits.idle_timeout, limits.response_timeout)
        loop = asyncio.get_running_loop()
        self._sweeping = loop.call_later(min(_SWEEP, shortest / 4), self._sweep)

    # --- what the agent tells it, what it tells the agent ---------------------------------

    def apply(self, state: DesiredState) -> None:
        """Take a new desired state; in force for the next request."""
        self._fold()
        if state.routes != self._routes:
            self._routes = dict(state.routes)
            self.table = RouteTable(state.routes)
        wanted = {b.id: (name, b) for name, s in state.services.items() for b in s.backends}
        for key in list(self._backends):
            if key not in wanted:
                gone = self._backends.pop(key)
                gone.usable = False
                gone.close_idle()
                if gone.inflight:
                    self._retiring.append(gone)
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
        for live in self._backends.values():
            live.usable = live.spec.state is BackendState.READY and live.ejected_at is None
        for name, service in self._services.items():
            mine = [b for b in self._backends.values() if b.service == name and b.usable]
            for track in Track:
                service.track(track).backends = _weighted(mine, track)

    def stats(self) -> dict[str, Any]:
        self._fold()
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
                name: {track.value: service.track(track).counters.to_json() for track in Track}
                for name, service in self._services.items()
            },
        }

    def _fold(self) -> None:
        """Bring each track's counters up to date with its backends'. An answer is
        counted on its backend alone as it goes, and added to its track's here, when
        the agent asks (once a second) rather than on every request."""
        for live in [*self._backends.values(), *self._retiring]:
            service = self._services.get(live.service)
            if service is None:
                continue
            new = live.counters.minus(live.folded)
            new.failed = 0  # a track counts what the client got instead: 502, 503, 504
            service.track(live.spec.track).counters.add(new)
            live.folded = Counters.from_json(live.counters.to_json())
        self._retiring = [live for live in self._retiring if live.inflight]

    def close_idle(self) -> None:
        """Close every kept-alive connection to the instances (the proxy is stopping)."""
        for live in self._backends.values():
            live.close_idle()

    def in_flight(self) -> int:
        return sum(live.inflight for live in self._backends.values())

    # --- for the connections --------------------------------------------------------------

    def _eject(self, live: _Live) -> None:
        if live.ejected_at is None:
            live.ejected_at = live.spec.probe
            live.close_idle()
            self._rebuild()

    def _open(self, exchange: _Exchange, live: _Live) -> None:
        """Open a connection to `live` for `exchange`: the one step that takes a task."""
        task = asyncio.get_running_loop().create_task(exchange.connect(live))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)


class _Client(asyncio.Protocol):
    """One client connection: its requests, read and answered one at a time."""

    __slots__ = (
        "address",
        "buffer",
        "closing",
        "eof",
        "exchange",
        "holds",
        "last",
        "outbox",
        "patience",
        "proxy",
        "since",
        "transport",
        "write_paused",
    )

    transport: asyncio.Transport

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.outbox = proxy._outbox
        self.address = b"unknown"
        self.buffer = b""  # received, not yet part of a request being forwarded
        self.exchange: _Exchange | None = None
        self.eof = False  # the client has sent all it will send
        self.closing = False  # nothing more is read or answered
        self.holds = 0  # why its reading is paused (_BODY_WAITS, _READ_AHEAD)
        self.write_paused = False
        self.last: tuple[bytes, h1.Request] | None = None  # the last head read, parsed
        self.since = time.monotonic()  # when it began to wait for a request head
        self.patience = proxy.limits.header_timeout  # how long it may wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = str(peer[0]).encode()
        self.proxy._clients.add(self)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.buffer = self.buffer + data if self.buffer else data
            self.next()
            return
        if not exchange.request_body.done:
            data = exchange.request_data(data)
        self.buffer += data  # the next request, read ahead
        if len(self.buffer) > self.proxy.limits.max_header:
            self.hold(_READ_AHEAD)

    def eof_received(self) -> bool:
        self.eof = True
        exchange = self.exchange
        if exchange is None:
            self.next()
        elif not exchange.request_body.done:  # the rest of the body will never come
            exchange.abandon()
            self.closing = True
            return False
        return True  # the answer can still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy._clients.discard(self)
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
        elif self.eof and self.buffer.strip():
            self.reply(400, "incomplete request\n", close=True)
        elif self.eof:  # the client has finished, and everything it sent was answered
            self.close()
        elif self.holds:
            self.release(_READ_AHEAD)

    def _request(self, head: bytes) -> None:
        started = time.monotonic()
        try:
            request = self._parse(head)
        except h1.BadMessage as bad:
            self.reply(400, str(bad), close=True)
            return
        proxy = self.proxy
        if request.length > proxy.limits.max_body:
            self.reply(413, "request body too large\n", close=True)
            return
        name = proxy.table.match(request.host, request.target)
        if name is None:
            proxy.unrouted += 1
            self._refuse(request, 404, "no route\n")
            return
        service = proxy._services.get(name)
        if service is None:  # routed, but nothing was said about its instances yet
            self._refuse(request, 503, "no instance ready\n")
            return
        track = service.split.choose()
        live = service.pick(track)
        if live is None:
            service.track(track).counters.record(503, time.monotonic() - started)
            self._refuse(request, 503, "no instance ready\n")
            return
        exchange = self.exchange = _Exchange(self, service, request, started)
        exchange.dispatch(live)
        if self.buffer and not exchange.request_body.done:  # the body's start came along
            buffer, self.buffer = self.buffer, b""
            self.buffer = exchange.request_data(buffer)

    def _parse(self, head: bytes) -> h1.Request:
        """The request head, parsed; a client often sends the same head again."""
        last = self.last
        if last is not None and last[0] == head:
            return last[1]
        request = h1.parse_request(head, self.address, self.proxy.via)
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
        self.send(h1.reply(status, text, close))
        self.ready(close)

    def ready(self, close: bool) -> None:
        """An answer was sent: close, or wait for the next request."""
        if close:
            self.close()
        else:
            self.since = time.monotonic()
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
        """Close the connection if no request head came in time; answer 504 if the
        instance did not answer its request in time."""
        exchange = self.exchange
        if exchange is None:
            if now - self.since > self.patience:
                self.close()
        elif exchange.waiting() and now - exchange.sent > self.proxy.limits.response_timeout:
            exchange.fail(504, "the instance did not answer\n")


class _Exchange:
    """One request on its way: from its head until the end of the instance's answer."""

    __slots__ = (
        "client",
        "close",
        "done",
        "head_buffer",
        "keep",
        "live",
        "pending",
        "request",
        "request_body",
        "response_body",
        "retried",
        "reused",
        "sent",
        "service",
        "started",
        "status",
        "upstream",
    )

    live: _Live  # set by dispatch()

    def __init__(
        self, client: _Client, service: _Service, request: h1.Request, started: float
    ) -> None:
        self.client = client
        self.service = service
        self.request = request
        self.started = started
        self.request_body = request.body()
        self.pending = b""  # body received while there was no connection yet
        self.upstream: _Upstream | None = None
        self.sent = 0.0  # when the instance had the whole request
        self.reused = False  # the connection came from the pool
        self.retried = False
        self.head_buffer = b""  # a response head so far
        self.status = 0  # the instance's, once its head came
        self.response_body: h1.Body | None = None  # once the client has had the head
        self.close = False  # close the client's connection after the answer
        self.keep = False  # the instance's connection can carry another request
        self.done = False

    # --- the request ----------------------------------------------------------------------

    def dispatch(self, live: _Live) -> None:
        """Send the request to `live`, on a kept-alive connection or a new one."""
        self.live = live
        live.inflight += 1
        upstream = live.checkout()
        if upstream is None:
            self.client.proxy._open(self, live)
        else:
            self.attach(upstream, reused=True)

    async def connect(self, live: _Live) -> None:
        loop = asyncio.get_running_loop()
        outbox = self.client.outbox
        try:
            async with asyncio.timeout(self.client.proxy.limits.connect_timeout):
                _, upstream = await loop.create_connection(
                    lambda: _Upstream(live, outbox), live.spec.host, live.spec.port
                )
        except (OSError, TimeoutError):
            if not self.done:
                self._unreachable()
            return
        if self.done:  # the client went away meanwhile
            upstream.transport.close()
        else:
            self.attach(upstream, reused=False)

    def _unreachable(self) -> None:
        """No connection: the instance is ejected, and another of its track is tried once
        (nothing was sent)."""
        live = self.live
        self.client.proxy._eject(live)
        other = None if self.retried else self.service.pick(live.spec.track, live)
        if other is None:
            self.fail(503, "no instance reachable\n")
            return
        live.counters.failed += 1
        self._leave()
        self.retried = True
        self.dispatch(other)

    def attach(self, upstream: _Upstream, reused: bool) -> None:
        """Send the head, and the body so far, on `upstream`."""
        self.upstream = upstream
        self.reused = reused
        upstream.exchange = self
        client = self.client
        if client.write_paused:
            upstream.pause_reading()
        if client.holds:
            client.release(_BODY_WAITS)
        data = self.request.head
        if self.pending:
            data += self.pending
            self.pending = b""
        upstream.send(data)
        if self.request_body.done:
            self.sent = time.monotonic()

    def request_data(self, data: bytes) -> bytes:
        """Pass on what of `data` is the request's body; return what follows it."""
        try:
            body, rest = self.request_body.take(data)
        except h1.BadMessage:  # the client broke its own request
            self.abandon()
            self.client.close()
            return b""
        upstream = self.upstream
        if upstream is None:
            self.pending += body
            if len(self.pending) > _PENDING_MAX:
                self.client.hold(_BODY_WAITS)
        else:
            upstream.send(body)
            if self.request_body.done:
                self.sent = time.monotonic()
        return rest

    # --- the answer -----------------------------------------------------------------------

    def response_data(self, upstream: _Upstream, data: bytes) -> None:
        """Relay what the instance sent: its head (once, rewritten), then its body."""
        body = self.response_body
        head = b""
        if body is None:
            response = self._final_head(upstream, data)
            if response is None:
                return
            data, self.head_buffer = self.head_buffer, b""
            body, head = self._begin(response)
        try:
            piece, rest = body.take(data)
        except h1.BadMessage:
            self.fail(502, "the instance failed\n")
            return
        self.client.send(head + piece)
        self.response_body = body
        if body.done:
            self._complete(clean=not rest)
        else:
            upstream.quick_ack()

    def _final_head(self, upstream: _Upstream, data: bytes) -> h1.Response | None:
        """The final response head, once it is whole (1xx heads before it are passed on);
        what follows it is left in `head_buffer`."""
        proxy = self.client.proxy
        limit = proxy.limits.max_header
        buffer = self.head_buffer + data if self.head_buffer else data
        while True:
            end = buffer.find(_HEAD_END, 0, limit + len(_HEAD_END))
            if end < 0:
                self.head_buffer = buffer
                if len(buffer) > limit:
                    self.fail(502, "the instance failed\n")
                else:
                    upstream.quick_ack()
                return None
            try:
                response = upstream.parse(buffer[:end], proxy.via)
            except h1.BadMessage:
                self.fail(502, "the instance failed\n")
                return None
            buffer = buffer[end + len(_HEAD_END) :]
            if not response.interim:
                self.head_buffer = buffer
                return response
            if not self.request.http10:  # an HTTP/1.0 client knows no interim answers
                self.client.send(response.head + _HEAD_END)

    def _begin(self, response: h1.Response) -> tuple[h1.Body, bytes]:
        """How the answer's body ends, and the head to send the client."""
        request = self.request
        body = response.body(request.method == b"HEAD", decode=request.http10)
        decoded = request.http10 and isinstance(body, h1.Chunked)
        until_close = isinstance(body, h1.UntilClose)
        self.status = response.status
        # A request body the instance answered before reading it whole is never read.
        self.close = request.close or until_close or decoded or not self.request_body.done
        self.keep = not response.close and not until_close
        return body, response.encode(self.close, decoded)

    def waiting(self) -> bool:
        """Whether the instance has the whole request and has yet to answer."""
        return self.sent > 0 and not self.status

    # --- the end --------------------------------------------------------------------------

    def _complete(self, clean: bool) -> None:
        """The answer was relayed whole (clean: and nothing came after it)."""
        self.live.counters.record(self.status, time.monotonic() - self.started)
        self._leave(pool=clean and self.keep and self.request_body.done)
        self._end()
        client = self.client
        client.ready(self.close)
        if client.buffer or client.eof:
            client.next()

    def upstream_ended(self, eof: bool) -> None:
        """The instance closed the connection (eof), or the connection broke."""
        if eof and isinstance(self.response_body, h1.UntilClose):
            self._complete(clean=False)
        elif self.reused and not self.status and not self.head_buffer:
            self._stale()
        else:
            self.fail(502, "the instance failed\n")

    def _stale(self) -> None:
        """A reused connection failed before any answer: the instance most likely closed
        it while it was idle. Sent again on a fresh one, if that is safe."""
        live = self.live
        live.close_idle()  # its other idle connections are likely stale too
        request = self.request
        if self.retried or request.method not in _IDEMPOTENT or request.length or request.chunked:
            self.fail(502, "the instance failed\n")
            return
        self._leave()
        self.retried = True
        self.dispatch(live)

    def fail(self, status: int, text: str) -> None:
        """The instance failed the request: that counts against it. The client gets
        `status`, or, if its answer had begun, a connection cut short."""
        live = self.live
        live.counters.failed += 1
        self.service.track(live.spec.track).counters.record(status, time.monotonic() - self.started)
        self._leave()
        self._end()
        client = self.client
        if self.response_body is not None:
            client.close()
            return
        # After a 503 nothing was sent: the client may go on, if its body was read whole.
        keep = status == 503 and self.request_body.done and not self.request.close
        client.reply(status, text, close=not keep)
        client.next()

    def abandon(self) -> None:
        """The client went away, or broke its request: the exchange just ends. Nothing
        counts against the instance; an answer that had begun counts as it was."""
        if self.status:
            self.live.counters.record(self.status, time.monotonic() - self.started)
        self._leave()
        self._end()

    def _leave(self, pool: bool = False) -> None:
        """The attempt on `live` is over: it is no longer in flight there, and its
        connection goes back to the pool or is closed."""
        live = self.live
        live.inflight -= 1
        upstream = self.upstream
        if upstream is None:
            return
        self.upstream = None
        upstream.exchange = None
        if self.client.holds:
            self.client.release(_BODY_WAITS)
        if pool:
            live.checkin(upstream)
        else:
            upstream.transport.close()

    def _end(self) -> None:
        self.done = True
        self.client.exchange = None


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

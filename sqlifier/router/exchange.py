"""One request on its way through the embedded proxy (`Exchange`): from its head until
the end of the instance's answer.

The request head is written to a kept-alive connection, or to a new one once it is open
(body bytes that arrive meanwhile wait, up to 64 KiB); the answer's head is read whole,
rewritten and passed on, then its body as its bytes arrive. Failures are told apart here:
an instance that cannot be reached is ejected and another of its track tried once; an
idempotent request without a body is sent once more when its instance says nothing
before the service's first-byte timeout (elsewhere; the silent one is ejected) or closes
the connection before answering; otherwise the instance failed (502, 504 past the
first-byte timeout, or a connection cut short once its answer had begun or paused past
the idle timeout). A client that goes away just ends its exchange.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sqlifier.router import h1
from sqlifier.router.flow import BODY_WAITS, READ_AHEAD
from sqlifier.router.upstreams import Live, Service, Upstream

if TYPE_CHECKING:
    from sqlifier.router.client import Client

__all__ = ["Exchange"]

_HEAD_END = h1.HEAD_END
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS"))
_PENDING_MAX = 64 * 1024  # body bytes kept while a connection to the instance opens


class Exchange:
    """One request on its way: from its head until the end of the instance's answer."""

    __slots__ = (
        "client",
        "close",
        "done",
        "head_buffer",
        "heard",
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
        "tunnel",
        "upstream",
    )

    live: Live  # set by dispatch()

    def __init__(
        self, client: Client, service: Service, request: h1.Request, started: float
    ) -> None:
        self.client = client
        self.service = service
        self.request = request
        self.started = started
        self.request_body = request.body()
        self.pending = b""  # body received while there was no connection yet
        self.upstream: Upstream | None = None
        self.sent = 0.0  # when the instance had the whole request
        self.heard = 0.0  # when the instance's answer last sent bytes (0: none yet)
        self.reused = False  # the connection came from the pool
        self.retried = False
        self.head_buffer = b""  # a response head so far
        self.status = 0  # the instance's, once its head came
        self.response_body: h1.Body | None = None  # once the client has had the head
        self.close = False  # close the client's connection after the answer
        self.keep = False  # the instance's connection can carry another request
        self.done = False
        self.tunnel = False  # upgraded (101): bytes pass both ways until one side ends

    # --- the request ----------------------------------------------------------------------

    def dispatch(self, live: Live, now: float) -> None:
        """Send the request to `live`, on a kept-alive connection or a new one (`now`:
        the time, read once by the caller)."""
        self.live = live
        live.inflight += 1
        upstream = live.checkout(now)
        if upstream is None:
            self.client.proxy.open(self, live)
        else:
            self.attach(upstream, True, now)

    async def connect(self, live: Live) -> None:
        loop = asyncio.get_running_loop()
        outbox = self.client.outbox
        try:
            async with asyncio.timeout(self.service.timeouts.connect):
                _, upstream = await loop.create_connection(
                    lambda: Upstream(live, outbox), live.spec.host, live.spec.port
                )
        except (OSError, TimeoutError):
            if not self.done:
                self._unreachable()
            return
        if self.done:  # the client went away meanwhile
            upstream.transport.close()
        else:
            self.attach(upstream, False, time.monotonic())

    def _unreachable(self) -> None:
        """No connection: the instance is ejected, and another of its track is tried once
        (nothing was sent)."""
        live = self.live
        self.client.proxy.eject(live)
        other = None if self.retried else self.service.pick(live.spec.track, live)
        if other is None:
            self.fail(503, "no instance reachable\n")
            return
        live.counters.failed += 1
        self._leave()
        self.retried = True
        self.dispatch(other, time.monotonic())

    def attach(self, upstream: Upstream, reused: bool, now: float) -> None:
        """Send the head, and the body so far, on `upstream`."""
        self.upstream = upstream
        self.reused = reused
        upstream.exchange = self
        client = self.client
        if client.write_paused:
            upstream.pause_reading()
        if client.holds:
            client.release(BODY_WAITS)
        data = self.request.head
        if self.pending:
            data += self.pending
            self.pending = b""
        upstream.send(data)
        if self.request_body.done:
            self.sent = now

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
                self.client.hold(BODY_WAITS)
        else:
            upstream.send(body)
            if self.request_body.done:
                self.sent = time.monotonic()
        return rest

    # --- the answer -----------------------------------------------------------------------

    def response_data(self, upstream: Upstream, data: bytes) -> None:
        """Relay what the instance sent: its head (once, rewritten), then its body."""
        self.heard = now = time.monotonic()
        if self.tunnel:
            self.client.send(data)
            return
        body = self.response_body
        head = b""
        if body is None:
            if not self.head_buffer:
                whole = upstream.whole(data)
                if whole is not None:
                    self._whole(whole[0], data, whole[1], now)
                    return
            response = self._final_head(upstream, data)
            if response is None:
                return
            if response.upgrade:
                self._upgrade(upstream, response)
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
            self._complete(not rest, now)
        else:
            upstream.quick_ack()

    def _whole(self, response: h1.Response, data: bytes, start: int, now: float) -> None:
        """The whole answer came at once, its head one the connection read before (the
        common case, told by `Upstream.whole`): what `_begin` and `Body.take` would make
        of it, without the steps a body arriving in parts needs."""
        request = self.request
        if request.method == b"HEAD":  # no body, whatever its Content-Length says
            body, clean = b"", start == len(data)
        else:
            body, clean = data[start:], True
        self.status = response.status
        close = self.close = request.close or not self.request_body.done
        self.keep = not response.close
        client = self.client
        client.send(response.encode(close, False, client.listener.extra) + body)
        self.response_body = h1.NO_BODY
        self._complete(clean, now)

    def _final_head(self, upstream: Upstream, data: bytes) -> h1.Response | None:
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
        return body, response.encode(self.close, decoded, self.client.listener.extra)

    def look(self, now: float) -> None:
        """Past a phase's timeout: a request still waiting for its answer's first byte is
        tried once on another instance when that is safe (504 otherwise), and an answer
        (or an upgraded connection) that stopped coming fails."""
        timeouts = self.service.timeouts
        if self.tunnel:
            if now - self.heard > timeouts.idle:
                self.end_tunnel()
            return
        if not self.sent:
            return
        if not self.heard:
            if now - self.sent > timeouts.first_byte:
                self._no_first_byte()
        elif now - self.heard > timeouts.idle:
            self.fail(504, "the instance did not answer\n")

    def _no_first_byte(self) -> None:
        """The instance has the request and says nothing. It may be hung: when another
        instance can take its traffic it is ejected (until its readiness probe passes
        again), and an idempotent request without a body goes to that one instead."""
        live = self.live
        other = self.service.pick(live.spec.track, live)
        if other is not None:
            self.client.proxy.eject(live)
        if other is None or not self._retryable():
            self.fail(504, "the instance did not answer\n")
            return
        live.counters.failed += 1
        self._retry(other)

    def _retryable(self) -> bool:
        """Sending the request again cannot do twice what the client asked once."""
        request = self.request
        idempotent = request.method in _IDEMPOTENT and not request.length
        return idempotent and not request.chunked and not self.retried

    def _retry(self, live: Live) -> None:
        self._leave()
        self.retried = True
        self.sent = self.heard = 0.0
        self.head_buffer = b""
        self.dispatch(live, time.monotonic())

    # --- an upgraded connection -------------------------------------------------------------

    def _upgrade(self, upstream: Upstream, response: h1.Response) -> None:
        """A 101: the instance's answer to an `Upgrade` the client asked for. It counts as
        one request; from now on the bytes pass both ways as they come, until either side
        closes or neither sends anything for the service's idle timeout."""
        if not self.request.upgrade:
            self.fail(502, "the instance failed\n")  # an upgrade nobody asked for
            return
        self.status = 101
        self.tunnel = True
        self.live.counters.record(101, time.monotonic() - self.started)
        rest, self.head_buffer = self.head_buffer, b""
        client = self.client
        client.send(response.encode(close=False, decoded=False) + rest)
        if client.buffer:  # the client spoke the new protocol before the 101
            early, client.buffer = client.buffer, b""
            upstream.send(early)
            client.release(READ_AHEAD)

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the client on an upgraded connection."""
        self.heard = time.monotonic()
        if self.upstream is not None:
            self.upstream.send(data)

    def client_ended(self) -> None:
        """The client has sent all it will on an upgraded connection: the instance is told
        (it may still answer)."""
        upstream = self.upstream
        if upstream is not None:
            # After the writes gathered this turn (the outbox's flush was asked for first).
            asyncio.get_running_loop().call_soon(_write_eof, upstream.transport)

    def end_tunnel(self) -> None:
        """An upgraded connection ends: both sides are closed, once what was sent is out."""
        self._leave()
        self._end()
        self.client.close()

    # --- the end --------------------------------------------------------------------------

    def _complete(self, clean: bool, now: float) -> None:
        """The answer was relayed whole (clean: and nothing came after it)."""
        self.live.counters.record(self.status, now - self.started)
        self._leave(clean and self.keep and self.request_body.done, now)
        self._end()
        client = self.client
        client.ready(self.close, now)
        if client.buffer or client.eof:
            client.next()

    def upstream_ended(self, eof: bool) -> None:
        """The instance closed the connection (eof), or the connection broke."""
        if self.tunnel:
            self.end_tunnel()
        elif eof and isinstance(self.response_body, h1.UntilClose):
            self._complete(False, time.monotonic())
        elif self.reused and not self.heard:
            self._stale()
        elif not self.heard and self._retryable():
            # Gone before any answer (killed, crashed): another instance, if there is one.
            other = self.service.pick(self.live.spec.track, self.live)
            if other is None:
                self.fail(502, "the instance failed\n")
            else:
                self.live.counters.failed += 1
                self._retry(other)
        else:
            self.fail(502, "the instance failed\n")

    def _stale(self) -> None:
        """A reused connection failed before any answer: the instance most likely closed
        it while it was idle. Sent again on a fresh one, if that is safe."""
        live = self.live
        live.close_idle()  # its other idle connections are likely stale too
        if not self._retryable():
            self.fail(502, "the instance failed\n")
            return
        self._retry(live)

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
        if self.status and not self.tunnel:  # an upgrade was counted at its 101
            self.live.counters.record(self.status, time.monotonic() - self.started)
        self._leave()
        self._end()

    def _leave(self, pool: bool = False, now: float = 0.0) -> None:
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
            self.client.release(BODY_WAITS)
        if pool:
            live.checkin(upstream, now)
        else:
            upstream.transport.close()

    def _end(self) -> None:
        self.done = True
        self.client.exchange = None


def _write_eof(transport: asyncio.Transport) -> None:
    if not transport.is_closing() and transport.can_write_eof():
        transport.write_eof()

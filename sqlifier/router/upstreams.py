"""The instances' side of the embedded proxy: a connection to an instance (`Upstream`),
a backend as the proxy runs it with its pool of kept-alive connections and its counters
(`Live`), a track's backends taken in turn (`Rotation`), and a routed service's two
tracks (`Service`).

Connections to instances are kept alive in a pool per backend, the most recent first. One
idle for 2 s or more is closed rather than reused; one the instance closes while it is
idle leaves the pool. A track's rotation holds each usable backend as often as its weight
(reduced by the weights' greatest common divisor), interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlifier.router import h1
from sqlifier.router.flow import BODY_WAITS, Outbox
from sqlifier.router.metrics import Counters
from sqlifier.router.routes import Split, Track
from sqlifier.router.state import Backend
from sqlifier.stack.model import Timeouts

if TYPE_CHECKING:
    from sqlifier.router.exchange import Exchange

__all__ = ["Live", "Rotation", "Service", "Upstream", "weighted"]

_POOL_IDLE = 2.0  # seconds a kept-alive upstream connection may wait to be reused
_POOL_MAX = 64  # idle connections kept per backend
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_HEAD_END = h1.HEAD_END


class Upstream(asyncio.Protocol):
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

    def __init__(self, live: Live, outbox: Outbox) -> None:
        self.live = live
        self.outbox = outbox
        self.exchange: Exchange | None = None
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
            self.exchange.client.hold(BODY_WAITS)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.release(BODY_WAITS)

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

    def whole(self, data: bytes) -> tuple[h1.Response, int] | None:
        """When `data` is the last response head again (as read, byte for byte) with its
        whole body and nothing after it: that head, parsed, and where the body starts.
        The common case of a kept-alive connection, told in a few comparisons."""
        last = self.last
        if last is None:
            return None
        head, response = last
        size = response.sized
        start = len(head) + 4
        if (
            size < 0
            or len(data) != start + size
            or not data.startswith(head)
            or not data.startswith(_HEAD_END, start - 4)
        ):
            return None
        return response, start

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
class Live:
    """A backend as the proxy runs it: its spec, its counters, its idle connections."""

    spec: Backend
    service: str
    counters: Counters = field(default_factory=Counters)
    inflight: int = 0
    ejected_at: int | None = None  # the probe count when it was ejected
    usable: bool = False  # ready, not ejected, still in the desired state
    idle: list[Upstream] = field(default_factory=list)
    folded: Counters = field(default_factory=Counters)  # what its track's counters have

    def checkout(self, now: float) -> Upstream | None:
        """The most recent idle connection, if one is fresh enough to reuse."""
        while self.idle:
            upstream = self.idle.pop()
            fresh = now - upstream.idle_since < _POOL_IDLE
            if fresh and not upstream.transport.is_closing():
                return upstream
            upstream.transport.close()
        return None

    def checkin(self, upstream: Upstream, now: float) -> None:
        if self.usable and len(self.idle) < _POOL_MAX:
            if upstream.paused:
                upstream.resume_reading()  # to notice when the instance closes it
            upstream.idle_since = now
            self.idle.append(upstream)
        else:
            upstream.transport.close()

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for upstream in idle:
            upstream.transport.close()


@dataclass(eq=False)
class Rotation:
    """One track of a service: its usable backends, taken in turn, and its counters."""

    backends: list[Live] = field(default_factory=list)
    turn: int = 0
    counters: Counters = field(default_factory=Counters)


@dataclass(eq=False)
class Service:
    """A routed service: its canary's share, its stable and canary tracks."""

    split: Split = field(default_factory=Split)
    timeouts: Timeouts = field(default_factory=Timeouts)  # waiting on its instances
    stable: Rotation = field(default_factory=Rotation)
    canary: Rotation = field(default_factory=Rotation)

    def track(self, track: Track) -> Rotation:
        return self.canary if track is Track.CANARY else self.stable

    def pick(self, track: Track, avoid: Live | None = None) -> Live | None:
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


def weighted(backends: Iterable[Live], track: Track) -> list[Live]:
    """The rotation of a track: each backend as often as its weight, reduced by the
    weights' greatest common divisor, interleaved."""
    mine = [b for b in backends if b.spec.track is track]
    if not mine:
        return []
    divisor = 0
    for live in mine:
        divisor = math.gcd(divisor, live.spec.weight)
    counts = {id(b): b.spec.weight // divisor for b in mine}
    rotation: list[Live] = []
    while any(counts.values()):
        for live in mine:
            if counts[id(live)]:
                rotation.append(live)
                counts[id(live)] -= 1
    return rotation

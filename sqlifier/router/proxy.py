"""The embedded data plane: an HTTP/1.1 reverse proxy on asyncio protocols.

Routing. One request at a time per client connection (HTTP/1.1 keep-alive; a request
sent before the previous answer is read after it), routed by `RouteTable`, split between
tracks by `Split`, balanced round-robin (by weight) over the usable backends of the
chosen track. The canary's requests go to stable when the canary has no usable backend.

Protocols, not streams. A client connection is a `Client` protocol (client.py), a
connection to an instance an `Upstream` (upstreams.py), and an `Exchange` (exchange.py)
joins the two for one request. All the work happens in the transports' callbacks: a
request head that arrives is parsed (`h1`), routed and written to a kept-alive connection
in the same callback, and the answer is passed to the client as its bytes arrive. Only
opening a connection to an instance runs as a task. A connection often carries the same
head again and again (a client polling, an instance answering alike), so each keeps the
last head it read and what was made of it: a repeated head costs one comparison. A
client's connection also keeps where its last request was routed (until the next state);
an instance's, the head it last sent the client: an answer that is that head again with
its whole body, and nothing after, is passed on in one step (`Exchange._whole`).

Writes are gathered during a turn of the event loop and made together at its end
(`Outbox`, flow.py): a write wakes the process that reads it, and waking one that sleeps on
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
and `idle_timeout` for each next one. Each service has its own timeouts on its instances
(`Timeouts`: connect, first byte, idle between reads of an answer).

Failures. A request that cannot connect to its instance is retried once on another of
its track (nothing was sent, whatever the method), and the instance is ejected until a
later state shows its readiness probe passed again (a larger `probe`). An idempotent
request without a body is also sent once more when its instance says nothing before the
first-byte timeout (to another instance, the silent one ejected: it may be hung), or
closes the connection before any answer (to another instance; to a fresh connection when
a reused one turned out to be closed). Otherwise the instance failed: that counts
against it, and the client gets a 502 (a 504 when no answer came in time) or, if its
answer had begun, a connection cut short. A client that goes away just ends its
exchange: nothing counts against the instance, and the connection to the instance is
closed unless the answer was relayed whole.

Upgrades. A request that asks for one (a WebSocket) is passed on with its `Upgrade`;
after the instance's 101 the exchange becomes a tunnel: bytes pass both ways as they
arrive until either side closes or neither sends anything for the service's idle
timeout. It counts as one request, at its 101.

Counts. An answer is counted on its backend as it goes; the counts of each (service,
track) are brought up to date from its backends' when they are read, not on every
request.

Replies of its own are short plain text and name no internals: 404 when no route
matches, 503 when the route's service has no ready (or reachable) instance, 502 and 504
as above, 400/413/431 for requests it will not forward.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from ssl import SSLContext
from typing import TYPE_CHECKING, Any

from sqlifier.router import h1
from sqlifier.router.client import PLAIN, Client, Listener
from sqlifier.router.flow import Outbox
from sqlifier.router.metrics import Counters
from sqlifier.router.routes import RouteTable, Split, Track
from sqlifier.router.state import BackendState, DesiredState
from sqlifier.router.upstreams import Live, Service, weighted
from sqlifier.stack.model import Route, Timeouts

if TYPE_CHECKING:
    from sqlifier.router.exchange import Exchange

__all__ = ["Limits", "Proxy"]

_SWEEP = 1.0  # seconds between looks for connections that waited too long


@dataclass(frozen=True)
class Limits:
    max_header: int = h1.MAX_HEAD  # a request's or a response's head
    max_body: int = 100 * 1024 * 1024
    header_timeout: float = 10.0  # a new connection's first request head
    idle_timeout: float = 60.0  # a kept-alive client connection waiting for its next request


class Proxy:
    def __init__(self, limits: Limits | None = None, name: str = "sqlifier") -> None:
        self.limits = limits or Limits()
        self.name = name
        self.via = f"Via: 1.1 {name}".encode()
        self.table = RouteTable({})
        self._routes: dict[str, tuple[Route, ...]] = {}
        self.services: dict[str, Service] = {}
        self._backends: dict[str, Live] = {}
        self._retiring: list[Live] = []  # gone from the state, with requests in flight
        self._connecting: set[asyncio.Task[None]] = set()  # held until done (asyncio's rule)
        self.clients: set[Client] = set()
        self.outbox = Outbox()
        self._sweeping: asyncio.TimerHandle | None = None
        self.unrouted = 0  # requests no route matched
        self._shortest = min(Timeouts().first_byte, Timeouts().idle)  # of the services' timeouts
        self.generation = 0

    async def serve(
        self,
        host: str,
        port: int,
        ssl: SSLContext | None = None,
        listener: Listener = PLAIN,
        client: type[Client] = Client,
    ) -> asyncio.Server:
        """Listen on host:port (over TLS with `ssl`); `client` answers each connection."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: client(self, listener), host, port, backlog=1024, ssl=ssl
        )
        if self._sweeping is None:
            self._sweep()
        return server

    def _sweep(self) -> None:
        """Look for connections that waited too long, now and every so often after."""
        now = time.monotonic()
        for client in list(self.clients):
            client.look(now)
        limits = self.limits
        shortest = min(limits.header_timeout, limits.idle_timeout, self._shortest)
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
                self._backends[key] = Live(spec, owner)
                continue
            if live.ejected_at is not None and spec.probe > live.ejected_at:
                live.ejected_at = None  # its readiness probe passed since
            live.spec, live.service = spec, owner
            if spec.state is not BackendState.READY:
                live.close_idle()
        for name in list(self.services):
            if name not in state.services:
                del self.services[name]
        for name, traffic in state.services.items():
            service = self.services.setdefault(name, Service())
            if service.split.canary_thousandths != traffic.canary:
                service.split = Split(traffic.canary)
            service.timeouts = traffic.timeouts
        self._shortest = min(
            (min(t.timeouts.first_byte, t.timeouts.idle) for t in state.services.values()),
            default=self._shortest,
        )
        self._rebuild()
        self.generation += 1

    def _rebuild(self) -> None:
        for live in self._backends.values():
            live.usable = live.spec.state is BackendState.READY and live.ejected_at is None
        for name, service in self.services.items():
            mine = [b for b in self._backends.values() if b.service == name and b.usable]
            for track in Track:
                service.track(track).backends = weighted(mine, track)

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
                for name, service in self.services.items()
            },
        }

    def _fold(self) -> None:
        """Bring each track's counters up to date with its backends'. An answer is
        counted on its backend alone as it goes, and added to its track's here, when
        the agent asks (once a second) rather than on every request."""
        for live in [*self._backends.values(), *self._retiring]:
            service = self.services.get(live.service)
            if service is None:
                continue
            new = live.counters.minus(live.folded)
            new.failed = 0  # a track counts what the client got instead: 502, 503, 504
            service.track(live.spec.track).counters.add(new)
            live.folded = Counters.from_json(live.counters.to_json())
        self._retiring = [live for live in self._retiring if live.inflight]

    def usable_backends(self, service: str) -> list[Live]:
        """The backends of `service` that take new requests now (internal.py)."""
        return [b for b in self._backends.values() if b.service == service and b.usable]

    def close_idle(self) -> None:
        """Close every kept-alive connection to the instances (the proxy is stopping)."""
        for live in self._backends.values():
            live.close_idle()

    def in_flight(self) -> int:
        return sum(live.inflight for live in self._backends.values())

    # --- for the connections --------------------------------------------------------------

    def eject(self, live: Live) -> None:
        if live.ejected_at is None:
            live.ejected_at = live.spec.probe
            live.close_idle()
            self._rebuild()

    def open(self, exchange: Exchange, live: Live) -> None:
        """Open a connection to `live` for `exchange`: the one step that takes a task."""
        task = asyncio.get_running_loop().create_task(exchange.connect(live))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

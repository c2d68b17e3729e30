"""Internal addresses: how one service of a stack calls another by name.

Every service of a stack with more than one gets an internal listener of the data plane
on `internal_host()` (127.0.0.1), on a port chosen once and kept in `internal-ports.json`
in the stack's state folder: the same across restarts of instances, of the data plane and
of the agent. A request arriving there goes to that service whatever its Host and path,
through the same machinery as the front door: balanced over the ready instances, drained
instances taking nothing new, the canary share followed (the interleave counter is the
service's own, shared with the front door). A stateful service also gets one listener per
instance (`orders-0`), which reaches that instance only (and its replacement while it
restarts), the local counterpart of a headless service's per-pod names.

Each instance is told the addresses of the other services as `<NAME>_URL`
(`ORDERS_URL=http://127.0.0.1:41234`, `ORDERS_0_URL` for an instance): upper case, `-`
as `_`. A variable of the same name in the service's `env` wins.

The embedded data plane runs one asyncio server per listener whose clients
(`InternalClient`) skip the route table. The HAProxy plane renders a frontend per
listener (`haproxy_frontends`): a service's sets the service's number and takes the same
canary rules as the front door; an instance's uses a backend of that instance's servers
(`instance_backends`), which HAProxy cannot change at runtime, so a change of them
reloads HAProxy (gracefully, as a change of routes does).

The bind address is `internal_host()` (127.0.0.1). An instance that cannot reach the
machine's loopback (an isolated one, in its own network namespace) reaches the host at its
stack's bridge address instead: where a stack has isolated services, every listener is
bound there too, on the same port (`bridged`), and an isolated instance's `<NAME>_URL`
names that address. Those binds are made with IP_FREEBIND: the bridge comes and goes with
the isolated instances, and a listener bound to its address answers whenever it exists.
On HAProxy both binds belong to one frontend, named `loopback` and `bridge` (the
latter `transparent`, HAProxy's way to bind an address the machine may not have yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from sqlifier.router import h1
from sqlifier.router.client import Client
from sqlifier.router.proxy import Proxy
from sqlifier.router.routes import RESOLUTION, Track
from sqlifier.router.state import Backend, DesiredState, Listener
from sqlifier.router.upstreams import Service

__all__ = [
    "INTERNAL_HOST",
    "InternalClient",
    "InternalServers",
    "PortBook",
    "bridged",
    "discovery_env",
    "env_var",
    "haproxy_frontends",
    "instance_backends",
    "instance_structure",
    "internal_host",
    "reachable",
    "with_internal_services",
]

INTERNAL_HOST = "127.0.0.1"
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux's value; Python names it from 3.12
T = TypeVar("T")


def internal_host() -> str:
    """The address internal listeners bind to and instances are told to call."""
    return INTERNAL_HOST


def env_var(listener: str) -> str:
    """`orders` -> `ORDERS_URL`, `orders-0` -> `ORDERS_0_URL`."""
    return listener.upper().replace("-", "_") + "_URL"


def discovery_env(
    listeners: Iterable[Listener], service: str, host: str | None = None
) -> dict[str, str]:
    """The `<NAME>_URL` variables an instance of `service` gets: every other service's,
    at `host` (the loopback by default; an isolated instance's is its bridge)."""
    host = host or internal_host()
    return {
        env_var(listener.name): f"http://{listener.host}:{listener.port}"
        for listener in listeners
        if listener.service != service and listener.host == host
    }


def bridged(listeners: Iterable[Listener], bridge: str | None) -> tuple[Listener, ...]:
    """`listeners`, and with a bridge address each of them again on it (same name, same
    port): where an isolated instance reaches them from its namespace."""
    found = tuple(listeners)
    if bridge is None:
        return found
    return found + tuple(
        Listener(lst.name, lst.service, lst.instance, bridge, lst.port)
        for lst in found
        if lst.host != bridge
    )


def reachable(listeners: Iterable[Listener], service: str, host: str) -> list[tuple[str, int]]:
    """Where `service` is called by name from `host`'s side: its listener and those of
    its instances bound there. What `egress = ["NAME"]` allows, and nothing more."""
    return [
        (lst.host, lst.port) for lst in listeners if lst.service == service and lst.host == host
    ]


class PortBook:
    """The internal listeners' ports, chosen once and kept in a file: the addresses
    instances were told stay true after any restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ports: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            saved = json.loads(path.read_text())
            self.ports = {str(name): int(port) for name, port in saved.items()}

    def port(self, name: str) -> int:
        """The port of listener `name`, chosen (a free one) and saved the first time."""
        port = self.ports.get(name)
        if port is None:
            taken = set(self.ports.values())
            port = _free_port()
            while port in taken:
                port = _free_port()
            self.ports[name] = port
            self._save()
        return port

    def _save(self) -> None:
        temp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(self.ports, indent=1, sort_keys=True))
            temp.replace(self.path)
        except OSError as exc:  # the ports hold for this agent; the next one chooses again
            print(f"cannot save {self.path}: {exc.strerror or exc}", file=sys.stderr)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((internal_host(), 0))
        return int(sock.getsockname()[1])


def with_internal_services(state: DesiredState) -> DesiredState:
    """`state` with every service that has an internal listener routed (with no route):
    the HAProxy plane renders backends for routed services only."""
    missing = {lst.service for lst in state.internal} - set(state.routes)
    if not missing:
        return state
    routes = {**state.routes, **dict.fromkeys(sorted(missing), ())}
    return DesiredState(routes, state.services, state.internal)


# --- the embedded data plane -----------------------------------------------------------


class InternalClient(Client):
    """A connection to an internal listener: every request goes to its service (or its
    one instance), whatever its Host and path."""

    __slots__ = ("target", "view")

    def __init__(self, proxy: Proxy, listener: Listener) -> None:
        super().__init__(proxy)
        self.target = listener
        self.view: Service | None = None  # an instance listener's service of one instance

    def service_for(self, request: h1.Request) -> Service | None:
        listener = self.target
        service = self.proxy.services.get(listener.service)
        if service is None:
            self._refuse(request, 503, "no instance ready\n")
            return None
        if listener.instance is None:
            return service
        if self.view is None:
            self.view = Service(timeouts=service.timeouts)
        view = self.view
        view.timeouts = service.timeouts
        mine = [
            live
            for live in self.proxy.usable_backends(listener.service)
            if live.spec.instance == listener.instance
        ]
        view.stable.backends = _stable_first(mine, lambda live: live.spec.track)
        return view


class InternalServers:
    """The embedded plane's internal listeners: one server each, opened and closed as
    the desired state's listeners come and go."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.servers: dict[Listener, asyncio.Server] = {}

    async def reconcile(self, listeners: Iterable[Listener]) -> None:
        wanted = set(listeners)
        for listener in list(self.servers):
            if listener not in wanted:
                self.servers.pop(listener).close()
        loop = asyncio.get_running_loop()
        for listener in wanted - set(self.servers):
            try:
                self.servers[listener] = await loop.create_server(
                    lambda listener=listener: InternalClient(self.proxy, listener),  # type: ignore[misc]
                    sock=_bound(listener.host, listener.port),
                    backlog=1024,
                )
            except OSError as exc:
                print(
                    f"router: cannot listen for {listener.name} on"
                    f" {listener.host}:{listener.port}: {exc.strerror}",
                    file=sys.stderr,
                    flush=True,
                )

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to host:port; an address not (yet) on this machine is bound too
    (IP_FREEBIND): the bridge an isolated stack's listeners bind to comes and goes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if host != INTERNAL_HOST:
            sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


# --- the HAProxy data plane -----------------------------------------------------------


def instance_backends(state: DesiredState) -> dict[str, tuple[str, list[Backend]]]:
    """Per instance listener: its HAProxy backend's name -> (service, its servers)."""
    found: dict[str, tuple[str, list[Backend]]] = {}
    for listener in state.internal:
        if listener.instance is None:
            continue
        traffic = state.services.get(listener.service)
        backends = [
            b for b in (traffic.backends if traffic else ()) if b.instance == listener.instance
        ]
        found[f"instance.{listener.name}"] = (
            listener.service,
            _stable_first(backends, lambda b: b.track),
        )
    return found


def _stable_first(items: list[T], track: Callable[[T], Track]) -> list[T]:
    """An instance's stable backends; its canary's (same name, during a rollout) only
    when it has no stable one: the instance's address keeps to the release it runs."""
    stable = [item for item in items if track(item) is Track.STABLE]
    return stable or items


def instance_structure(state: DesiredState) -> tuple[object, ...]:
    """What only a new HAProxy configuration changes: the listeners, and the servers (with
    their state) of the instance listeners' backends."""
    servers = tuple(
        (name, tuple((b.id, b.host, b.port, b.weight, b.state.value) for b in backends))
        for name, (_, backends) in sorted(instance_backends(state).items())
    )
    return (tuple(sorted(state.internal, key=lambda lst: lst.name)), servers)


def haproxy_frontends(
    state: DesiredState, numbers: Mapping[str, int], share: str, canary_turn: str
) -> list[str]:
    """A frontend per internal listener. A service's numbers its requests as the front
    door does (`share`: the canary map lookup) and follows the same canary turn."""
    lines: list[str] = []
    binds: dict[str, list[Listener]] = {}
    for listener in state.internal:
        binds.setdefault(listener.name, []).append(listener)
    for name in sorted(binds):
        listener = binds[name][0]
        lines += [
            "",
            f"frontend internal.{listener.name}",
            *(_bind(lst) for lst in binds[name]),
            "    http-request disable-l7-retry if !METH_GET !METH_OPTIONS"
            " or { req.hdr_val(content-length) gt 0 } or { req.hdr_cnt(transfer-encoding) gt 0 }",
        ]
        if listener.instance is not None:
            lines.append(f"    default_backend instance.{listener.name}")
            continue
        canary = f"{listener.service}.{Track.CANARY.value}"
        lines += [
            f"    http-request set-var(txn.svc) int({numbers[listener.service]})",
            f"    http-request track-sc0 var(txn.svc) table turns if {{ {share} -m int gt 0 }}",
            f"    http-request set-var(txn.w) {share} if {{ sc0_tracked }}",
            "    http-request set-var(txn.c) sc_inc_gpc0(0),sub(1),"
            f"mod({RESOLUTION}),mul(txn.w),mod({RESOLUTION}),add(txn.w)",
            f"    use_backend {canary} if {canary_turn} {{ nbsrv({canary}) gt 0 }}",
            f"    default_backend {listener.service}.{Track.STABLE.value}",
        ]
    return lines


def _bind(listener: Listener) -> str:
    """A frontend's bind: `loopback` on 127.0.0.1, `bridge` on an isolated stack's bridge
    (`transparent`: HAProxy binds it whether or not the bridge exists at that moment,
    with IP_TRANSPARENT or IP_FREEBIND)."""
    if listener.host == INTERNAL_HOST:
        return f"    bind {listener.host}:{listener.port} name loopback"
    return f"    bind {listener.host}:{listener.port} name bridge transparent"

"""The agent's side of the router: it starts the data plane process (or adopts the one a
previous agent left), tells it which instances are ready, drains instances before they
stop, and reads its measurements every second.

The data plane is its own process in its own session: an agent that dies takes no
request with it, and the routing stays as it was until the next agent has adopted the
instances and sends the same state again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlifier.errors import UserError
from sqlifier.router.control import ControlClient, ControlError
from sqlifier.router.haproxy import find_haproxy, stop_left_behind
from sqlifier.router.internal import PortBook, bridged, discovery_env, internal_host, reachable
from sqlifier.router.metrics import Counters, summarize
from sqlifier.router.routes import RESOLUTION, Track
from sqlifier.router.state import Backend, BackendState, DesiredState, Listener, ServiceTraffic
from sqlifier.router.tls import prepare
from sqlifier.runtime.fence import bridge_address
from sqlifier.runtime.lifecycle import State
from sqlifier.runtime.probes import ProbeResult, run_probe
from sqlifier.runtime.process import Launched, is_same_process, launch, stop_group
from sqlifier.runtime.supervisor import Instance, Supervisor
from sqlifier.stack.model import Isolation, Probe, ProbeKind, RouterKind, Service, Stack

__all__ = ["RouterFailed", "Traffic", "choose_kind"]

WINDOW = 10.0  # seconds of measurements behind the rates `ps` shows
HISTORY = 60  # readings kept (one a second)


class RouterFailed(UserError):
    """The data plane could not start; the message says why."""


def choose_kind(kind: RouterKind) -> str:
    if kind is RouterKind.HAPROXY:
        if find_haproxy() is None:
            raise RouterFailed(
                '[router] kind = "haproxy" but no haproxy binary is installed; install it '
                '(apt-get install haproxy) or use kind = "auto" or "embedded"'
            )
        return "haproxy"
    if kind is RouterKind.EMBEDDED:
        return "embedded"
    return "haproxy" if find_haproxy() is not None else "embedded"


@dataclass
class _Reading:
    when: float
    backends: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]


class Traffic:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        supervisor: Supervisor,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.stack = stack
        self.state_dir = state_dir
        self.supervisor = supervisor
        self.say = say
        self.services = stack.services_for(env)
        self.routes = {n: s.routes for n, s in self.services.items() if s.routes}
        router = stack.router_for(env)
        self.kind = choose_kind(router.kind)
        self.listen = f"{router.host}:{router.port}"
        self.tls: tuple[Path, dict[str, Any]] | None = None  # settings file, what ps shows
        if router.tls is not None:
            hosts = [r.host for s in self.services.values() for r in s.routes if r.host]
            title = f"sqlifier {stack.name} ({env}) self-signed"
            self.tls = prepare(router.tls, stack.root, state_dir, hosts, title)
        # Internal addresses (router/internal.py): where a stack has more than one service.
        self.ports = PortBook(state_dir / "internal-ports.json")
        self.internal = set(self.services) if len(self.services) > 1 else set()
        if self.internal and not self.routes:  # no front door: [router]'s port is not taken
            self.listen = f"{internal_host()}:{self.ports.port('.front-door')}"
        # Isolated instances call the others at the stack's bridge: the listeners bind
        # there too, and their egress allows exactly the ones they name (isolation.md).
        isolated = any(s.isolation is Isolation.NETWORK for s in self.services.values())
        self.bridge = bridge_address(state_dir) if isolated and self.internal else None
        if self.bridge is not None:
            bridge = self.bridge
            supervisor.fence.internal = lambda name: reachable(self.listeners(), name, bridge)
        self.client = ControlClient(state_dir / "router.sock")
        self.launched: Launched | None = None
        self.canary: dict[str, int] = {}  # service -> thousandths
        self.history: deque[_Reading] = deque(maxlen=HISTORY)
        self.error: str | None = None
        self._changed = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._live = False  # syncing: after the stack has started (or been adopted)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._reach: tuple[Listener, ...] = ()  # the listeners isolated egress last allowed

    @property
    def needed(self) -> bool:
        """A stack where no service has a route has no front door."""
        return bool(self.routes) or bool(self.internal)

    def listeners(self) -> tuple[Listener, ...]:
        """The internal listeners: one per service, one per instance of a stateful one
        (as many as the stack file says, or run)."""
        if not self.internal:
            return ()
        host = internal_host()
        found = []
        for name in sorted(self.internal):
            found.append(Listener(name, name, None, host, self.ports.port(name)))
            service = self.supervisor.services.get(name, self.services[name])
            if not service.stateful:
                continue
            indexes = {i.index for i in self.supervisor.all_instances() if i.service.name == name}
            for index in range(max([service.instances - 1, *indexes]) + 1):
                key = f"{name}-{index}"
                found.append(Listener(key, name, key, host, self.ports.port(key)))
        return bridged(found, self.bridge)

    def discovery_env(self, service: Service) -> dict[str, str]:
        """What an instance of `service` is told of the others: `ORDERS_URL`... (at the
        bridge for an isolated one)."""
        isolated = service.isolation is Isolation.NETWORK
        return discovery_env(self.listeners(), service.name, self.bridge if isolated else None)

    def snapshot(self) -> dict[str, Any] | None:
        if not self.needed:
            return None
        return {
            "kind": self.kind,
            "listen": self.listen,
            "url": f"{'https' if self.tls else 'http'}://{self.listen}",
            "tls": self.tls[1] if self.tls else None,
            "pid": self.launched.pid if self.launched else None,
            "started": self.launched.started if self.launched else None,
            "error": self.error,
            "front_door": bool(self.routes),  # without: only the internal addresses
        }

    # --- the process ----------------------------------------------------------------

    async def start(self, previous: dict[str, Any] | None) -> None:
        """Adopt the data plane a previous agent left, or start one."""
        if not self.needed:
            await self.stop_previous(previous)
            return
        if previous and self._adopt(previous):
            self.say(f"router ({self.kind}) adopted, listening on {self.listen}")
        else:
            await self.stop_previous(previous)  # its port is needed
            await self._launch()
            self.say(f"router ({self.kind}) listening on {self.listen}")
        self._task = asyncio.create_task(self._run())

    def _adopt(self, previous: dict[str, Any]) -> bool:
        try:
            pid, started = int(previous["pid"]), float(previous["started"])
        except (KeyError, TypeError, ValueError):
            return False
        if not is_same_process(pid, started):
            return False
        tls = self.tls[1] if self.tls else None
        if (previous.get("kind"), previous.get("listen"), previous.get("tls")) != (
            self.kind,
            self.listen,
            tls,
        ):
            return False  # the stack file changed: the old one stops (stop_previous)
        self.launched = Launched(pid, started)
        return True

    @staticmethod
    async def stop_previous(previous: dict[str, Any] | None) -> None:
        """A data plane from a previous agent that this one did not adopt."""
        if previous is None:
            return
        with contextlib.suppress(KeyError, TypeError, ValueError):
            pid, started = int(previous["pid"]), float(previous["started"])
            if is_same_process(pid, started):
                await stop_group(Launched(pid, started), 30.0)

    async def _launch(self) -> None:
        out = self.state_dir / "logs" / "router.out"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "sqlifier.router", "--state-dir", str(self.state_dir)]
        argv += ["--kind", self.kind, "--listen", self.listen]
        argv += ["--tls", str(self.tls[0])] if self.tls else []
        launched = await launch(argv, self.state_dir, os.environ, "router", out)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert launched.process is not None
            if launched.process.returncode is not None:
                raise RouterFailed(f"the router did not start: {_last_line(out)}")
            with contextlib.suppress(ControlError):
                await self.client.call({"op": "ping"})
                self.launched = launched
                self.error = None
                return
            await asyncio.sleep(0.05)
        await stop_group(launched, 5.0)
        raise RouterFailed(f"the router did not answer within 15 s: {_last_line(out)}")

    async def stop(self) -> None:
        """After the instances: the data plane finishes what it has in flight, then ends."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.client.close()
        if self.launched is not None:
            await stop_group(self.launched, 35.0)
            self.launched = None
        await stop_left_behind(self.state_dir / "haproxy")  # its data plane was killed

    # --- keeping it in step -----------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()

    def go_live(self) -> None:
        """The stack is up: from now on the data plane follows the instances."""
        self._live = True
        self.changed()

    def desired(self) -> DesiredState:
        services: dict[str, ServiceTraffic] = {}
        for name in sorted({*self.routes, *self.internal}):
            backends = []
            for instance in self.supervisor.all_instances():
                if instance.service.name != name or instance.launched is None or instance.held:
                    continue
                if instance.draining:
                    state = BackendState.DRAIN
                elif instance.life.state is State.READY:
                    state = BackendState.READY
                else:
                    continue
                backends.append(
                    Backend(
                        instance.id,
                        instance.name,
                        instance.host,
                        instance.port,
                        Track(instance.track),
                        state,
                        weight=max(1, min(256, instance.weight)),
                        probe=instance.probe_passed,
                    )
                )
            timeouts = self.services[name].timeouts
            services[name] = ServiceTraffic(tuple(backends), self.canary.get(name, 0), timeouts)
        return DesiredState(dict(self.routes), services, self.listeners())

    async def sync(self) -> None:
        # The state is read under the lock: two syncs never cross, the later one
        # always carries the newer state.
        async with self._sync_lock:
            if self._live and self.launched is not None:
                await self.client.sync(self.desired())

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Changes made inside reach the data plane together, in one sync at the end:
        a promotion swaps tracks and the canary share without a request seeing half."""
        async with self._sync_lock:
            yield
            if self._live and self.launched is not None:
                await self.client.sync(self.desired())

    def keep_canary(self, service: str, percent: float) -> None:
        """Before the stack is live: the canary share an earlier agent left in the data
        plane, so the first state sent keeps it."""
        self.canary[service] = round(percent * RESOLUTION / 100)

    async def set_canary(self, service: str, percent: float) -> None:
        """The canary track's share of a service; returns once it is in force."""
        self.canary[service] = round(percent * RESOLUTION / 100)
        await self.sync()

    async def track_counters(self, service: str) -> dict[str, Counters]:
        """The data plane's cumulative counters of a service's tracks, read now."""
        reply = await self.client.stats()
        tracks = reply["services"].get(service, {})
        return {track: Counters.from_json(tracks.get(track, {})) for track in ("stable", "canary")}

    async def drain(self, instance: Instance) -> None:
        """No new requests to `instance`; wait (up to its stop timeout) for those it has."""
        if not self._live or self.launched is None:
            return
        await self.sync()
        deadline = time.monotonic() + instance.service.stop_timeout
        while time.monotonic() < deadline:
            backend = (await self.client.stats())["backends"].get(instance.id)
            if backend is None or not backend.get("inflight"):
                return
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        """Every second (or at once after a change): send the state, read the numbers,
        and start the data plane again if it ended."""
        while not self._stopping:
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=1.0)
            finally:
                waiter.cancel()
            self._changed.clear()
            try:
                await self._step()
            except UserError as exc:  # it could not be started again: `ps` says why
                self.error = str(exc)
            except (ControlError, OSError, KeyError, ValueError) as exc:
                self.error = f"the router does not answer: {exc}"

    async def _step(self) -> None:
        if self.launched is not None and not is_same_process(
            self.launched.pid, self.launched.started
        ):
            self.launched = None
        if self.launched is None and not self._stopping:
            self.client.close()
            await self._launch()
            self.say(f"router ({self.kind}) had ended; started again on {self.listen}")
        await self.sync()
        if self.bridge is not None and (now := self.listeners()) != self._reach:
            self._reach = now  # a stateful service scaled: its instances' listeners
            await self.supervisor.fence.refresh()
        reply = await self.client.stats()
        self.history.append(_Reading(time.monotonic(), reply["backends"], reply["services"]))
        await self._recheck_ejected(reply["backends"])
        self.error = None

    async def _recheck_ejected(self, backends: dict[str, dict[str, Any]]) -> None:
        """An ejected instance comes back when its readiness probe passes; one without a
        readiness probe is checked here with a TCP connection instead."""
        for instance in self.supervisor.all_instances():
            state = backends.get(instance.id)
            if state and state.get("ejected") and instance.service.probes.readiness is None:
                result: ProbeResult = await run_probe(
                    Probe(ProbeKind.TCP, ""), instance.port, ".", instance.host
                )
                if result.ok:
                    instance.probe_passed = int(time.time() * 1000)
                    self.changed()

    # --- what it measured ------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Rates over the last WINDOW seconds: per instance, and per service and track."""
        if len(self.history) < 2:
            return {"instances": {}, "services": {}, "window": 0.0}
        newest = self.history[-1]
        oldest = next(
            (r for r in self.history if newest.when - r.when <= WINDOW + 0.5), self.history[0]
        )
        seconds = newest.when - oldest.when
        if seconds <= 0:
            return {"instances": {}, "services": {}, "window": 0.0}
        instances: dict[str, Any] = {}
        for key, now in newest.backends.items():
            before = oldest.backends.get(key, {})
            delta = Counters.from_json(now).minus(Counters.from_json(before))
            instances[key] = {
                "instance": now.get("instance"),
                "inflight": now.get("inflight", 0),
                "ejected": now.get("ejected", False),
                **summarize([delta], seconds),
            }
        services: dict[str, Any] = {}
        for name, tracks in newest.services.items():
            for track, now in tracks.items():
                before = oldest.services.get(name, {}).get(track, {})
                delta = Counters.from_json(now).minus(Counters.from_json(before))
                services.setdefault(name, {})[track] = summarize([delta], seconds)
        return {"instances": instances, "services": services, "window": round(seconds, 1)}


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"

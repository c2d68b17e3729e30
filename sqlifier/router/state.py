"""What the agent wants the data plane to do: routes, backends with their track and
state, and each service's canary share. Sent whole on every sync, so a data plane (or an
agent) that restarts needs no history to agree with the other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlifier.router.routes import RESOLUTION, Track
from sqlifier.stack.model import Route, Timeouts

__all__ = ["Backend", "BackendState", "DesiredState", "Listener", "ServiceTraffic"]


class BackendState(enum.Enum):
    READY = "ready"  # takes new requests
    DRAIN = "drain"  # finishes what it has, takes nothing new


@dataclass(frozen=True, slots=True)
class Backend:
    """One running instance as the router sees it. `id` is unique even while a restarted
    instance and its replacement (same name, different port) both exist."""

    id: str
    instance: str
    host: str
    port: int
    track: Track = Track.STABLE
    state: BackendState = BackendState.READY
    weight: int = 100  # 1-256, relative to the other backends of its track
    probe: int = 0  # readiness probes passed so far: an ejected backend returns when it grows

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instance": self.instance,
            "address": f"{self.host}:{self.port}",
            "track": self.track.value,
            "state": self.state.value,
            "weight": self.weight,
            "probe": self.probe,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Backend:
        host, _, port = str(data["address"]).rpartition(":")
        weight = int(data.get("weight", 100))
        if not 1 <= weight <= 256:
            raise ValueError(f"a weight is from 1 to 256, not {weight}")
        return cls(
            id=str(data["id"]),
            instance=str(data.get("instance", data["id"])),
            host=host,
            port=int(port),
            track=Track(data.get("track", "stable")),
            state=BackendState(data.get("state", "ready")),
            weight=weight,
            probe=int(data.get("probe", 0)),
        )


@dataclass(frozen=True, slots=True)
class ServiceTraffic:
    backends: tuple[Backend, ...] = ()
    canary: int = 0  # the canary track's share in thousandths (0-1000)
    timeouts: Timeouts = field(default_factory=Timeouts)  # waiting on its instances

    def to_json(self) -> dict[str, Any]:
        return {
            "canary": self.canary,
            "backends": [b.to_json() for b in self.backends],
            "timeouts": {
                "connect": self.timeouts.connect,
                "first_byte": self.timeouts.first_byte,
                "idle": self.timeouts.idle,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceTraffic:
        canary = int(data.get("canary", 0))
        if not 0 <= canary <= RESOLUTION:
            raise ValueError(f"a canary share is 0 to {RESOLUTION} thousandths, not {canary}")
        given = data.get("timeouts", {})
        timeouts = Timeouts(**{k: float(given[k]) for k in Timeouts.__slots__ if k in given})
        if min(timeouts.connect, timeouts.first_byte, timeouts.idle) <= 0:
            raise ValueError(f"a timeout is longer than zero: {given}")
        backends = tuple(Backend.from_json(b) for b in data.get("backends", ()))
        return cls(backends, canary, timeouts)


@dataclass(frozen=True, slots=True)
class Listener:
    """An internal address of a service (`instance` None) or of one of its instances:
    requests arriving there go to it whatever their Host and path (router/internal.py)."""

    name: str  # "orders", or "orders-0" for one instance
    service: str
    instance: str | None
    host: str
    port: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "service": self.service,
            "instance": self.instance,
            "address": f"{self.host}:{self.port}",
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Listener:
        host, _, port = str(data["address"]).rpartition(":")
        instance = data.get("instance")
        return cls(
            str(data["name"]),
            str(data["service"]),
            None if instance is None else str(instance),
            host,
            int(port),
        )


@dataclass(frozen=True, slots=True)
class DesiredState:
    routes: dict[str, tuple[Route, ...]] = field(default_factory=dict)
    services: dict[str, ServiceTraffic] = field(default_factory=dict)
    internal: tuple[Listener, ...] = ()  # services' internal addresses

    def to_json(self) -> dict[str, Any]:
        return {
            "routes": {
                name: [{"host": r.host, "path": r.path} for r in routes]
                for name, routes in self.routes.items()
            },
            "services": {name: s.to_json() for name, s in self.services.items()},
            "internal": [listener.to_json() for listener in self.internal],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DesiredState:
        routes = {
            str(name): tuple(Route(r.get("host"), str(r["path"])) for r in items)
            for name, items in data.get("routes", {}).items()
        }
        services = {
            str(name): ServiceTraffic.from_json(s) for name, s in data.get("services", {}).items()
        }
        internal = tuple(Listener.from_json(i) for i in data.get("internal", ()))
        return cls(routes, services, internal)

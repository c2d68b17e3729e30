"""The platform seam: where instances run and how traffic reaches them.

Everything above this line — the rule engine's actions, the rollout, the agent's API and
through it the CLI — reaches the running stack only through `Platform`, and never learns
which platform it talks to. `platform/local.py` is the first implementation (supervised
processes on this machine behind the data plane); a Kubernetes one (Deployments,
StatefulSets and an HTTPRoute's weights) is the second.

A service's instances are in one of two tracks: `stable` (the live release, at full size)
and `canary` (a release being rolled out, beside it). Traffic is split between the tracks
by one share, the canary's percent, and within a track by each instance's weight.

Instances are named (`web-0`), never handed out: callers get `InstanceInfo` values, a
snapshot of what the platform knows, and name instances back when they act on them.

    __init__.py  the seam: `Platform`, and the values that cross it
    local.py     `LocalPlatform`: the supervisor (runtime/) and the data plane (router/)
    traffic.py   the local data plane's keeper: start or adopt it, sync, drain, counters
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlifier.router.metrics import Counters
from sqlifier.runtime.commands import RunResult
from sqlifier.runtime.probes import ProbeResult
from sqlifier.stack.model import Probe, Service

__all__ = [
    "CANARY",
    "STABLE",
    "InstanceInfo",
    "LogLine",
    "Platform",
    "PlatformError",
    "ReleaseRef",
]

STABLE = "stable"
CANARY = "canary"


class PlatformError(Exception):
    """An instance did not start or become ready; the message names it and says why.
    Whatever the failed call had started is stopped again before this is raised."""


@dataclass(frozen=True, slots=True)
class ReleaseRef:
    """What a platform runs for a release: locally its folder, on a cluster its image."""

    version: str
    path: Path | None = None
    image: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    name: str  # "web-0": unique within the service and track
    service: str
    track: str  # STABLE or CANARY
    release: str  # the version it runs
    state: str  # runtime.lifecycle.State's value: "starting", "ready", "crashloop", ...
    reason: str  # why it is in that state ("" when there is nothing to say)
    ready: bool  # passes its readiness probe
    held: bool  # ready but kept from traffic (a canary until it is warm)
    draining: bool  # about to stop: takes no new requests
    restarts: int
    running: bool = True  # its process runs (False: exited, waiting to be started again)


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float
    instance: str
    level: str  # "debug" .. "critical"
    text: str


class Platform(Protocol):
    """Where a stack's instances run and how traffic reaches them."""

    # --- what runs ------------------------------------------------------------------

    def services(self) -> Mapping[str, Service]:
        """Every service with the config its stable track runs."""
        ...

    def stable_release(self, service: str) -> str:
        """The version the stable track of `service` runs."""
        ...

    def instances(self, service: str, track: str | None = None) -> list[InstanceInfo]:
        """The instances of `service` (of one track, or all), draining ones included."""
        ...

    def set_stable(self, spec: Service, release: ReleaseRef) -> None:
        """Before the stack starts: the stable track of `spec.name` runs `release`, with
        the config `spec` it was made with (the live release, after an agent restart)."""
        ...

    def expect_canaries(self, spec: Service, release: ReleaseRef, percent: float) -> None:
        """Before the stack starts: adopt the canaries of `release` an earlier agent left
        taking `percent` of the traffic (a rollout taken up after an agent restart)."""
        ...

    # --- operating a service -----------------------------------------------------------

    async def scale(self, service: str, count: int, by: str = "stack") -> None:
        """Run `count` stable instances of `service`, as `by` asked ("cli:USER",
        "rule:NAME"); the count survives an agent restart. Raises PlatformError."""
        ...

    async def restart(self, service: str) -> None:
        """Replace the stable instances of `service` one at a time, each ready before the
        next stops; raises PlatformError."""
        ...

    # --- a release beside the stable one ---------------------------------------------

    async def start_canaries(self, spec: Service, release: ReleaseRef, count: int) -> list[str]:
        """Grow the canary track to `count` instances of `release` (run with its config
        `spec`), held from traffic; the names of the new ones once ready. PlatformError
        (the new ones stopped again) when one does not become ready."""
        ...

    async def probe(self, service: str, instance: str, probe: Probe) -> ProbeResult:
        """One request (or command) straight to an instance, past the router: warm-up."""
        ...

    async def admit(self, service: str, instances: list[str]) -> None:
        """Warm: these held instances may take their track's traffic."""
        ...

    def set_instance_weight(self, service: str, instances: list[str], weight: int) -> None:
        """Each instance's weight within its track (1-100): slow start."""
        ...

    async def set_canary_share(self, service: str, percent: float) -> None:
        """The canary track's share of the service's requests, in force on return."""
        ...

    async def track_counters(self, service: str) -> dict[str, Counters]:
        """Cumulative request counters of each track, {"stable": ..., "canary": ...}."""
        ...

    async def stop_canaries(self, service: str) -> None:
        """Drain and stop every canary of `service`."""
        ...

    async def promote(self, spec: Service, release: ReleaseRef) -> list[str]:
        """The canaries become the stable instances and `release` the stable release, with
        all traffic on them in one update; the old instances' names, draining, for
        `retire`."""
        ...

    async def retire(self, service: str, instances: list[str]) -> None:
        """Stop the instances `promote` returned, each drained first."""
        ...

    async def replace(self, spec: Service, release: ReleaseRef) -> None:
        """Run `release` on every instance, one at a time (services with no canary). On
        PlatformError every instance is back on the release it ran before."""
        ...

    async def run_task(
        self, spec: Service, release: ReleaseRef, what: str, command: str, timeout: float
    ) -> RunResult:
        """A one-off command of the service (migrate, schema_version) with its environment
        and secrets, in the release; its output with secret values masked."""
        ...

    # --- watching -------------------------------------------------------------------

    def logs(self, service: str, since: float = 0.0) -> AsyncIterator[LogLine]:
        """The service's log lines from `since` on, then as they come."""
        ...

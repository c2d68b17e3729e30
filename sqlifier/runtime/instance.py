"""A supervised instance: one process of a service, the state the supervisor keeps about it
(its lifecycle, probes, log, release, track and place in traffic), and what the supervisor
reports (`Event`) or raises (`StartFailed`) about instances.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlifier.runtime.lifecycle import Lifecycle
from sqlifier.runtime.logs import LogFile, OutputTail
from sqlifier.runtime.probes import ProbeTracker
from sqlifier.runtime.process import Launched
from sqlifier.stack.model import Service

__all__ = ["Event", "Instance", "SecretHolder", "StartFailed"]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, for the screen and the record."""

    when: float
    instance: str
    state: str
    reason: str


class StartFailed(Exception):
    """A service did not become ready; the message names it and says why."""


class SecretHolder(Protocol):
    """What secrets are delivered to: an instance, or a one-off command of a service (a
    deploy's `migrate`); `id` names its private folder of secret files."""

    @property
    def service(self) -> Service: ...

    @property
    def name(self) -> str: ...

    @property
    def id(self) -> str: ...


@dataclass
class Instance:
    service: Service
    index: int
    port: int
    life: Lifecycle
    log: LogFile
    tail: OutputTail
    data_dir: Path | None
    launched: Launched | None = None
    release: str = "current"
    track: str = "stable"
    draining: bool = False  # taking no new requests: it is about to stop
    weight: int = 100  # its share within its track, relative to the others (1-256)
    held: bool = False  # ready but kept from traffic (a canary until it is warm)
    probe_passed: int = 0  # when its readiness probe last passed (ms since the epoch)
    probes: dict[str, ProbeTracker] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    host: str = "127.0.0.1"  # where it is reached: its namespace's address when isolated
    oom_kills: int = 0  # times the kernel killed it for its memory (resources.memory)

    @property
    def name(self) -> str:
        return f"{self.service.name}-{self.index}"

    @property
    def id(self) -> str:
        """Unique even while a replacement with the same name runs beside it."""
        return f"{self.name}_{self.port}"

    def _reason(self) -> str:
        """Its state's reason; an OOM kill stays said after the restart that followed."""
        reason = self.life.reason
        if self.oom_kills and "OOM-killed" not in reason:
            times = "once" if self.oom_kills == 1 else f"{self.oom_kills} times"
            reason = f"{reason} (OOM-killed {times})"
        return reason

    def snapshot(self) -> dict[str, object]:
        return {
            "service": self.service.name,
            "instance": self.name,
            "pid": self.launched.pid if self.launched else None,
            "started": self.launched.started if self.launched else None,
            "log_offset": self.tail.offset,
            "port": self.port,
            "address": f"{self.host}:{self.port}",
            "state": self.life.state.value,
            "reason": self._reason(),
            "oom_kills": self.oom_kills,
            "restarts": self.life.restarts,
            "release": self.release,
            "track": self.track,
            "draining": self.draining,
            "weight": self.weight,
            "held": self.held,
        }

"""One deploy or rollback as the agent carries it: who asked for what, its rollout (the pure
machine of `delivery.rollout`), the commands waiting to be carried out, and its record,
`.sqlifier/<env>/deploys/<id>.json` (`to_json`), which `sqlifier deploy status` reads."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlifier.delivery.locks import ServiceLock
from sqlifier.delivery.releases import Release, service_from_config
from sqlifier.delivery.rollout import TERMINAL, Command, Phase, Rollback, Rollout, Run

__all__ = ["APPROVAL_TIMEOUT", "TERMINAL_STATES", "DeployRun"]

APPROVAL_TIMEOUT = 3600.0  # a deploy awaiting approval expires after this
TERMINAL_STATES = frozenset(phase.value for phase in TERMINAL)
SUCCEEDED = (Phase.COMPLETE, Phase.ROLLED_BACK)


@dataclass
class DeployRun:
    """One deploy or rollback as it goes; its record is `to_json`."""

    id: str
    service: str
    env: str
    who: str
    reason: str
    created: float
    machine: Run
    release: Release  # deployed, or rolled back to
    lines: list[tuple[float, str]] = field(default_factory=list)
    lock: ServiceLock | None = None  # held until the run ends
    queue: deque[Command] = field(default_factory=deque)  # to carry out, in order
    busy: bool = False  # a command on the platform is under way
    ticked_for: float | None = None  # the deadline the machine was last told had come
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # something to do
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # the machine moved
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the lock is released

    @property
    def kind(self) -> str:
        return self.machine.kind

    @property
    def version(self) -> str:
        return self.machine.version

    @property
    def phase(self) -> Phase:
        return self.machine.phase

    @property
    def state(self) -> str:
        return self.machine.phase.value

    def to_json(self) -> dict[str, Any]:
        run = self.machine
        return {
            "id": self.id,
            "kind": self.kind,
            "service": self.service,
            "env": self.env,
            "version": run.version,
            "from_version": run.from_version,
            "who": self.who,
            "reason": self.reason,
            "created": self.created,
            "state": run.phase.value,
            "done": run.phase.terminal,
            "succeeded": run.phase in SUCCEEDED,
            "step": run.step_number,
            "steps": list(run.steps),
            "weight": run.weight,
            "step_ends": run.step_ends,
            "verdict": run.verdict,
            "approved_by": run.approved_by,
            "paused_by": run.paused_by,
            "error": run.error,
            "finished": run.finished,
            "detected_at": run.detected_at,
            "restored_at": run.restored_at,
            "lines": [[t, text] for t, text in self.lines],
            "approval_expires": run.approval_expires,
        }

    @classmethod
    def awaiting(cls, record: dict[str, Any], release: Release) -> DeployRun:
        """A deploy awaiting approval again, from the record a previous agent left."""
        created = float(record["created"])
        machine = Rollout(
            str(record["service"]),
            str(record["version"]),
            record.get("from_version"),
            str(record["who"]),
            service_from_config(release.config),
            migrated=release.details.get("migrated_at") is not None,
            awaiting="the agent restarted: still awaiting approval",
            # Records from before expiry times were kept: an hour from the request.
            expires=float(record.get("approval_expires") or created + APPROVAL_TIMEOUT),
            approved_by=tuple(str(who) for who in record.get("approved_by") or []),
        )
        run = cls(
            id=str(record["id"]),
            service=machine.service,
            env=str(record["env"]),
            who=machine.who,
            reason=str(record.get("reason") or ""),
            created=created,
            machine=machine,
            release=release,
        )
        run.lines = [(float(t), str(text)) for t, text in record.get("lines") or []]
        return run

    @classmethod
    def resumed(cls, record: dict[str, Any], release: Release) -> DeployRun:
        """A deploy or rollback a previous agent was carrying out when it died, as its
        record shows it, for `Readopted` (KeyError, TypeError, ValueError for a record
        that cannot be read)."""
        spec = service_from_config(release.config)
        service, version = str(record["service"]), str(record["version"])
        machine: Rollout | Rollback
        if record.get("kind") == "rollback":
            machine = Rollback(service, version, str(record["from_version"]), spec)
        else:
            machine = Rollout(
                service, version, record.get("from_version"), str(record["who"]), spec,
                migrated=release.details.get("migrated_at") is not None,
            )  # fmt: skip
        machine.restore(record)
        run = cls(
            id=str(record["id"]),
            service=service,
            env=str(record["env"]),
            who=str(record["who"]),
            reason=str(record.get("reason") or ""),
            created=float(record["created"]),
            machine=machine,
            release=release,
        )
        run.lines = [(float(t), str(text)) for t, text in record.get("lines") or []]
        return run

"""The rollout's vocabulary: its phases, what it is told (observations) and what it asks
for (commands). See the package's docstring for how they fit together."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlifier.delivery.records import ReleaseStatus
from sqlifier.router.metrics import Counters
from sqlifier.stack.model import Probe

__all__ = [
    "TERMINAL",
    "Abort",
    "Admit",
    "Approved",
    "Audit",
    "Begin",
    "CanariesStarted",
    "CanariesStopped",
    "CleanUpNow",
    "Command",
    "CountStable",
    "CountersRead",
    "CrashLooping",
    "Event",
    "Interrupted",
    "MarkRelease",
    "Notify",
    "Observation",
    "Pause",
    "Phase",
    "Promote",
    "Promoted",
    "ReadCounters",
    "Readopted",
    "Replace",
    "Replaced",
    "Resume",
    "Retire",
    "Retired",
    "RoundDone",
    "RunTask",
    "Say",
    "SetShare",
    "SetWeight",
    "ShareSet",
    "StableCount",
    "StartCanaries",
    "StopCanaries",
    "TaskDone",
    "Tick",
    "WarmRound",
    "WentLive",
]


class Phase(enum.Enum):
    """Where a deploy or rollback is; the value is the record's `state`."""

    STARTING = "starting"
    AWAITING_APPROVAL = "awaiting approval"
    APPROVED = "approved"
    MIGRATING = "migrating"
    STARTING_CANARY = "starting canary"
    WARMING_UP = "warming up"
    SLOW_START = "slow start"
    STEP = "step"
    PAUSED = "paused"
    WAITING_FOR_DATA = "waiting for data"
    BAKING = "baking"
    PROMOTING = "promoting"
    ABORTING = "aborting"
    REPLACING = "replacing"
    COMPLETE = "complete"
    ABORTED = "aborted"
    FAILED = "failed"
    REFUSED = "refused"
    EXPIRED = "expired"
    ROLLED_BACK = "rolled back"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        Phase.COMPLETE,
        Phase.ABORTED,
        Phase.FAILED,
        Phase.REFUSED,
        Phase.EXPIRED,
        Phase.ROLLED_BACK,
    }
)


# --- observations: what the rollout is told ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """The run is recorded and holds its service's lock: go."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (the rollout's deadline came, or something woke it early)."""


@dataclass(frozen=True, slots=True)
class Approved:
    """The second approval a deploy awaited."""

    who: str


@dataclass(frozen=True, slots=True)
class Abort:
    """ABORT ROLLOUT, or a rollback pre-empting the rollout; `reason` is recorded as is."""

    reason: str


@dataclass(frozen=True, slots=True)
class Pause:
    by: str


@dataclass(frozen=True, slots=True)
class Resume:
    by: str


@dataclass(frozen=True, slots=True)
class TaskDone:
    """`RunTask`'s outcome: the output (ok) or what went wrong, secret values masked."""

    what: str
    ok: bool
    output: str


@dataclass(frozen=True, slots=True)
class StableCount:
    count: int


@dataclass(frozen=True, slots=True)
class CanariesStarted:
    """The new canaries, ready and held from traffic; or why they did not start (none
    of them runs then)."""

    names: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RoundDone:
    """One warm-up round against `instance`: each request's seconds, and the failures."""

    instance: str
    latencies: tuple[float, ...]
    failed: int


@dataclass(frozen=True, slots=True)
class ShareSet:
    """The canary's share is in force (or the router refused it: `error`)."""

    percent: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CountersRead:
    """The router's cumulative counters of both tracks, read now."""

    stable: Counters
    canary: Counters


@dataclass(frozen=True, slots=True)
class CrashLooping:
    """A canary instance is crash looping (seen whenever the rollout wakes)."""

    instance: str
    reason: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The run cannot go on (the agent is stopping, or a bug): it ends failed, as it is."""

    why: str


@dataclass(frozen=True, slots=True)
class CleanUpNow:
    """A new deploy of the service is asked for: a run that has ended cleans up now (an
    aborted rollout's canaries stop without waiting out the bake), so its lock is free."""


@dataclass(frozen=True, slots=True)
class Readopted:
    """A run a previous agent was carrying out when it died, restored from its record
    (`Run.restore`), is taken up by the next agent; `canaries` are the canary instances
    it adopted (taking traffic when the previous agent died)."""

    canaries: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Promoted:
    """The canaries are the stable instances; `old` drain, for `Retire`."""

    old: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Replaced:
    """Every instance runs the release (`error` None), or all are back on the old one."""

    error: str | None = None


@dataclass(frozen=True, slots=True)
class CanariesStopped:
    pass


@dataclass(frozen=True, slots=True)
class Retired:
    pass


Observation = (
    Begin
    | Tick
    | Approved
    | Abort
    | Pause
    | Resume
    | TaskDone
    | StableCount
    | CanariesStarted
    | RoundDone
    | ShareSet
    | CountersRead
    | CrashLooping
    | Interrupted
    | Readopted
    | CleanUpNow
    | Promoted
    | Replaced
    | CanariesStopped
    | Retired
)


# --- commands on the platform: where instances run and how traffic reaches them -----------
# The ones with an answer (an observation) are always the last of the list `step` returns.


@dataclass(frozen=True, slots=True)
class RunTask:
    """migrate or schema_version, in the release -> TaskDone."""

    what: str
    command: str


@dataclass(frozen=True, slots=True)
class CountStable:
    """How many stable instances the service runs -> StableCount."""


@dataclass(frozen=True, slots=True)
class StartCanaries:
    """Grow the canary track to `count` instances of the release -> CanariesStarted."""

    count: int


@dataclass(frozen=True, slots=True)
class WarmRound:
    """`requests` synthetic requests straight to `instance`, one after the other, each
    timed -> RoundDone."""

    instance: str
    probe: Probe
    requests: int


@dataclass(frozen=True, slots=True)
class Admit:
    """These warm canaries may take their track's traffic."""

    instances: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetWeight:
    """Each instance's weight within its track (slow start)."""

    instances: tuple[str, ...]
    weight: int


@dataclass(frozen=True, slots=True)
class SetShare:
    """The canary track's share of the requests, percent -> ShareSet."""

    percent: float


@dataclass(frozen=True, slots=True)
class ReadCounters:
    """-> CountersRead. `early`: for the early check between verdicts (the executor need
    not save the record when it changes nothing)."""

    early: bool = False


@dataclass(frozen=True, slots=True)
class StopCanaries:
    """Drain and stop every canary -> CanariesStopped."""


@dataclass(frozen=True, slots=True)
class Promote:
    """The canaries become the stable track, all traffic on them in one update -> Promoted."""


@dataclass(frozen=True, slots=True)
class Retire:
    """Drain and stop the old instances `Promoted` named -> Retired."""

    instances: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Replace:
    """Run the release on every instance, one at a time -> Replaced."""


# --- commands on the record: lines, notifications, the audit log, the releases --------------


@dataclass(frozen=True, slots=True)
class Say:
    """A line of the run's record (and of the agent's output)."""

    text: str


@dataclass(frozen=True, slots=True)
class Notify:
    what: str  # start, step, pause, promote, abort, rollback
    message: str


@dataclass(frozen=True, slots=True)
class Event:
    """A deploy event in the audit log (`delivery.events`); `why` "" is the run's reason."""

    what: str
    result: str = "ok"
    why: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Audit:
    """An entry in the audit log by the agent, on the run's service and version."""

    what: str
    result: str
    why: str


@dataclass(frozen=True, slots=True)
class MarkRelease:
    """Merge `details` into a release's record; `status` None keeps its status."""

    version: str
    status: ReleaseStatus | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WentLive:
    """`version` is the live release (the live one before it superseded), completed a
    rollout or not, rolled back from `rolled_back_from`."""

    version: str
    completed: bool
    rolled_back_from: str | None = None


Command = (
    RunTask
    | CountStable
    | StartCanaries
    | WarmRound
    | Admit
    | SetWeight
    | SetShare
    | ReadCounters
    | StopCanaries
    | Promote
    | Retire
    | Replace
    | Say
    | Notify
    | Event
    | Audit
    | MarkRelease
    | WentLive
)

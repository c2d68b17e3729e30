"""What a deploy and a rollback share: the record's fields, answers awaited, the end, and
the warm-up gate (synthetic requests until an instance is fast enough)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlifier.delivery.rollout.messages import (
    CanariesStarted,
    CanariesStopped,
    Command,
    CountersRead,
    CountStable,
    Observation,
    Phase,
    Promote,
    Promoted,
    ReadCounters,
    Replace,
    Replaced,
    Retire,
    Retired,
    RoundDone,
    RunTask,
    Say,
    SetShare,
    ShareSet,
    StableCount,
    StartCanaries,
    StopCanaries,
    TaskDone,
    WarmRound,
)
from sqlifier.stack.model import Probe, ProbeKind, Service, Warmup

__all__ = ["EPSILON", "Run", "WarmGate", "canary_possible"]

EPSILON = 0.01  # a deadline met this early is met: waits wake a little early or late

# The answer each command is carried out with; a command with one is last in its list.
ANSWERS: dict[type[Command], type[Observation]] = {
    RunTask: TaskDone,
    CountStable: StableCount,
    StartCanaries: CanariesStarted,
    WarmRound: RoundDone,
    SetShare: ShareSet,
    ReadCounters: CountersRead,
    StopCanaries: CanariesStopped,
    Promote: Promoted,
    Retire: Retired,
    Replace: Replaced,
}
_ANSWER_TYPES = frozenset(ANSWERS.values())


def _answers(command: Command | None, seen: Observation) -> bool:
    """`seen` is the answer to `command` (a share set is told from an earlier one)."""
    if command is None or type(seen) is not ANSWERS.get(type(command)):
        return False
    if isinstance(command, SetShare) and isinstance(seen, ShareSet):
        return seen.percent == command.percent
    return True


def canary_possible(spec: Service) -> bool:
    """Services without routes, or pinned to ports or data folders, have no canary."""
    return bool(spec.routes) and spec.port is None and not spec.stateful


class Run:
    """The state of one deploy or rollback, as its record shows it, and the driving loop
    both share: `step(now, seen)` returns the commands to carry out, in order."""

    kind = "deploy"

    def __init__(self, service: str, version: str, from_version: str | None, spec: Service):
        self.service = service
        self.version = version
        self.from_version = from_version
        self.spec = spec
        self.phase = Phase.STARTING
        self.step_number = 0
        self.steps: tuple[float, ...] = ()
        self.weight = 0.0  # the canary track's share now, percent
        self.step_ends: float | None = None
        self.verdict: dict[str, Any] | None = None
        self.approved_by: list[str] = []
        self.paused_by: str | None = None
        self.error: str | None = None
        self.finished: float | None = None
        self.detected_at: float | None = None
        self.restored_at: float | None = None
        self.promoted = False  # past the point where an abort can move traffic back
        self.approval_expires: float | None = None
        self.ended = False  # nothing left to do: the lock may go
        self._expect: Command | None = None  # the command whose answer is awaited

    def restore(self, record: Mapping[str, Any]) -> None:
        """The state the record of a previous agent shows, for `Readopted` (KeyError,
        TypeError, ValueError for a record that cannot be read)."""
        self.phase = Phase(str(record["state"]))
        self.step_number = int(record.get("step") or 0)
        self.steps = tuple(float(share) for share in record.get("steps") or ())
        self.weight = float(record.get("weight") or 0.0)
        verdict = record.get("verdict")
        self.verdict = dict(verdict) if isinstance(verdict, dict) else None
        self.approved_by = [str(who) for who in record.get("approved_by") or []]
        paused = record.get("paused_by")
        self.paused_by = None if paused is None else str(paused)
        detected = record.get("detected_at")
        self.detected_at = None if detected is None else float(detected)

    # --- the machine ------------------------------------------------------------------

    def step(self, now: float, seen: Observation) -> list[Command]:
        """What to do, now that `seen` happened. An answer the run no longer awaits (it
        moved on meanwhile: an abort during a warm-up round) changes nothing."""
        if self.ended:
            return []
        if type(seen) in _ANSWER_TYPES:
            if not _answers(self._expect, seen):
                return []
            self._expect = None
        commands = self.react(now, seen)
        if commands and type(commands[-1]) in ANSWERS:
            self._expect = commands[-1]
        return commands

    def react(self, now: float, seen: Observation) -> list[Command]:
        raise NotImplementedError

    @property
    def deadline(self) -> float | None:
        """When the run wants a `Tick` (None: only when something happens)."""
        return None

    @property
    def waiting(self) -> bool:
        """A command's answer is awaited."""
        return self._expect is not None

    @property
    def watching(self) -> bool:
        """Canaries take traffic and are judged: a crash loop among them aborts."""
        return False

    # --- ends -------------------------------------------------------------------------

    def finish(
        self, now: float, phase: Phase, error: str | None, quiet: bool = False
    ) -> list[Command]:
        """The outcome, once: later calls change nothing."""
        if self.phase.terminal:
            return []
        self.phase, self.error, self.finished = phase, error, now
        if quiet:
            return []
        return [Say(f"{phase.value}: {error}" if error else phase.value)]

    def end(self, commands: list[Command]) -> list[Command]:
        self.ended = True
        self._expect = None
        return commands


@dataclass
class WarmGate:
    """The warm-up gate over new instances, one after the other: rounds of synthetic
    requests until p95 <= max_p95 and none failed, for at most the warm-up timeout each."""

    instances: list[str]
    warmup: Warmup
    version: str
    deadline: float = 0.0
    rounds: int = 0

    @property
    def done(self) -> bool:
        """Every instance is warm."""
        return not self.instances or self.warmup.requests <= 0

    def start(self, now: float) -> list[Command]:
        """The first round of the next instance; [] when every instance is warm."""
        if self.warmup.requests <= 0 or not self.instances:
            return []
        self.deadline, self.rounds = now + self.warmup.timeout, 0
        return [self._round()]

    def judge(self, now: float, seen: RoundDone) -> tuple[list[Command], str | None]:
        """The lines and the next round (none once `done`), or the problem."""
        limit = self.warmup.max_p95
        self.rounds += 1
        latencies = sorted(seen.latencies)
        p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else 0.0
        shown = f"p95 {p95 * 1000:.0f}ms over {len(latencies)} requests"
        if seen.failed:
            shown += f", {seen.failed} failed"
        if not seen.failed and (limit is None or p95 <= limit):
            said: list[Command] = [
                Say(f"{seen.instance} warm after {self.rounds} round(s): {shown}")
            ]
            self.instances.pop(0)
            return said + self.start(now), None
        said = [Say(f"{seen.instance} warming up: {shown}")]
        if now >= self.deadline:
            bound = f" (max_p95 {limit * 1000:.0f}ms)" if limit is not None else ""
            return said, (
                f"{seen.instance} of {self.version} was not warm after "
                f"{self.warmup.timeout:g}s: {shown}{bound}; it took no traffic"
            )
        return [*said, self._round()], None

    def _round(self) -> WarmRound:
        limit = self.warmup.max_p95
        probe = Probe(ProbeKind.HTTP, self.warmup.path, timeout=max(2.0, 4 * (limit or 1.0)))
        return WarmRound(self.instances[0], probe, self.warmup.requests)

"""A rollback to release `version` from the live `from_version`: the target's instances
start beside the live ones, warm up, and take all the traffic in one update; the bad
release drains and stops. Services without a canary replace their instances instead."""

from __future__ import annotations

from sqlifier.delivery import events
from sqlifier.delivery.records import ReleaseStatus
from sqlifier.delivery.rollout.base import Run, WarmGate, canary_possible
from sqlifier.delivery.rollout.messages import (
    Admit,
    Begin,
    CanariesStarted,
    CanariesStopped,
    Command,
    CountStable,
    Event,
    Interrupted,
    MarkRelease,
    Notify,
    Observation,
    Phase,
    Promote,
    Promoted,
    Readopted,
    Replace,
    Replaced,
    Retire,
    Retired,
    RoundDone,
    Say,
    StableCount,
    StartCanaries,
    StopCanaries,
    WentLive,
)
from sqlifier.stack.model import Service

__all__ = ["Rollback"]


class Rollback(Run):
    kind = "rollback"

    def __init__(self, service: str, version: str, from_version: str, spec: Service) -> None:
        super().__init__(service, version, from_version, spec)
        self.live = from_version
        self._warm: WarmGate | None = None
        self._fresh: tuple[str, ...] = ()
        self._problem = ""

    def react(self, now: float, seen: Observation) -> list[Command]:
        match seen:
            case Begin():
                return self._begin(now)
            case StableCount(count):
                return [StartCanaries(max(1, count))]
            case CanariesStarted(names, error):
                return self._started(now, names, error)
            case RoundDone() if self._warm is not None:
                commands, problem = self._warm.judge(now, seen)
                if problem is not None:
                    self._problem = f"{problem}; {self.live} still takes the traffic"
                    return [*commands, StopCanaries()]
                if self._warm.done:
                    return [*commands, Admit(self._fresh), Promote()]
                return commands
            case CanariesStopped():
                return self.end(self.finish(now, Phase.FAILED, self._problem))
            case Promoted(old):
                self.restored_at = now
                self.weight = 100.0
                return [*self._rolled_back(now), Retire(old)]
            case Retired():
                return self.end([])
            case Replaced(error):
                return self._replaced(now, error)
            case Interrupted(why):
                return self.end(self.finish(now, Phase.FAILED, why))
            case Readopted() if not self.phase.terminal:
                return self._again(now)
        return []

    def _again(self, now: float) -> list[Command]:
        """After an agent restart: the rollback starts again (the instances it had started
        were stopped with the agent's; the live release still takes the traffic)."""
        self.phase = Phase.STARTING
        self.detected_at = self.detected_at or now
        said = Say("the agent restarted: the rollback starts again")
        if not canary_possible(self.spec):
            self.phase = Phase.REPLACING
            return [said, Replace()]
        return [said, CountStable()]

    def _begin(self, now: float) -> list[Command]:
        self.detected_at = now
        commands: list[Command] = [
            Event(events.ROLLBACK, details={"from_version": self.live}),
            Notify("rollback", f"rolling {self.service} back from {self.live}"),
        ]
        if not canary_possible(self.spec):
            self.phase = Phase.REPLACING
            return [*commands, Replace()]
        return [*commands, CountStable()]

    def _started(self, now: float, names: tuple[str, ...], error: str | None) -> list[Command]:
        if error is not None:
            why = f"{self.version} did not start: {error}; {self.live} still takes the traffic"
            return self.end(self.finish(now, Phase.FAILED, why))
        self.phase = Phase.WARMING_UP
        self._fresh = names
        self._warm = WarmGate(list(names), self.spec.warmup, self.version)
        return [Admit(names), Promote()] if self._warm.done else self._warm.start(now)

    def _replaced(self, now: float, error: str | None) -> list[Command]:
        if error is not None:
            why = f"{self.version} did not start: {error}; {self.live} still runs"
            return self.end(self.finish(now, Phase.FAILED, why))
        self.restored_at = now
        return self.end(self._rolled_back(now))

    def _rolled_back(self, now: float) -> list[Command]:
        self.promoted = True
        back = {"rolled_back_to": self.version, "rolled_back_at": now}
        times = {
            "from_version": self.live,
            "detected_at": self.detected_at,
            "restored_at": self.restored_at,
        }
        return [
            MarkRelease(self.live, ReleaseStatus.ROLLED_BACK, back),
            WentLive(self.version, completed=False, rolled_back_from=self.live),
            Event(events.ROLLBACK_COMPLETE, details=times),
            Say(f"all traffic on {self.version}; {self.live} drains and stops"),
            Notify("rollback", f"{self.service} rolled back to {self.version}"),
            *self.finish(now, Phase.ROLLED_BACK, None),
        ]

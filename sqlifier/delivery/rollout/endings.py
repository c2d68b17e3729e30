"""How a deploy ends: promoted, replaced, or aborted with the traffic back on stable
first, the release marked failed and the canaries stopped after the bake time."""

from __future__ import annotations

from sqlifier.delivery import events
from sqlifier.delivery.records import ReleaseStatus
from sqlifier.delivery.rollout.base import Run
from sqlifier.delivery.rollout.messages import (
    Command,
    Event,
    MarkRelease,
    Notify,
    Phase,
    Retire,
    Say,
    SetShare,
    WentLive,
)
from sqlifier.stack.model import Service

__all__ = ["Endings"]


class Endings(Run):
    """The outcomes of a deploy; `Rollout` is the way there."""

    def __init__(self, service: str, version: str, from_version: str | None, spec: Service):
        super().__init__(service, version, from_version, spec)
        self.started = False  # DEPLOY_START written: it ends with COMPLETE or ABORT
        self.outcome_recorded = True
        self._abort_why = ""
        self._abort_checks: list[object] = []
        self._abort_said: list[Command] = []
        self.cleanup_at: float | None = None  # aborted: the canaries stop then

    def settle(self) -> None:
        """Nothing more to pace or judge (an abort)."""

    def _promoted(self, now: float, old: tuple[str, ...]) -> list[Command]:
        self.promoted = True
        self.weight = 100.0
        self.outcome_recorded = True
        return [
            WentLive(self.version, completed=True),
            Event(events.ROLLOUT_COMPLETE),
            Notify("promote", f"{self.service} {self.version} promoted"),
            *self.finish(now, Phase.COMPLETE, None),
            Say(f"promoted; stopping {len(old)} old instance(s)"),
            Retire(old),
        ]

    def _replaced(self, now: float, error: str | None) -> list[Command]:
        if error is not None:
            why = f"{error}; every instance is back on {self.from_version}"
            self.detected_at = self.restored_at = now
            self.outcome_recorded = True
            times = {"detected_at": now, "restored_at": now}
            event = Event(events.ROLLOUT_ABORT, why=why, details=times)
            return self.end([event, *self._fail(now, why, Phase.ABORTED)])
        self.promoted = True
        self.outcome_recorded = True
        return self.end(
            [
                WentLive(self.version, completed=True),
                Event(events.ROLLOUT_COMPLETE),
                Notify("promote", f"{self.service} {self.version} deployed"),
                *self.finish(now, Phase.COMPLETE, None),
            ]
        )

    def abort(
        self, now: float, why: str, with_checks: bool, said: list[Command] | None = None
    ) -> list[Command]:
        """Traffic back on stable first: the share goes to 0 before anything else, even
        the lines `said` that led to the abort (recorded once the traffic is back)."""
        self.phase = Phase.ABORTING
        if self.detected_at is None:
            self.detected_at = now
        self._abort_why = why
        self._abort_checks = list((self.verdict or {}).get("checks", [])) if with_checks else []
        self._abort_said = said or []
        self.settle()
        return [SetShare(0.0)]

    def _traffic_back(self, now: float, error: str | None) -> list[Command]:
        commands: list[Command] = self._abort_said
        if error is not None:  # the canaries stop below, and drain on the way
            commands.append(Say(f"the router did not take the change: {error}"))
        self.restored_at = now
        self.weight = 0.0
        why, checks = self._abort_why, self._abort_checks
        times = {"detected_at": self.detected_at, "restored_at": now}
        self.outcome_recorded = True
        bake = self.spec.rollout.bake
        self.cleanup_at = now + bake
        return [
            *commands,
            Say(f"aborted: {why}; all traffic is back on {self.from_version}"),
            Event(events.ROLLOUT_ABORT, why=why, details={**times, "checks": checks}),
            *self._fail(now, why, Phase.ABORTED, quiet=True, checks=checks),
            Notify("abort", f"rollout of {self.service} {self.version} aborted: {why}"),
            Say(f"stopping the canary in {bake:g}s"),
        ]

    def _fail(
        self,
        now: float,
        why: str,
        phase: Phase = Phase.FAILED,
        quiet: bool = False,
        checks: list[object] | None = None,
    ) -> list[Command]:
        details: dict[str, object] = {"failed_at": now, "failed_reason": why}
        if checks is not None:
            details["checks"] = checks
        commands: list[Command] = [MarkRelease(self.version, ReleaseStatus.FAILED, details)]
        if not self.outcome_recorded:  # it started: DORA counts it as a failed deployment
            self.outcome_recorded = True
            times = {
                "detected_at": self.detected_at or now,
                "restored_at": self.restored_at or now,
            }
            commands.append(Event(events.ROLLOUT_ABORT, why=why, details=times))
        return commands + self.finish(now, phase, why, quiet)

    def _interrupted(self, now: float, why: str) -> list[Command]:
        commands: list[Command] = []
        if self.started and not self.promoted and not self.phase.terminal:
            commands = self._fail(now, why)
        return self.end(commands + self.finish(now, Phase.FAILED, why))

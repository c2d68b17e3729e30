"""One step of a rollout (or its bake) being judged: every `interval` from its start, the
counters of both tracks since the start go to `delivery.analysis`; the step's end is
always judged, and a step lasts until it has run its length and passed.

Between those verdicts, every `EARLY_EVERY` seconds, the early check reads the counters
too and looks only for a failure that is already certain (`analysis.certain_failure`):
a blatant one aborts at once, whatever the interval; anything else waits for the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlifier.delivery.analysis import Verdict, analyse, certain_failure
from sqlifier.delivery.rollout.base import EPSILON
from sqlifier.router.metrics import Counters
from sqlifier.stack.model import Rollout as Settings

__all__ = ["EARLY_EVERY", "StepJudge", "verdict_summary"]

# Seconds between early checks: twice a second, so that a failure certain at the canary's
# first few errors is off the traffic within a second of them.
EARLY_EVERY = 0.5


@dataclass
class StepJudge:
    length: float  # `pause` for a step, `bake` for the bake
    final: bool  # the bake
    settings: Settings
    before: tuple[Counters, Counters] | None = None  # stable, canary at the start
    started: float = 0.0
    due: float = 0.0
    end: float = 0.0
    elapsed: float = 0.0  # at the judging under way
    notified: bool = False  # paused for want of traffic (once a step, or a resume)
    patient_from: float = 0.0  # the start, or the last resume: "too few for too long" from here
    early_at: float | None = None  # the next early check (None: off, or not begun)
    peeking: bool = False  # the counters under way are for the early check

    @property
    def deadline(self) -> float | None:
        if self.before is None:
            return None
        return self.due if self.early_at is None else min(self.due, self.early_at)

    def begin(self, now: float, stable: Counters, canary: Counters) -> None:
        self.before, self.started = (stable, canary), now
        self.patient_from = now
        self.end = now + self.length
        self.due = now + min(self.settings.interval, self.length)
        if self.settings.early_abort:
            self.early_at = now + EARLY_EVERY

    def early_now(self, now: float) -> bool:
        """An early check is due (none when a verdict is): the next one planned."""
        if self.early_at is None or now < self.early_at - EPSILON:
            return False
        self.early_at = now + EARLY_EVERY
        self.peeking = True
        return True

    def due_now(self, now: float) -> bool:
        """A judging is due: its time noted, the next one planned."""
        if self.before is None or now < self.due - EPSILON:
            return False
        self.elapsed = now - self.started
        self.due += self.settings.interval
        if self.due > self.end > now:
            self.due = self.end  # the step's end is always judged
        if self.early_at is not None:
            self.early_at = now + EARLY_EVERY  # the verdict is the check for now
        self.peeking = False
        return True

    def verdict(self, stable: Counters, canary: Counters) -> Verdict:
        """The step so far; AnalysisError for an expression `check` would refuse."""
        assert self.before is not None
        return analyse(
            canary.minus(self.before[1]),
            stable.minus(self.before[0]),
            self.settings.analysis,
            self.settings.min_requests,
            seconds=max(self.elapsed, 0.001),
        )

    def certain(self, stable: Counters, canary: Counters) -> Verdict | None:
        """The early check on the step so far: a failing verdict if its failure is
        certain, else None; AnalysisError as `verdict`."""
        assert self.before is not None
        return certain_failure(
            canary.minus(self.before[1]),
            stable.minus(self.before[0]),
            self.settings.analysis,
            self.settings.min_requests,
        )

    @property
    def lasted(self) -> bool:
        return self.elapsed >= self.length - EPSILON

    def resumed(self, now: float) -> None:
        """Resumed by hand ("resume it when traffic comes"): the requests counted so far
        still count, but the wait for enough of them starts again from now."""
        self.patient_from, self.notified = now, False

    @property
    def starved(self) -> bool:
        """Too few requests for pause x 3 (since the start or the last resume), not said
        yet."""
        waited = self.started + self.elapsed - self.patient_from
        return waited >= 3 * self.length - EPSILON and not self.notified


def verdict_summary(verdict: Verdict) -> str:
    summary = ", ".join(
        f"{c.name} {c.value}" for c in verdict.checks if c.counts and c.passed is not None
    )
    # No measured check: say how many requests there were to judge.
    return summary or f"{verdict.canary_requests} canary requests"

"""The deploy of one release: approval, migrate, canary steps judged every interval, bake,
promotion, or the abort that moves traffic back first (see the package's docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlifier.delivery import events
from sqlifier.delivery.analysis import AnalysisError, Verdict
from sqlifier.delivery.rollout.base import EPSILON, WarmGate, canary_possible
from sqlifier.delivery.rollout.endings import Endings
from sqlifier.delivery.rollout.judging import StepJudge, verdict_summary
from sqlifier.delivery.rollout.messages import (
    Abort,
    Admit,
    Approved,
    Audit,
    Begin,
    CanariesStarted,
    CanariesStopped,
    CleanUpNow,
    Command,
    CountersRead,
    CountStable,
    CrashLooping,
    Event,
    Interrupted,
    MarkRelease,
    Notify,
    Observation,
    Pause,
    Phase,
    Promote,
    Promoted,
    ReadCounters,
    Readopted,
    Replace,
    Replaced,
    Resume,
    Retired,
    RoundDone,
    RunTask,
    Say,
    SetShare,
    SetWeight,
    ShareSet,
    StableCount,
    StartCanaries,
    StopCanaries,
    TaskDone,
    Tick,
)
from sqlifier.delivery.schema import read_revision
from sqlifier.router.metrics import Counters
from sqlifier.stack.model import Service

__all__ = ["RAMP_EVERY", "Rollout"]

RAMP_EVERY = 0.5  # seconds between slow-start changes
JUDGING = frozenset({Phase.STEP, Phase.PAUSED, Phase.WAITING_FOR_DATA, Phase.BAKING})
# Before any canary exists an abort waits for the migration to end (nothing to move back).
BEFORE_CANARY = frozenset({Phase.STARTING, Phase.APPROVED, Phase.MIGRATING})
ABORTABLE = JUDGING | {Phase.STARTING_CANARY, Phase.WARMING_UP, Phase.SLOW_START}


@dataclass
class _Ramp:
    """slow_start: instances' weights, or the first step's share, growing over `seconds`."""

    started: float
    seconds: float
    next_at: float
    instances: tuple[str, ...] = ()
    share: float = 0.0


class Rollout(Endings):
    """One deploy of `version` of `service`, from `from_version`, run with its release's
    config `spec`. `awaiting` (what the approval is waiting for) starts it awaiting a
    second approval until `expires`."""

    kind = "deploy"

    def __init__(
        self,
        service: str,
        version: str,
        from_version: str | None,
        who: str,
        spec: Service,
        migrated: bool = False,
        awaiting: str | None = None,
        expires: float | None = None,
        approved_by: tuple[str, ...] = (),
    ) -> None:
        super().__init__(service, version, from_version, spec)
        self.who = who
        self.migrated = migrated  # migrate already ran for this release
        self.approved_by = list(approved_by)
        self.note = awaiting
        if awaiting is not None:
            self.phase = Phase.AWAITING_APPROVAL
            self.approval_expires = expires
        self.abort_asked: str | None = None  # before any canary: acted on after migrate
        self._full = 1  # the stable instance count the steps are shares of
        self._canaries: list[str] = []
        self._index = 0
        self._approved_at: float | None = None  # approved, not started yet
        self._warm: WarmGate | None = None
        self._fresh: list[str] = []
        self._judge: StepJudge | None = None
        self._ramps: list[_Ramp] = []  # instance weights (steps after the first)
        self._slow: _Ramp | None = None  # the first step's share
        # Held after an agent restart, traffic on stable: what `Resume` goes on with
        # ("prepare": migrate and place; "replace"; "canary": start the step's canaries).
        self._held: str | None = None

    def settle(self) -> None:
        self._judge = self._slow = self._warm = None
        self._ramps = []
        self._held = None

    # --- what wakes it ----------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        times = []
        if self.phase is Phase.AWAITING_APPROVAL and self.approval_expires is not None:
            times.append(self.approval_expires)
        if self._approved_at is not None:
            times.append(self._approved_at)
        times += [ramp.next_at for ramp in self._ramps]
        if not self.waiting:
            if self._slow is not None:
                times.append(self._slow.next_at)
            if self._judge is not None and self._judge.deadline is not None:
                times.append(self._judge.deadline)
            if self.cleanup_at is not None:
                times.append(self.cleanup_at)
        return min(times) if times else None

    @property
    def watching(self) -> bool:
        return self.phase in JUDGING

    def react(self, now: float, seen: Observation) -> list[Command]:
        match seen:
            case Begin():
                return self._begin(now)
            case Tick():
                return self._tick(now)
            case Approved(who):
                return self._approved(now, who)
            case Abort(reason):
                return self._abort_asked(now, reason)
            case Pause(by) if not self.phase.terminal and not self.promoted:
                self.paused_by = by
                message = f"rollout of {self.version} paused by {by}"
                return [Say(f"paused by {by}"), Notify("pause", message)]
            case Resume(by) if not self.phase.terminal and not self.promoted:
                self.paused_by = None
                if self._judge is not None and self._judge.before is not None:
                    self._judge.resumed(now)
                return [Say(f"resumed by {by}"), *self._go_on(now)]
            case Readopted(canaries) if not self.phase.terminal:
                return self._readopted(now, canaries)
            case CleanUpNow() if self.cleanup_at is not None and not self.waiting:
                self.cleanup_at = None  # aborted: its canaries stop now
                return [Say("a new deploy is asked for: stopping the canary now"), StopCanaries()]
            case CrashLooping(instance, reason) if self.watching:
                return self.abort(now, f"canary {instance} is crash looping: {reason}", True)
            case Interrupted(why):
                return self._interrupted(now, why)
        return self._answered(now, seen)

    def _answered(self, now: float, seen: Observation) -> list[Command]:
        match seen:
            case TaskDone(what, ok, output):
                return self._task_done(now, what, ok, output)
            case StableCount(count):
                self._full = max(1, count)
                return self._next_step(now)
            case CanariesStarted(names, error):
                return self._canaries_started(now, names, error)
            case RoundDone() if self._warm is not None:
                commands, problem = self._warm.judge(now, seen)
                if problem is not None:
                    return self.abort(now, problem, False, said=commands)
                return commands + self._warmed(now) if self._warm.done else commands
            case ShareSet(percent, error):
                return self._share_set(now, percent, error)
            case CountersRead(stable, canary) if self._judge is not None:
                return self._counted(now, self._judge, stable, canary)
            case Promoted(old):
                return self._promoted(now, old)
            case Replaced(error):
                return self._replaced(now, error)
            case CanariesStopped() | Retired():
                return self.end([])
        return []

    # --- approval and the start -------------------------------------------------------

    def _begin(self, now: float) -> list[Command]:
        if self.phase is Phase.AWAITING_APPROVAL:
            if self.approval_expires is not None and now >= self.approval_expires:
                return self._expire(now)
            return [Say(self.note)] if self.note else []
        return self._start(now)

    def _approved(self, now: float, who: str) -> list[Command]:
        if self.phase is not Phase.AWAITING_APPROVAL:
            return []
        self.approved_by.append(who)
        self.phase = Phase.APPROVED
        self._approved_at = now  # it starts at the next tick, at once
        return [Say(f"approved by {who}")]

    def _expire(self, now: float) -> list[Command]:
        said = self.finish(now, Phase.EXPIRED, "no approver approved it in time")
        return self.end([*said, Audit("deploy", "expired", "")])

    def _start(self, now: float) -> list[Command]:
        self.steps = self.spec.rollout.steps
        self.started, self.outcome_recorded = True, False
        commands: list[Command] = [
            Event(events.DEPLOY_START),
            Say(f"deploy of {self.version} started by {self.who}"),
            Notify("start", f"deploy of {self.service} {self.version} started"),
        ]
        return commands + self._prepare(now)

    def _prepare(self, now: float) -> list[Command]:
        """The migration (unless it ran for this release), then the schema revision."""
        migrate = self.spec.migrate
        if migrate and self.migrated:
            return [Say("migrate: already ran for this release"), *self._schema(now)]
        if migrate:
            self.phase = Phase.MIGRATING
            return [Say(f"migrate: {migrate}"), RunTask("migrate", migrate)]
        return self._schema(now)

    # --- after an agent restart -------------------------------------------------------

    def _readopted(self, now: float, canaries: tuple[str, ...]) -> list[Command]:
        """The run a previous agent was carrying out when it died goes on where it was:
        at its step with the canaries adopted, judging from now (what was judged before
        is not carried over). Where it cannot — the canaries that took traffic are gone,
        a migration or a replacement was cut off — all traffic goes to stable first and
        the run is paused for `rollout resume` or `rollout abort`."""
        self.started, self.outcome_recorded = True, False
        self.steps = self.steps or self.spec.rollout.steps
        restarted = "the agent restarted"
        if self.phase in BEFORE_CANARY:
            if self.phase is Phase.MIGRATING and not self.migrated:
                why = f"{restarted} during the migration; check the database before resuming"
                return self._hold(why, "prepare")
            return [Say(f"{restarted}: the deploy goes on"), *self._prepare(now)]
        if self.phase is Phase.REPLACING:
            why = f"{restarted} while replacing instances: every instance runs {self.from_version}"
            return self._hold(why, "replace")
        self._canaries = list(canaries)
        baking = self.phase in (Phase.BAKING, Phase.PROMOTING)
        self._index = len(self.steps) if baking else max(0, self.step_number - 1)
        if not canaries and self.weight > 0:
            why = f"{restarted} and the canary instances of {self.version} were gone"
            return self._hold(why, "canary")
        where = "the bake" if baking else f"step {self.step_number}/{len(self.steps)}"
        said = Say(
            f"{restarted}: {len(canaries)} canary instance(s) adopted at {where} "
            f"({self.weight:g}%); judging starts again"
        )
        return [said, CountStable()]

    def _hold(self, why: str, then: str) -> list[Command]:
        """Traffic on stable first, then paused (`_share_set`) until resumed."""
        self._held = then
        self.phase = Phase.PAUSED
        self.paused_by = (
            f"{why}; all traffic is on {self.from_version}: `sqlifier rollout resume "
            f"{self.service}` goes on, `sqlifier rollout abort {self.service}` ends the deploy"
        )
        return [SetShare(0.0)]

    def _held_now(self, error: str | None) -> list[Command]:
        self.weight = 0.0
        said = [Say(f"the router did not take the change: {error}")] if error else []
        return [
            *said,
            Say(f"paused: {self.paused_by}"),
            Notify("pause", f"rollout of {self.version} paused: {self.paused_by}"),
            Audit("rollout pause", "ok", str(self.paused_by)),
        ]

    def _go_on(self, now: float) -> list[Command]:
        """Resumed: a run held after an agent restart goes on from where it was."""
        then, self._held = self._held, None
        if then == "prepare":
            return self._prepare(now)
        if then == "replace":
            self.phase = Phase.REPLACING
            return [Replace()]
        if then == "canary":
            return [CountStable()]
        return []

    def _schema(self, now: float) -> list[Command]:
        if self.spec.schema_version:
            return [RunTask("schema_version", self.spec.schema_version)]
        return self._placed(now)

    def _task_done(self, now: float, what: str, ok: bool, output: str) -> list[Command]:
        if what == "migrate" and not ok:
            why = (
                f"the migration failed: {output}; no instance of {self.version} took "
                "traffic (the database may be partly migrated: check it before retrying)"
            )
            return self.end(self._fail(now, why))
        if what == "migrate":
            done = MarkRelease(self.version, None, {"migrated_at": now})
            return [Say("migrate: done"), done, *self._schema(now)]
        if not ok:
            return self.end(self._fail(now, f"schema_version failed: {output}"))
        revision = read_revision(output)
        mark = MarkRelease(self.version, None, {"schema": revision})
        return [Say(f"schema revision: {revision}"), mark, *self._placed(now)]

    def _placed(self, now: float) -> list[Command]:
        """Migrated: the canary rollout, or (no canary possible) a replacement."""
        if self.abort_asked is not None:
            return self.abort(now, self.abort_asked, False)
        if canary_possible(self.spec):
            return [CountStable()]
        self.phase = Phase.REPLACING
        return [Say("no canary for this service: replacing instances one at a time"), Replace()]

    # --- the steps --------------------------------------------------------------------

    def _next_step(self, now: float) -> list[Command]:
        if self._index >= len(self.steps):
            return self._bake()
        share = self.steps[self._index]
        self.step_number = self._index + 1
        count = min(self._full, max(1, math.ceil(self._full * share / 100)))
        if len(self._canaries) < count:
            self.phase = Phase.STARTING_CANARY
            return [StartCanaries(count)]
        return self._shift_to_step(now)

    def _canaries_started(
        self, now: float, names: tuple[str, ...], error: str | None
    ) -> list[Command]:
        if error is not None:
            return self.abort(now, f"the canary did not start: {error}", False)
        self._canaries += names
        self._fresh = list(names)
        self.phase = Phase.WARMING_UP
        self._warm = WarmGate(list(names), self.spec.warmup, self.version)
        return self._warmed(now) if self._warm.done else self._warm.start(now)

    def _warmed(self, now: float) -> list[Command]:
        """Every new canary is warm: in, and the step's share (slow start ramps it)."""
        self._warm = None
        fresh = tuple(self._fresh)
        commands: list[Command] = [Admit(fresh)]
        seconds = self.spec.warmup.slow_start
        if self._index > 0 and seconds:
            self._ramps.append(_Ramp(now, seconds, now + RAMP_EVERY, instances=fresh))
            commands.append(SetWeight(fresh, 1))
        return commands + self._shift_to_step(now)

    def _shift_to_step(self, now: float) -> list[Command]:
        share = self.steps[self._index]
        seconds = self.spec.warmup.slow_start
        if self._index == 0 and seconds:
            self.phase = Phase.SLOW_START
            self._slow = _Ramp(now, seconds, now, share=share)
            return [SetWeight(tuple(self._canaries), 100), SetShare(0.1)]
        return [SetShare(share)]

    def _share_set(self, now: float, percent: float, error: str | None) -> list[Command]:
        if self.phase is Phase.ABORTING:
            return self._traffic_back(now, error)
        if self._held is not None:
            return self._held_now(error)
        if error is not None:
            return self.abort(now, f"the router did not take the change: {error}", False)
        self.weight = percent
        if self._slow is not None:  # on the way up: the next change in RAMP_EVERY
            self._slow.next_at = now + RAMP_EVERY
            return []
        total = len(self.steps)
        said = Say(f"step {self.step_number}/{total}: {percent:g}% of traffic")
        return [said, *self._judging(self.spec.rollout.pause, final=False)]

    def _bake(self) -> list[Command]:
        self.phase = Phase.BAKING
        bake = self.spec.rollout.bake
        said = Say(f"baking for {bake:g}s; the old instances stay running")
        return [said, *self._judging(bake, final=True)]

    # --- judging ----------------------------------------------------------------------

    def _judging(self, length: float, final: bool) -> list[Command]:
        self._judge = StepJudge(length, final, self.spec.rollout)
        return [ReadCounters()]

    def _tick(self, now: float) -> list[Command]:
        commands: list[Command] = []
        for ramp in list(self._ramps):
            if now >= ramp.next_at - EPSILON:
                commands += self._ramp_weights(now, ramp)
        if self.phase is Phase.AWAITING_APPROVAL:
            if self.approval_expires is not None and now >= self.approval_expires - EPSILON:
                return self._expire(now)
            return commands
        if self._approved_at is not None:
            self._approved_at = None
            return self._start(now)
        if self.waiting:
            return commands
        if self._slow is not None and now >= self._slow.next_at - EPSILON:
            slow = self._slow
            elapsed = now - slow.started
            if elapsed >= slow.seconds:
                self._slow = None  # the step's own share, then the step
                return [*commands, SetShare(slow.share)]
            return [*commands, SetShare(max(0.1, slow.share * elapsed / slow.seconds))]
        judge = self._judge
        if judge is not None and judge.due_now(now):
            return [*commands, ReadCounters()]
        if judge is not None and judge.early_now(now):
            return [*commands, ReadCounters(early=True)]
        if self.cleanup_at is not None and now >= self.cleanup_at - EPSILON:
            self.cleanup_at = None
            return [*commands, StopCanaries()]
        return commands

    def _ramp_weights(self, now: float, ramp: _Ramp) -> list[Command]:
        elapsed = now - ramp.started
        if elapsed >= ramp.seconds:
            self._ramps.remove(ramp)
            return [SetWeight(ramp.instances, 100)]
        ramp.next_at = now + RAMP_EVERY
        return [SetWeight(ramp.instances, max(1, round(100 * elapsed / ramp.seconds)))]

    def _counted(
        self, now: float, judge: StepJudge, stable: Counters, canary: Counters
    ) -> list[Command]:
        if judge.before is None:  # the step begins
            judge.begin(now, stable, canary)
            self.step_ends = now + judge.length
            if not judge.final:
                self.phase = Phase.STEP
            return []
        if judge.peeking:
            judge.peeking = False
            return self._early(now, judge, stable, canary)
        try:
            verdict = judge.verdict(stable, canary)
        except AnalysisError as exc:  # `check` refuses these; a release made before that
            return self.abort(now, str(exc), False)
        self.verdict = verdict.to_json()
        line = f"step {self.step_number} at {self.weight:g}%: {verdict.outcome}"
        said: list[Command] = [Say(f"{line} ({verdict_summary(verdict)})")]
        if verdict.outcome == "fail":
            self.detected_at = now
            failing = [c for c in verdict.checks if c.passed is False]
            why = "analysis failed: " + "; ".join(f"{c.name}: {c.value}" for c in failing)
            return self.abort(now, why, True, said=said)
        return said + self._judged(now, judge, verdict)

    def _early(
        self, now: float, judge: StepJudge, stable: Counters, canary: Counters
    ) -> list[Command]:
        """The early check between verdicts: an abort, traffic first, when the step's
        failure is already certain; nothing at all otherwise (no line, no record)."""
        try:
            verdict = judge.certain(stable, canary)
        except AnalysisError:  # the interval's verdict says so and aborts
            return []
        if verdict is None:
            return []
        self.verdict = verdict.to_json()
        self.detected_at = now
        seconds = now - judge.started
        where = f"step {self.step_number} at {self.weight:g}%"
        if judge.final:
            where = f"the bake at {self.weight:g}%"
        said: list[Command] = [
            Say(f"{where}: certain failure {seconds:.1f}s in ({verdict_summary(verdict)})")
        ]
        failing = [c for c in verdict.checks if c.passed is False]
        why = (
            f"early analysis: certain failure {seconds:.1f}s into the step, before the "
            f"{self.spec.rollout.interval:g}s verdict: "
            + "; ".join(f"{c.name}: {c.value}" for c in failing)
        )
        return self.abort(now, why, True, said=said)

    def _judged(self, now: float, judge: StepJudge, verdict: Verdict) -> list[Command]:
        if self.paused_by is not None:
            self.phase = Phase.PAUSED
            return []
        if not judge.lasted:
            return []
        if verdict.outcome == "pass":
            return self._passed(now, judge, verdict)
        commands: list[Command] = []
        if judge.starved:
            judge.notified = True
            commands = self._pause_for_data(verdict, 3 * judge.length)
        if not judge.final:
            self.phase = Phase.PAUSED if self.paused_by else Phase.WAITING_FOR_DATA
        return commands

    def _passed(self, now: float, judge: StepJudge, verdict: Verdict) -> list[Command]:
        details = {
            "weight": self.weight,
            "step": self.step_number,
            "verdict": "pass",
            "checks": [c.to_json() for c in verdict.checks],
        }
        message = f"step {self.step_number} ({self.weight:g}%) passed"
        commands: list[Command] = [
            Event(events.ROLLOUT_STEP, details=details),
            Notify("step", message),
        ]
        self._judge = None
        if judge.final:
            self.phase = Phase.PROMOTING
            # Instances still on their way up take their full weight as they become stable.
            commands += [SetWeight(ramp.instances, 100) for ramp in self._ramps]
            self._ramps = []
            return [*commands, Promote()]
        self._index += 1
        return commands + self._next_step(now)

    def _pause_for_data(self, verdict: Verdict, waited: float) -> list[Command]:
        """Too few requests for too long: paused, notified once; no data is no pass."""
        needed = self.spec.rollout.min_requests
        self.paused_by = (
            f"analysis: too few requests after {waited:g}s ({verdict.canary_requests} of {needed})"
        )
        self.phase = Phase.PAUSED
        return [
            Say(f"paused: {self.paused_by}; resume it when traffic comes"),
            Notify("pause", f"rollout of {self.version} paused: {self.paused_by}"),
            Audit("rollout pause", "ok", self.paused_by),
        ]

    def _abort_asked(self, now: float, reason: str) -> list[Command]:
        if self.phase is Phase.AWAITING_APPROVAL:  # nothing started: nothing to move back
            return self.end(self.finish(now, Phase.ABORTED, f"{reason} before it started"))
        if self.phase in BEFORE_CANARY:
            self.abort_asked = reason
            return []
        if self.phase in ABORTABLE:
            return self.abort(now, reason, self.phase in JUDGING)
        return []  # replacing, promoting, aborting or over: too late

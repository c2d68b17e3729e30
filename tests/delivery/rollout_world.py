"""A virtual world for the rollout's timeline tests: a clock that jumps from deadline to
deadline, a platform that answers the machine's commands (each taking the seconds the
test gives it), and traffic that the router's counters add up at a steady rate.

It carries commands out as the agent's executor does: one queue, in order, answers fed
back; observations scheduled with `at` are fed when the clock passes them, also while a
command is under way (their commands then wait behind it).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlifier.delivery.rollout import Command, Observation, Run
from sqlifier.delivery.rollout.messages import (
    Admit,
    Audit,
    Begin,
    CanariesStarted,
    CanariesStopped,
    CountersRead,
    CountStable,
    Event,
    MarkRelease,
    Notify,
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
    SetWeight,
    ShareSet,
    StableCount,
    StartCanaries,
    StopCanaries,
    TaskDone,
    Tick,
    WarmRound,
    WentLive,
)
from sqlifier.router.metrics import BUCKETS_MS, Counters
from sqlifier.stack.model import Rollout as RolloutSettings
from sqlifier.stack.model import Route, Service, Warmup

RECORD = (Say, Notify, Event, Audit, MarkRelease, WentLive)
FAST_BUCKET = 6  # 10 ms


def service(
    steps: tuple[float, ...] = (10.0, 50.0, 100.0),
    pause: float = 30.0,
    interval: float = 10.0,
    bake: float = 30.0,
    min_requests: int = 50,
    warmup: Warmup | None = None,
    routes: bool = True,
    migrate: str | None = None,
    schema_version: str | None = None,
    analysis: tuple[str, ...] = (),
    early_abort: bool = True,
) -> Service:
    return Service(
        "web",
        "python app.py",
        Path("."),
        routes=(Route(None, "/web"),) if routes else (),
        migrate=migrate,
        schema_version=schema_version,
        warmup=warmup or Warmup(),
        rollout=RolloutSettings(
            steps=steps,
            pause=pause,
            interval=interval,
            bake=bake,
            min_requests=min_requests,
            analysis=analysis,
            early_abort=early_abort,
        ),
    )


def show(command: Command) -> str:
    """A command in a few words, for timelines that read like a log."""
    match command:
        case Say(text):
            return f"say: {text}"
        case Notify(what, _):
            return f"notify {what}"
        case Event(what, _, _, _):
            return f"event {what}"
        case Audit(what, result, _):
            return f"audit {what} {result}"
        case MarkRelease(version, status, details):
            return f"mark {version} {status or '-'} {'+'.join(sorted(details))}"
        case WentLive(version, _, _):
            return f"live {version}"
        case SetShare(percent):
            return f"share {percent:g}"
        case SetWeight(instances, weight):
            return f"weight {','.join(instances)} {weight}"
        case StartCanaries(count):
            return f"start canaries {count}"
        case WarmRound(instance, _, requests):
            return f"warm round {instance} x{requests}"
        case Admit(instances):
            return f"admit {','.join(instances)}"
        case RunTask(what, _):
            return f"run {what}"
        case Retire(instances):
            return f"retire {','.join(instances)}"
    if isinstance(command, ReadCounters) and command.early:
        return "peek counters"  # the early check between verdicts
    return {
        CountStable: "count stable",
        ReadCounters: "read counters",
        StopCanaries: "stop canaries",
        Promote: "promote",
        Replace: "replace",
    }[type(command)]


@dataclass
class Traffic:
    """Requests per second over both tracks, split by the canary's share; the canary's
    answers fail at `canary_errors` (a fraction), from `errors_from` seconds on, the stable
    ones at `stable_errors`. Counts are whole requests of the running totals, so reading
    the counters often changes none of them."""

    rps: float = 20.0
    canary_errors: float = 0.0
    errors_from: float = 0.0
    stable_errors: float = 0.0
    stable: Counters = field(default_factory=Counters)
    canary: Counters = field(default_factory=Counters)
    last: float = 0.0
    _sent: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])

    def flow(self, now: float, share: float) -> None:
        total = self.rps * (now - self.last)
        to_canary = total * share / 100
        bad = to_canary * self.canary_errors if now > self.errors_from else 0.0
        stable_bad = (total - to_canary) * self.stable_errors
        before = [round(x) for x in self._sent]
        for i, amount in enumerate((total, to_canary, bad, stable_bad)):
            self._sent[i] += amount
        after = [round(x) for x in self._sent]
        total_n, canary_n, bad_n, stable_bad_n = (a - b for a, b in zip(after, before, strict=True))
        _add(self.canary, canary_n - bad_n, bad_n)
        _add(self.stable, total_n - canary_n - stable_bad_n, stable_bad_n)
        self.last = now


def _add(counters: Counters, good: int, bad: int) -> None:
    counters.requests += good + bad
    counters.status["2xx"] += good
    counters.status["5xx"] += bad
    counters.latency[FAST_BUCKET] += good + bad
    assert len(counters.latency) == len(BUCKETS_MS) + 1


@dataclass
class World:
    run: Run
    stable: int = 2
    traffic: Traffic = field(default_factory=Traffic)
    took: dict[str, float] = field(default_factory=dict)  # seconds a command takes
    tasks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # what -> ok, output
    start_error: str | None = None
    replace_error: str | None = None
    # (instance, round) -> (latencies, failed); default: warm at once
    warm: Callable[[str, int], tuple[tuple[float, ...], int]] = lambda _i, _r: ((0.01,), 0)
    now: float = 0.0
    log: list[tuple[float, Command]] = field(default_factory=list)
    share: float = 0.0
    canaries: int = 0
    rounds: dict[str, int] = field(default_factory=dict)
    _queue: deque[Command] = field(default_factory=deque)
    _events: list[tuple[float, int, Observation]] = field(default_factory=list)

    def at(self, when: float, seen: Observation) -> World:
        heapq.heappush(self._events, (when, len(self._events), seen))
        return self

    def feed(self, seen: Observation) -> None:
        self._queue.extend(self.run.step(self.now, seen))

    def go(self, until: float = 10_000.0) -> World:
        """Begin, then run until the machine has ended or nothing happens before `until`."""
        self.feed(Begin())
        return self.resume(until)

    def resume(self, until: float) -> World:
        while True:
            self._drain()
            if self.run.ended:
                return self
            times = [t for t in (self.run.deadline,) if t is not None]
            if self._events:
                times.append(self._events[0][0])
            if not times or min(times) > until:
                self.now = max(self.now, until)
                self._due()
                self._drain()
                return self
            self.now = max(self.now, min(times))
            self._due()
            self.feed(Tick())
            deadline = self.run.deadline
            idle = not self._queue and (not self._events or self._events[0][0] > self.now)
            if idle and deadline is not None and deadline <= self.now:
                raise AssertionError(f"the run wants a tick at {self.now} and does nothing")

    def _due(self) -> None:
        while self._events and self._events[0][0] <= self.now:
            self.feed(heapq.heappop(self._events)[2])

    def _drain(self) -> None:
        while self._queue:
            command = self._queue.popleft()
            self.log.append((self.now, command))
            if isinstance(command, RECORD):
                continue
            said = show(command)
            took = self.took.get(said, self.took.get(said.split(" ")[0], 0.0))
            if took:
                self.now += took
                self._due()
            answer = self._answer(command)
            if answer is not None:
                self.feed(answer)

    def _answer(self, command: Command) -> Observation | None:
        match command:
            case RunTask(what, _):
                return TaskDone(what, *self.tasks.get(what, (True, "0001")))
            case CountStable():
                return StableCount(self.stable)
            case StartCanaries(count):
                if self.start_error is not None:
                    return CanariesStarted(error=self.start_error)
                fresh = tuple(f"web-{i}" for i in range(self.canaries, count))
                self.canaries = max(self.canaries, count)
                return CanariesStarted(fresh)
            case WarmRound(instance, _, _):
                self.rounds[instance] = self.rounds.get(instance, 0) + 1
                return RoundDone(instance, *self.warm(instance, self.rounds[instance]))
            case SetShare(percent):
                self.traffic.flow(self.now, self.share)
                self.share = percent
                return ShareSet(percent)
            case ReadCounters():
                self.traffic.flow(self.now, self.share)
                t = self.traffic
                return CountersRead(_copy(t.stable), _copy(t.canary))
            case StopCanaries():
                self.canaries = 0
                return CanariesStopped()
            case Promote():
                self.share = 0.0
                return Promoted(tuple(f"web-{i}" for i in range(self.stable)))
            case Retire():
                return Retired()
            case Replace():
                return Replaced(self.replace_error)
        return None

    # --- reading the timeline ---------------------------------------------------------

    def shown(
        self, since: float = 0.0, record: bool = True, peeks: bool = False
    ) -> list[tuple[float, str]]:
        """The timeline from `since`; the early check's reads ("peek counters", twice a
        second while a step is judged) only with `peeks`."""
        return [
            (t, show(c))
            for t, c in self.log
            if t >= since
            and (record or not isinstance(c, RECORD))
            and (peeks or show(c) != "peek counters")
        ]

    def platform(self, since: float = 0.0, peeks: bool = False) -> list[tuple[float, str]]:
        """The commands on the platform only, with their times."""
        return self.shown(since, record=False, peeks=peeks)

    def said(self) -> list[str]:
        return [c.text for _, c in self.log if isinstance(c, Say)]

    def first(self, what: str) -> float:
        return next(t for t, c in self.log if show(c) == what)


def _copy(counters: Counters) -> Counters:
    return Counters.from_json(counters.to_json())

"""The SLO signals of a local stack: the router's counters in, `burn_rate(W)` and
`error_budget()` out, for every service with an `slo` and every objective.

Each new reading of the data plane (cumulative counters per service and track) gives,
per objective, the requests counted since the reading before and how many were good:

- availability: every request is counted; it is bad when it was answered 5xx or not
  answered at all (refused, reset, timed out).
- latency: every timed request is counted; it is good when it was answered within the
  objective's threshold, read from the latency histogram (within the bucket holding
  the threshold, the requests are taken as spread evenly).

A data plane that started again counts from zero: its counts are taken whole. The first
reading an agent sees is only a starting point, so the requests a data plane counted
while no agent was reading it are not counted twice; those made between an agent's last
reading and its end are lost (a minute at most, from the last flush).

The counts go to `SloCounts` (engine/slo.py: the windows, the arithmetic) and to the
SLO history (store/slo.py), from which a new agent rebuilds its windows. `levels` puts
every figure into the series store, where rules read them like any level: per objective
(`burn_rate:3600.latency`, `error_budget.latency`) and for the service as a whole, its
worst objective (`burn_rate:3600`: the fastest burn; `error_budget`: the least left).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlifier.engine.compiled import CompiledRule
from sqlifier.engine.series import SeriesStore
from sqlifier.engine.slo import (
    BURN_WINDOWS,
    SloCounts,
    SloFigures,
    budget_key,
    burn_key,
    figures,
)
from sqlifier.router.metrics import BUCKETS_MS
from sqlifier.stack.model import Objective, Service, Stack
from sqlifier.store.slo import SloStore

__all__ = [
    "SloTracker",
    "faster_than",
    "is_slo_key",
    "objective_counts",
    "replay_values",
    "rule_windows",
    "signal_values",
    "slo_tracker",
]

SLICES = 10  # each service's SLO figures are computed every 10th tick (`step`)
_Reading = tuple[float, float, float, float]  # requests, bad, timed, timed within threshold


def faster_than(latency: list[Any], ms: float) -> float:
    """How many requests of a latency histogram (milliseconds) took at most `ms`."""
    index = bisect.bisect_left(BUCKETS_MS, ms)
    if index >= len(BUCKETS_MS):
        return float(sum(latency[: len(BUCKETS_MS)]))
    below = float(sum(latency[:index]))
    if index < len(latency) and BUCKETS_MS[index] != ms:
        low = BUCKETS_MS[index - 1] if index > 0 else 0.0
        share = (ms - low) / (BUCKETS_MS[index] - low)
        return below + float(latency[index]) * share
    return below + float(latency[index]) if index < len(latency) else below


def _reading(counters: Mapping[str, Any], threshold_ms: float | None) -> _Reading:
    status = counters.get("status") or {}
    requests = float(counters.get("requests") or 0)
    bad = float(status.get("5xx") or 0) + float(counters.get("failed") or 0)
    latency = counters.get("latency") or []
    timed = float(sum(latency))
    good = faster_than(latency, threshold_ms) if threshold_ms is not None else 0.0
    return requests, bad, timed, good


def objective_counts(objective: Objective, delta: _Reading) -> tuple[float, float]:
    """(good, total) of one objective from a service's counts between two readings."""
    requests, bad, timed, fast = delta
    if objective.name == "availability":
        return max(0.0, requests - bad), requests
    return fast, timed


class SloTracker:
    """Every objective of every service with an `slo`: counts, history, signals."""

    def __init__(
        self,
        services: Mapping[str, Service],
        now: float,
        store: SloStore | None = None,
        windows: Iterable[float] = BURN_WINDOWS,
    ) -> None:
        self.store = store
        self.windows: tuple[float, ...] = tuple(sorted(set(windows)))
        self.objectives: dict[str, list[tuple[Objective, SloCounts]]] = {}
        self._thresholds: dict[str, float | None] = {}
        for name, service in services.items():
            if service.slo is None:
                continue
            items = []
            for objective in service.slo.objectives:
                counts = SloCounts(objective.target, service.slo.window)
                items.append((objective, counts))
            self.objectives[name] = items
            latency = [o.threshold for o in service.slo.objectives if o.name == "latency"]
            self._thresholds[name] = latency[0] * 1000 if latency and latency[0] else None
        if store is not None:  # the windows as recorded, for an agent that starts again
            store.load_all(
                {(n, o.name): c for n, items in self.objectives.items() for o, c in items}, now
            )
        self._last: dict[tuple[str, str], _Reading] = {}
        names = sorted(self.objectives)
        self._slices = [names[i::SLICES] for i in range(SLICES)]
        self._tick = 0

    def want(self, windows: Iterable[float]) -> None:
        """Compute these windows too (those the rules ask for)."""
        self.windows = tuple(sorted(set(self.windows) | set(windows)))

    def observe(self, t: float, services: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """A reading of the data plane at `t`: service -> track -> cumulative counters."""
        for name, tracks in services.items():
            if name in self.objectives:
                self._observe(t, name, tracks)

    def _observe(self, t: float, name: str, tracks: Mapping[str, Mapping[str, Any]]) -> None:
        threshold = self._thresholds[name]
        requests = bad = timed = fast = 0.0
        for track, counters in tracks.items():
            now = _reading(counters, threshold)
            before = self._last.get((name, track))
            self._last[(name, track)] = now
            if before is None:
                continue  # a starting point
            if now[0] < before[0] or now[2] < before[2]:
                before = (0.0, 0.0, 0.0, 0.0)  # the data plane started again
            requests += now[0] - before[0]
            bad += now[1] - before[1]
            timed += now[2] - before[2]
            fast += now[3] - before[3]
        if requests <= 0 and timed <= 0:
            return
        delta = (requests, bad, timed, fast)
        for objective, counts in self.objectives[name]:
            good, total = objective_counts(objective, delta)
            if total > 0:
                counts.add(t, good, total)
                if self.store is not None:
                    self.store.add(name, objective.name, t, good, total)

    def step(self, now: float, history: Any, series: SeriesStore) -> None:
        """One tick's share of the work: a tenth of the services take the data plane's
        newest reading (`Traffic.history`) and have their figures written, so each
        service's are at most `SLICES` ticks old and a tick costs a tenth of the whole."""
        self._tick += 1
        names = self._slices[self._tick % SLICES]
        services = history[-1].services if history else {}
        for name in names:
            tracks = services.get(name)
            if tracks is not None:
                self._observe(now, name, tracks)
        self.levels(series, now, names)

    def levels(self, series: SeriesStore, now: float, names: Iterable[str] | None = None) -> None:
        """Every figure at `now` into the series store (a missing one is forgotten), of
        every service or of `names`."""
        put, forget = series.put, series.forget
        for name in self.objectives if names is None else names:
            for key, value in signal_values(self.objectives[name], now, self.windows):
                if value is None:
                    forget(name, key)
                else:
                    put(name, key, now, value)

    def figures(self, now: float, service: str | None = None) -> list[SloFigures]:
        """What `sqlifier slo` shows, per service and objective."""
        return [
            figures(name, objective.name, counts, now)
            for name, items in sorted(self.objectives.items())
            if service is None or name == service
            for objective, counts in items
        ]

    def lefts(self, service: str, now: float) -> list[tuple[str, float, float | None]]:
        """(objective, target, budget left) of each of the service's objectives."""
        return [
            (objective.name, objective.target, counts.budget_left(now))
            for objective, counts in self.objectives.get(service, [])
        ]

    def flush(self, now: float) -> None:
        if self.store is not None:
            self.store.flush(now)

    def prune(self, now: float) -> None:
        if self.store is not None:
            self.store.prune(now)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def slo_tracker(stack: Stack, env: str, state_dir: Path, now: float) -> SloTracker:
    """The tracker of an environment's objectives, rebuilt from its SLO history
    (`slo.db`, made only for a stack with objectives)."""
    services = stack.services_for(env)
    wanted = any(service.slo is not None for service in services.values())
    longest = max((s.slo.window for s in services.values() if s.slo is not None), default=0.0)
    store = SloStore(state_dir / "slo.db", max(31 * 86400.0, longest + 86400)) if wanted else None
    return SloTracker(services, now, store)


def rule_windows(rules: Iterable[CompiledRule]) -> set[float]:
    """The windows of the `burn_rate(W)` tests of these rules."""
    found = set()
    for rule in rules:
        for test in rule.tests:
            if test.signal == "burn_rate":
                found.add(float(test.key.removeprefix("burn_rate:").split(".")[0]))
    return found


def signal_values(
    items: Iterable[tuple[Objective, SloCounts]], now: float, windows: Iterable[float]
) -> Iterator[tuple[str, float | None]]:
    """(series key, value or None) of every SLO signal of one service at `now`: each
    objective's, then the service's (its fastest burn, its least budget left)."""
    worst: dict[float, float | None] = {}
    least: float | None = None
    windows = tuple(windows)
    for objective, counts in items:
        name = objective.name
        for window in windows:
            rate = counts.burn_rate(now, window)
            yield _key(window, name), rate
            if rate is not None and rate > (worst.get(window) or -1.0):
                worst[window] = rate
            else:
                worst.setdefault(window, None)
        left = counts.budget_left(now)
        yield _key(None, name), left
        if left is not None:
            least = left if least is None else min(least, left)
    for window in windows:
        yield _key(window, None), worst.get(window)
    yield _key(None, None), least


_KEYS: dict[tuple[float | None, str | None], str] = {}


def _key(window: float | None, objective: str | None) -> str:
    """The series key of a burn rate (a window) or a budget (None), made once."""
    key = _KEYS.get((window, objective))
    if key is None:
        made = budget_key(objective) if window is None else burn_key(window, objective)
        key = _KEYS[(window, objective)] = made
    return key


def replay_values(
    services: Mapping[str, Service],
    store: SloStore,
    keys: Collection[str],
    since: float,
    until: float,
    step: float = 10.0,
) -> Iterator[tuple[float, str, str, float]]:
    """(t, service, key, value) every `step` seconds from `since` to `until`, as the agent
    would have computed them from the SLO history: `rules backtest` replays these, so a
    rule's burn_rate(W) is judged on any window, not only the windows the agent computed."""
    windows = {float(k.removeprefix("burn_rate:").split(".")[0]) for k in keys if ":" in k}
    for name, service in sorted(services.items()):
        if service.slo is None:
            continue
        items = []
        minutes: list[tuple[float, SloCounts, float, float]] = []
        after = (math.floor(since / 60) + 1) * 60.0  # the minutes `load` did not take
        for objective in service.slo.objectives:
            counts = SloCounts(objective.target, service.slo.window)
            store.load(name, objective.name, counts, since)
            items.append((objective, counts))
            minutes += [
                (t, counts, good, total)
                for t, good, total in store.minutes(name, objective.name, after, until)
            ]
        minutes.sort(key=lambda m: m[0])
        index = 0
        t = since
        while t <= until:
            while index < len(minutes) and minutes[index][0] <= t:
                at, counts, good, total = minutes[index]
                counts.add(at, good, total)
                index += 1
            for key, value in signal_values(items, t, windows):
                if value is not None and key in keys:
                    yield t, name, key, value
            t += step


def is_slo_key(key: str) -> bool:
    return key.startswith(("burn_rate:", "error_budget"))

"""Service level objectives, pure: good and total request counts in, budgets and burn
rates out.

An objective says which share of requests must be good over a rolling window (99.9% not
5xx over 30 days). What may go wrong is its **error budget**: (1 - target) x requests.
Two figures follow from the counts of a window, and they are all a rule reads:

- `burn_rate(W)`: the bad share over the last W divided by (1 - target). 1 spends the
  budget exactly over the window; 14.4 spends 2% of a 30-day budget in one hour.
- `error_budget()`: the share of the window's budget left, `1 - bad / (budget x total)`
  over the whole window; negative once more went wrong than the objective allows.

`burn_rate` and `budget_left` are the seam: any source of good/total counts per window
(the router's counters here, a Prometheus query on a cluster) feeds them the same way.

`SloCounts` keeps one objective's counts as cumulative sums at the end of each bucket,
so the count over any window is one subtraction: minutes for the last `MINUTE_SPAN`
(windows up to 6 hours are exact to the minute), hours for the whole objective window
(longer windows, and the budget, to the hour). A window is the bucket holding `now` and
the ones before it: `burn_rate(5m)` at 12:03:20 counts 11:59:00 to 12:03:20. Minutes with
no record (the agent was down, nothing was routed) count nothing, good or bad: the budget
over a window with a gap is judged on the requests that were counted.

Times are whatever clock the caller uses; nothing here reads one.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate

__all__ = [
    "BURN_WINDOWS",
    "MINUTE_SPAN",
    "OBJECTIVES",
    "SloCounts",
    "SloFigures",
    "budget_key",
    "budget_left",
    "burn_key",
    "burn_rate",
    "exhaustion",
    "figures",
]

OBJECTIVES = ("availability", "latency")
MINUTE_SPAN = 6 * 3600  # windows up to this long are counted by the minute
# The windows `sqlifier slo` shows and every agent computes, rules or not (seconds).
BURN_WINDOWS = (300.0, 1800.0, 3600.0, 21600.0, 259200.0)


def burn_rate(good: float, total: float, target: float) -> float | None:
    """How fast the budget burns: the bad share over (1 - target); None without requests."""
    if total <= 0:
        return None
    return (total - good) / total / (1.0 - target)


def budget_left(good: float, total: float, target: float) -> float | None:
    """The share of the window's error budget left (1 untouched, 0 spent, below 0 over);
    None without requests."""
    if total <= 0:
        return None
    return 1.0 - (total - good) / ((1.0 - target) * total)


def exhaustion(left: float | None, rate: float | None, window: float) -> float | None:
    """Seconds until the budget is spent at `rate` (a burn rate), 0 when it is; None when
    it never will be at that rate (or nothing is known)."""
    if left is None:
        return None
    if left <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return left * window / rate


def burn_key(window: float, objective: str | None = None) -> str:
    """The series key of `burn_rate(W)`: `burn_rate:3600`, `burn_rate:3600.latency`."""
    key = f"burn_rate:{window:g}"
    return key if objective is None else f"{key}.{objective}"


def budget_key(objective: str | None = None) -> str:
    return "error_budget" if objective is None else f"error_budget.{objective}"


class _Buckets:
    """Cumulative good and total at the end of each of the last `size` buckets of
    `resolution` seconds (a ring)."""

    __slots__ = ("good", "last", "resolution", "size", "total")

    def __init__(self, resolution: float, size: int) -> None:
        self.resolution = resolution
        self.size = size
        self.good = array("d", bytes(8 * size))
        self.total = array("d", bytes(8 * size))
        self.last: int | None = None  # the newest bucket's number

    def add(self, t: float, good: float, total: float) -> None:
        bucket = math.floor(t / self.resolution)
        last = self.last
        if last is None:
            self.last = bucket
        elif bucket > last:
            self._advance(bucket)
        elif bucket < last:
            # Late counts (a clock step back) go to the newest bucket: nothing is lost.
            bucket = last
        slot = bucket % self.size
        self.good[slot] += good
        self.total[slot] += total

    def fill(self, first: int, good: list[float], total: list[float]) -> None:
        """An empty ring given the counts of consecutive buckets from bucket `first` on
        (an agent that starts again: far cheaper than `add` bucket by bucket)."""
        if self.last is not None or not good:
            raise ValueError("fill() takes an empty ring and at least one bucket")
        size = self.size
        cumulative_good = list(accumulate(good))
        cumulative_total = list(accumulate(total))
        count = len(good)
        for index in range(max(0, count - size), count):
            slot = (first + index) % size
            self.good[slot] = cumulative_good[index]
            self.total[slot] = cumulative_total[index]
        self.last = first + count - 1

    def _advance(self, bucket: int) -> None:
        last = self.last
        assert last is not None
        size = self.size
        good, total = self.good[last % size], self.total[last % size]
        for number in range(max(last + 1, bucket - size + 1), bucket + 1):
            self.good[number % size] = good
            self.total[number % size] = total
        self.last = bucket

    def window(self, now: float, buckets: int) -> tuple[float, float]:
        """(good, total) over the `buckets` buckets ending with the one holding `now`."""
        last = self.last
        if last is None:
            return 0.0, 0.0
        size = self.size
        first = last - size + 1  # the oldest bucket held
        now_bucket = math.floor(now / self.resolution)
        start = now_bucket - buckets  # the bucket whose end the window starts after
        end = min(now_bucket, last)  # no bucket after `last` has counts
        if end < first or start >= end:
            return 0.0, 0.0
        start = max(start, first)  # (a window reaching before the ring, when asked of the past)
        good = self.good[end % size] - self.good[start % size]
        total = self.total[end % size] - self.total[start % size]
        return good, total


class SloCounts:
    """One objective's good and total requests, by minute and by hour, for `window`
    seconds (the objective's), and the figures a rule reads."""

    __slots__ = ("hours", "minutes", "target", "window")

    def __init__(self, target: float, window: float) -> None:
        if not 0 < target < 1:
            raise ValueError(f"an objective's target is above 0 and below 1, not {target}")
        self.target = target
        self.window = window
        self.minutes = _Buckets(60.0, MINUTE_SPAN // 60 + 1)
        self.hours = _Buckets(3600.0, math.ceil(window / 3600) + 1)

    def add(self, t: float, good: float, total: float) -> None:
        """Requests counted at time `t` (an increase since the previous count)."""
        self.minutes.add(t, good, total)
        self.hours.add(t, good, total)

    def counts(self, now: float, window: float) -> tuple[float, float]:
        """(good, total) over the last `window` seconds."""
        if window <= MINUTE_SPAN:
            return self.minutes.window(now, max(1, math.ceil(window / 60 - 1e-9)))
        return self.hours.window(now, max(1, math.ceil(window / 3600 - 1e-9)))

    def burn_rate(self, now: float, window: float) -> float | None:
        good, total = self.counts(now, window)
        return burn_rate(good, total, self.target)

    def budget_left(self, now: float) -> float | None:
        good, total = self.counts(now, self.window)
        return budget_left(good, total, self.target)


@dataclass(frozen=True, slots=True)
class SloFigures:
    """What `sqlifier slo` shows of one objective."""

    service: str
    objective: str
    target: float
    window: float
    good: float
    total: float
    budget_left: float | None
    burn_rates: Mapping[float, float | None]  # window (seconds) -> burn rate
    exhaustion: float | None  # seconds until spent at the 1-hour burn rate

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "objective": self.objective,
            "target": self.target,
            "window": self.window,
            "good": self.good,
            "total": self.total,
            "budget_left": self.budget_left,
            "burn_rates": {f"{w:g}": r for w, r in self.burn_rates.items()},
            "exhaustion": self.exhaustion,
        }


def figures(
    service: str,
    objective: str,
    counts: SloCounts,
    now: float,
    windows: Iterable[float] = BURN_WINDOWS,
) -> SloFigures:
    """Every figure of one objective at `now`."""
    good, total = counts.counts(now, counts.window)
    left = budget_left(good, total, counts.target)
    rates = {w: counts.burn_rate(now, w) for w in windows}
    hourly = rates.get(3600.0, counts.burn_rate(now, 3600.0))
    return SloFigures(
        service,
        objective,
        counts.target,
        counts.window,
        good,
        total,
        left,
        rates,
        exhaustion(left, hourly, counts.window),
    )

"""The series store: what every signal measured recently, kept in memory for the engine.

Two kinds of series, as in the rule language:

- **level** series (`cpu`, `rps`, `latency_p99`, ...) hold the latest value and the last
  few minutes at one-second resolution. A level with no sample for `stale_after` seconds
  (30 by default) has no value: "no data", which the engine never reads as true or false.
- **event** series (`log`, `restart`) hold timestamped events, counted over a sliding
  window. Log events carry their level's rank and text so that `log(level=..., match=...)`
  can filter them.

Keys are plain strings: the signal name, with `.canary` / `.stable` for one track of a
routed service (`rps.canary`), and `prometheus:<promql>` for an external query. Values are
in base units: fractions for percentages (0.8 for 80%), seconds, bytes.

Times are whatever clock the caller uses (the wall clock live, a virtual one in tests and
backtests); the store never reads a clock itself.
"""

from __future__ import annotations

import bisect
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["LOG", "RESTART", "Event", "SeriesStore"]

LOG = "log"
RESTART = "restart"

STALE_AFTER = 30.0
KEEP_LEVELS = 600  # seconds of one-second level history kept for explanations
KEEP_EVENTS = 3600.0  # seconds of events kept (the longest count window a rule may use)
MAX_EVENTS = 200_000  # per series: a flood of log lines cannot take the memory


class Event(NamedTuple):
    """One event. A named tuple: a chatty instance makes thousands a second, and a tuple is
    the cheapest immutable value to make."""

    t: float
    rank: int = 0  # a log level's rank (sqlifier.lang.signals.LOG_LEVELS); 0 otherwise
    text: str = ""


class _Events:
    """The events of one series: their times per rank (sorted, for counting by bisection)
    and the most recent ones with their text (for `match`)."""

    __slots__ = ("by_rank", "recent", "unordered")

    def __init__(self) -> None:
        self.by_rank: dict[int, list[float]] = {}
        self.recent: deque[Event] = deque(maxlen=MAX_EVENTS)
        self.unordered = False  # an event arrived older than the one before it

    def add_many(self, t: float, events: list[tuple[int, str]]) -> int:
        """Add events at time `t`, each `(rank, text)`; how many found the series full
        (the oldest made room)."""
        by_rank, recent = self.by_rank, self.recent
        if recent and t < recent[-1].t:
            self.unordered = True
        append = recent.append
        full = 0
        for rank, text in events:
            times = by_rank.get(rank)
            if times is None:
                times = by_rank[rank] = []
            if times and t < times[-1]:
                bisect.insort(times, t)
            else:
                times.append(t)
            was_full = len(recent) == MAX_EVENTS
            append(Event(t, rank, text))
            if len(times) > MAX_EVENTS:
                del times[: MAX_EVENTS // 2]
                was_full = True
            full += was_full
        return full

    def trim(self, horizon: float) -> bool:
        """Forget events at or before `horizon`; True when nothing is left."""
        for rank in list(self.by_rank):
            times = self.by_rank[rank]
            cut = bisect.bisect_right(times, horizon)
            if cut:
                del times[:cut]
            if not times:
                del self.by_rank[rank]
        recent = self.recent
        while recent and recent[0].t <= horizon:
            recent.popleft()
        return not self.by_rank


@dataclass(slots=True)
class _Level:
    t: float
    value: float
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=KEEP_LEVELS))


class SeriesStore:
    def __init__(self, stale_after: float = STALE_AFTER, keep_events: float = KEEP_EVENTS):
        self.stale_after = stale_after
        self.keep_events = keep_events
        self._levels: dict[tuple[str, str], _Level] = {}
        self._events: dict[tuple[str, str], _Events] = {}
        self.dropped = 0  # events dropped because a series was full

    # --- writing --------------------------------------------------------------------

    def put(self, service: str, key: str, t: float, value: float) -> None:
        """A level sample. Several in the same second keep the last one."""
        level = self._levels.get((service, key))
        if level is None:
            level = self._levels[(service, key)] = _Level(t, value)
        else:
            level.t, level.value = t, value
        recent = level.recent
        second = float(int(t))
        if recent and recent[-1][0] == second:
            recent[-1] = (second, value)
        else:
            recent.append((second, value))

    def forget(self, service: str, key: str) -> None:
        """The level has no value from now on (its source went away)."""
        self._levels.pop((service, key), None)

    def add(self, service: str, key: str, t: float, rank: int = 0, text: str = "") -> None:
        """One event (a log line, a restart)."""
        self.add_many(service, key, t, [(rank, text)])

    def add_many(self, service: str, key: str, t: float, events: list[tuple[int, str]]) -> None:
        """Several events at one time `t`, each `(rank, text)`: a batch of log lines."""
        series = self._events.get((service, key))
        if series is None:
            series = self._events[(service, key)] = _Events()
        self.dropped += series.add_many(t, events)

    def trim(self, now: float) -> None:
        """Drop events older than the longest window and series that went quiet."""
        horizon = now - self.keep_events
        for key in list(self._events):
            if self._events[key].trim(horizon):
                del self._events[key]

    # --- reading --------------------------------------------------------------------

    def level(self, service: str, key: str, now: float) -> float | None:
        """The latest value, or None when there is none from the last `stale_after`."""
        level = self._levels.get((service, key))
        if level is None or now - level.t > self.stale_after or level.t > now:
            return None
        return level.value

    def last_sample(self, service: str, key: str) -> float | None:
        """When the latest sample of a level arrived, fresh or not."""
        level = self._levels.get((service, key))
        return None if level is None else level.t

    def recent(self, service: str, key: str, since: float) -> list[tuple[float, float]]:
        """One-second values of a level from `since` on (for explanations)."""
        level = self._levels.get((service, key))
        if level is None:
            return []
        return [(t, v) for t, v in level.recent if t >= since]

    def count(
        self,
        service: str,
        key: str,
        since: float,
        until: float,
        min_rank: int = 0,
        rank: int | None = None,
        match: re.Pattern[str] | None = None,
    ) -> int:
        """Events with `since < t <= until`, optionally of one rank, at least `min_rank`,
        or whose text the pattern finds."""
        series = self._events.get((service, key))
        if series is None:
            return 0
        if until <= since:
            return 0
        if match is None:
            total = 0
            for event_rank, times in series.by_rank.items():
                if (rank is None or event_rank == rank) and event_rank >= min_rank:
                    total += bisect.bisect_right(times, until) - bisect.bisect_right(times, since)
            return total
        total = 0
        for event in reversed(series.recent):
            t = event.t
            if t > until:
                continue
            if t <= since:
                if series.unordered:
                    continue
                break
            if rank is not None and event.rank != rank:
                continue
            if event.rank < min_rank:
                continue
            if match.search(event.text) is not None:
                total += 1
        return total

    def services(self) -> set[str]:
        return {s for s, _ in self._levels} | {s for s, _ in self._events}

    def levels(self) -> Iterator[tuple[str, str, float, float]]:
        """(service, key, time, value) of the latest sample of every level."""
        for (service, key), level in self._levels.items():
            yield service, key, level.t, level.value

"""The router's counters as Prometheus counters: monotonic, across data plane restarts.

Both data planes count requests (by status class) and time them (a latency histogram) per
service and track, cumulatively since the data plane started (`router/metrics.py`). A
data plane that starts again — it crashed, the agent started a new one, HAProxy reloaded
its configuration — counts from zero, and a Prometheus counter that goes down reads as a
reset. `RouterTotals` hides the restarts it sees: when a reading is below the one before,
the one before is added to an offset, so what `/metrics` shows only grows.

The status counts and the histogram are carried separately, each as one group: HAProxy
resets its status counts on a reload while the latencies, read from its request log by the
data plane process, carry on. A group is taken as reset when any of its numbers went down.

What cannot be hidden: the offsets live in the agent, so an agent that starts again shows
the data plane's own counts (which survived it: the data plane is its own process), and
requests a data plane counted after the agent's last reading and before it ended are lost.
Prometheus' `rate()` and `increase()` treat the drop as a counter reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlifier.router.metrics import CLASSES, Counters

__all__ = ["RouterTotals", "TrackTotals"]


@dataclass
class TrackTotals:
    """One service's track: the last reading, and what earlier data planes counted."""

    last: Counters = field(default_factory=Counters)
    carried: Counters = field(default_factory=Counters)

    def observe(self, now: Counters) -> None:
        last, carried = self.last, self.carried
        if any(now.status[k] < last.status[k] for k in CLASSES):
            for key in CLASSES:
                carried.status[key] += last.status[key]
        if now.latency_sum < last.latency_sum or any(
            a < b for a, b in zip(now.latency, last.latency, strict=True)
        ):
            carried.latency = [a + b for a, b in zip(carried.latency, last.latency, strict=True)]
            carried.latency_sum += last.latency_sum
        self.last = now

    def total(self) -> Counters:
        total = Counters.from_json(self.carried.to_json())
        total.add(self.last)
        return total


class RouterTotals:
    """Service -> track -> monotonic counters, fed with each new reading of the data plane."""

    def __init__(self) -> None:
        self.tracks: dict[tuple[str, str], TrackTotals] = {}

    def observe(self, services: Mapping[str, Mapping[str, Any]]) -> None:
        """A reading: service -> track -> the data plane's counters as JSON."""
        for service, tracks in services.items():
            for track, counters in tracks.items():
                totals = self.tracks.setdefault((service, track), TrackTotals())
                totals.observe(Counters.from_json(counters))

    def rows(self) -> list[dict[str, Any]]:
        """What `/metrics` shows, a row per service and track, in name order: requests
        by status class, and the latency histogram (seconds) with its sum and count."""
        rows = []
        for (service, track), totals in sorted(self.tracks.items()):
            total = totals.total()
            rows.append(
                {
                    "service": service,
                    "track": track,
                    "status": dict(total.status),
                    "latency": list(total.latency),
                    "latency_sum": total.latency_sum / 1000,
                }
            )
        return rows

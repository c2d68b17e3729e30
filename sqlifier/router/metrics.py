"""Traffic measurements: request counts by status class and a latency histogram.

Both data planes keep cumulative counters per backend (one instance of one track); the
agent reads them every second and works out rates and percentiles from the difference
between two readings. Latencies fall into fixed buckets (milliseconds, upper bounds), so
histograms from different backends, data planes and seconds simply add up; beside the
buckets, the sum of the latencies counted (milliseconds) makes the histogram a Prometheus
one (`_bucket`, `_sum`, `_count` on the agent's /metrics).
"""

from __future__ import annotations

from bisect import bisect_left as _bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["BUCKETS_MS", "Counters", "percentile", "summarize"]

# Upper bounds in milliseconds; the last bucket holds everything slower.
BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000, 30000,
)  # fmt: skip
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_CLASS_OF = {int(key[0]): key for key in CLASSES}  # status // 100 -> its class


@dataclass
class Counters:
    """Cumulative counts for one backend since the data plane started."""

    requests: int = 0
    status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    failed: int = 0  # no response from the instance (refused, reset, timed out)
    latency: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    latency_sum: float = 0.0  # milliseconds, of the latencies in `latency`

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        key = _CLASS_OF.get(status // 100)
        if key is not None:
            self.status[key] += 1
        ms = seconds * 1000
        self.latency[_bisect_left(BUCKETS_MS, ms)] += 1
        self.latency_sum += ms

    def to_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "status": dict(self.status),
            "failed": self.failed,
            "latency": list(self.latency),
            "latency_sum": self.latency_sum,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Counters:
        status = data.get("status")
        latency = data.get("latency")
        counters = cls(requests=_int(data.get("requests")), failed=_int(data.get("failed")))
        if isinstance(status, Mapping):
            for key in CLASSES:
                counters.status[key] = _int(status.get(key))
        if isinstance(latency, list) and len(latency) == len(counters.latency):
            counters.latency = [_int(x) for x in latency]
        latency_sum = data.get("latency_sum")
        if isinstance(latency_sum, int | float) and not isinstance(latency_sum, bool):
            counters.latency_sum = float(latency_sum)
        return counters

    def minus(self, earlier: Counters) -> Counters:
        """What happened between `earlier` and this reading (a restarted data plane,
        whose counters went back to zero, counts from zero)."""
        if self.requests < earlier.requests:
            earlier = Counters()
        return Counters(
            self.requests - earlier.requests,
            {k: self.status[k] - earlier.status[k] for k in CLASSES},
            self.failed - earlier.failed,
            [a - b for a, b in zip(self.latency, earlier.latency, strict=True)],
            self.latency_sum - earlier.latency_sum,
        )

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.failed += other.failed
        for key in CLASSES:
            self.status[key] += other.status[key]
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.latency_sum += other.latency_sum


def percentile(latency: list[int], q: float) -> float | None:
    """The q-th percentile (0-100) of a histogram in milliseconds, interpolated inside its
    bucket; None when the histogram is empty."""
    total = sum(latency)
    if total == 0:
        return None
    rank = q / 100 * total
    seen = 0
    for index, count in enumerate(latency):
        if count and seen + count >= rank:
            low = BUCKETS_MS[index - 1] if index > 0 else 0.0
            high = BUCKETS_MS[index] if index < len(BUCKETS_MS) else BUCKETS_MS[-1] * 2
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return BUCKETS_MS[-1]


def summarize(counters: Iterable[Counters], seconds: float) -> dict[str, float | None]:
    """Rates and percentiles over `seconds` from the differences of several backends."""
    total = Counters()
    for item in counters:
        total.add(item)
    answered = sum(total.status.values())
    seconds = max(seconds, 1e-9)
    return {
        "rps": total.requests / seconds,
        "error_rate": (total.status["5xx"] + total.failed) / total.requests
        if total.requests
        else None,
        "p50": percentile(total.latency, 50),
        "p90": percentile(total.latency, 90),
        "p95": percentile(total.latency, 95),
        "p99": percentile(total.latency, 99),
        "answered": float(answered),
    }


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

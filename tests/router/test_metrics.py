"""Counting requests and reading percentiles back from the latency histogram."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sqlifier.router.metrics import BUCKETS_MS, Counters, percentile, summarize


def test_counts_by_status_class_and_latency_bucket() -> None:
    counters = Counters()
    for status, seconds in [(200, 0.0004), (201, 0.004), (404, 0.012), (503, 2.5)]:
        counters.record(status, seconds)
    assert counters.requests == 4
    assert counters.status == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}
    assert sum(counters.latency) == 4
    assert counters.latency[0] == 1  # 0.4 ms is in the first bucket (up to 0.5 ms)
    assert counters.latency[BUCKETS_MS.index(3000)] == 1


def test_the_difference_of_two_readings_and_a_reset() -> None:
    earlier, later = Counters(), Counters()
    for _ in range(3):
        earlier.record(200, 0.001)
        later.record(200, 0.001)
    later.record(500, 0.1)
    delta = later.minus(earlier)
    assert (delta.requests, delta.status["5xx"], sum(delta.latency)) == (1, 1, 1)
    restarted = Counters()
    restarted.record(200, 0.001)
    assert restarted.minus(later).requests == 1  # counters went back to zero: count from zero


def test_json_round_trip() -> None:
    counters = Counters()
    counters.record(302, 0.02)
    counters.failed = 2
    assert Counters.from_json(counters.to_json()) == counters


@given(st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=1, max_size=300))
def test_percentiles_fall_in_the_bucket_of_the_true_value(values: list[float]) -> None:
    counters = Counters()
    for value in values:
        counters.record(200, value)
    ordered = sorted(v * 1000 for v in values)
    for q in (50, 90, 99):
        estimate = percentile(counters.latency, q)
        assert estimate is not None
        true = ordered[max(0, -(-len(ordered) * q // 100) - 1)]
        bounds = (0.0, *BUCKETS_MS)
        index = next(i for i, b in enumerate(BUCKETS_MS) if true <= b)
        assert bounds[index] <= estimate <= BUCKETS_MS[index] + 1e-9


def test_summary_rates_and_error_share() -> None:
    counters = Counters()
    for status in [200] * 9 + [502]:
        counters.record(status, 0.002)
    summary = summarize([counters], 2.0)
    assert summary["rps"] == 5.0
    assert summary["error_rate"] == 0.1
    assert summarize([Counters()], 1.0)["p99"] is None


def test_the_sum_of_latencies_in_milliseconds_follows_the_counts() -> None:
    earlier = Counters()
    earlier.record(200, 0.25)
    later = Counters.from_json(earlier.to_json())
    later.record(200, 0.5)
    assert later.latency_sum == 750.0
    assert later.minus(earlier).latency_sum == 500.0
    both = Counters()
    both.add(later)
    both.add(earlier)
    assert both.latency_sum == 1000.0
    assert Counters.from_json({"requests": 1}).latency_sum == 0.0  # an older data plane

"""The router's counters for /metrics: monotonic across a data plane that starts again."""

from __future__ import annotations

from sqlifier.router.metrics import BUCKETS_MS, Counters
from sqlifier.signals.totals import RouterTotals


def reading(**tracks: Counters) -> dict[str, dict[str, object]]:
    return {"web": {track: counters.to_json() for track, counters in tracks.items()}}


def counted(*answers: tuple[int, float]) -> Counters:
    counters = Counters()
    for status, seconds in answers:
        counters.record(status, seconds)
    return counters


def test_rows_carry_status_classes_and_the_histogram_in_seconds() -> None:
    totals = RouterTotals()
    totals.observe(reading(stable=counted((200, 0.004), (503, 0.25)), canary=Counters()))
    canary, stable = totals.rows()
    assert (canary["track"], stable["track"]) == ("canary", "stable")
    assert stable["status"] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1}
    assert stable["latency"][BUCKETS_MS.index(5)] == 1
    assert stable["latency"][BUCKETS_MS.index(300)] == 1
    assert abs(stable["latency_sum"] - 0.254) < 1e-9


def test_a_data_plane_that_counts_from_zero_again_is_added_to_what_came_before() -> None:
    totals = RouterTotals()
    totals.observe(reading(stable=counted((200, 0.001), (200, 0.001), (500, 0.001))))
    totals.observe(reading(stable=counted((200, 0.002))))  # a new data plane
    [row] = totals.rows()
    assert row["status"]["2xx"] == 3 and row["status"]["5xx"] == 1
    assert sum(row["latency"]) == 4
    assert abs(row["latency_sum"] - 0.005) < 1e-9
    totals.observe(reading(stable=counted((200, 0.002), (200, 0.002))))  # it counts on
    assert totals.rows()[0]["status"]["2xx"] == 4


def test_status_counts_and_latencies_reset_each_on_their_own() -> None:
    # HAProxy's status counts start again on a reload; the latencies the data plane
    # reads from its request log carry on.
    before = counted((200, 0.001), (200, 0.001))
    after = counted((200, 0.001), (200, 0.001), (200, 0.001))
    after.status = {**after.status, "2xx": 1}
    totals = RouterTotals()
    totals.observe(reading(stable=before))
    totals.observe(reading(stable=after))
    [row] = totals.rows()
    assert row["status"]["2xx"] == 3  # 2 before the reload, 1 after
    assert sum(row["latency"]) == 3  # not reset: no offset


def test_the_same_reading_twice_counts_once() -> None:
    totals = RouterTotals()
    same = counted((200, 0.001))
    totals.observe(reading(stable=same))
    totals.observe(reading(stable=same))
    assert totals.rows()[0]["status"]["2xx"] == 1

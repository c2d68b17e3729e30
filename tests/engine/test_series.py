"""The series store: levels go stale, counts slide, filters by level and text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqlifier.engine import series
from sqlifier.engine.series import LOG, SeriesStore
from sqlifier.lang.signals import LOG_LEVELS

ERROR, CRITICAL, INFO = LOG_LEVELS["error"], LOG_LEVELS["critical"], LOG_LEVELS["info"]


def test_a_level_is_its_latest_sample_until_it_goes_stale() -> None:
    store = SeriesStore(stale_after=30)
    assert store.level("web", "cpu", 0) is None
    store.put("web", "cpu", 10, 0.5)
    store.put("web", "cpu", 12, 0.9)
    assert store.level("web", "cpu", 12) == 0.9
    assert store.level("web", "cpu", 42) == 0.9
    assert store.level("web", "cpu", 42.5) is None  # 30 s without a sample: no data
    assert store.level("web", "cpu", 11) is None  # never a value from the future


def test_forget_makes_a_level_no_data_at_once() -> None:
    store = SeriesStore()
    store.put("web", "prometheus:up", 1, 1.0)
    store.forget("web", "prometheus:up")
    assert store.level("web", "prometheus:up", 1) is None


def test_recent_keeps_one_value_per_second() -> None:
    store = SeriesStore()
    for t, v in ((1.1, 1.0), (1.7, 2.0), (2.2, 3.0)):
        store.put("web", "rps", t, v)
    assert store.recent("web", "rps", 0) == [(1.0, 2.0), (2.0, 3.0)]


def test_counts_are_after_since_and_up_to_until() -> None:
    store = SeriesStore()
    for t in (1, 2, 3, 4):
        store.add("web", LOG, t, CRITICAL, "x")
    assert store.count("web", LOG, 1, 3) == 2  # t=2 and t=3
    assert store.count("web", LOG, 0, 4) == 4
    assert store.count("web", LOG, 4, 10) == 0
    assert store.count("api", LOG, 0, 10) == 0


def test_counts_by_level_and_by_text() -> None:
    store = SeriesStore()
    store.add("web", LOG, 1, INFO, "GET / 200")
    store.add("web", LOG, 2, ERROR, "db timeout")
    store.add("web", LOG, 3, CRITICAL, "card declined")
    store.add("web", LOG, 4, CRITICAL, "db down")
    assert store.count("web", LOG, 0, 9, min_rank=ERROR) == 3
    assert store.count("web", LOG, 0, 9, rank=CRITICAL) == 2
    assert store.count("web", LOG, 0, 9, match=re.compile("db")) == 2
    assert store.count("web", LOG, 0, 9, rank=CRITICAL, match=re.compile("db")) == 1


def test_events_out_of_order_still_count() -> None:
    store = SeriesStore()
    for t in (5, 3, 4):
        store.add("web", LOG, t, ERROR)
    assert store.count("web", LOG, 3, 5) == 2


def test_trim_forgets_old_events() -> None:
    store = SeriesStore(keep_events=60)
    store.add("web", LOG, 1, ERROR)
    store.add("web", LOG, 100, ERROR)
    store.trim(100)
    assert store.count("web", LOG, 0, 100) == 1
    store.trim(1000)
    assert "web" not in store.services()


@given(
    st.lists(st.tuples(st.integers(0, 100), st.sampled_from([INFO, ERROR, CRITICAL])), max_size=60),
    st.integers(0, 100),
    st.integers(0, 100),
)
def test_counting_by_bisection_agrees_with_counting_by_hand(
    events: list[tuple[int, int]], since: int, until: int
) -> None:
    store = SeriesStore()
    for t, rank in events:
        store.add("web", LOG, float(t), rank, "text")
    for min_rank in (0, ERROR):
        expected = sum(1 for t, r in events if since < t <= until and r >= min_rank)
        assert store.count("web", LOG, since, until, min_rank=min_rank) == expected
        with_match = store.count("web", LOG, since, until, min_rank=min_rank, match=re.compile("t"))
        assert with_match == expected


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.lists(st.sampled_from([INFO, ERROR]), max_size=5)),
        max_size=15,
    ),
    st.integers(1, 8),
)
def test_a_batch_counts_and_drops_as_the_same_events_one_by_one(
    batches: list[tuple[int, list[int]]], limit: int
) -> None:
    """A batch of log lines at one time is the same as adding them one at a time, up to
    a full series (here `limit` events) and what it counts as dropped."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(series, "MAX_EVENTS", limit)
        one, many = SeriesStore(), SeriesStore()
        for t, ranks in batches:
            for rank in ranks:
                one.add("web", LOG, float(t), rank, f"line {rank}")
            many.add_many("web", LOG, float(t), [(rank, f"line {rank}") for rank in ranks])
    assert many.dropped == one.dropped
    # By hand: an event finds the series full when `limit` recent events are kept already,
    # or when its level's count passes `limit` (the older half of that level goes).
    kept, by_rank, dropped = 0, dict[int, int](), 0
    for _, ranks in batches:
        for rank in ranks:
            full = kept == limit
            kept = min(kept + 1, limit)
            by_rank[rank] = by_rank.get(rank, 0) + 1
            if by_rank[rank] > limit:
                by_rank[rank] -= limit // 2
                full = True
            dropped += full
    assert many.dropped == dropped
    assert many.count("web", LOG, -1, 21) == sum(by_rank.values())
    # Matching by text reads the most recent events: the last `limit` of them are kept.
    total = sum(len(ranks) for _, ranks in batches)
    assert many.count("web", LOG, -1, 21, match=re.compile("line")) == min(total, limit)
    for min_rank in (0, ERROR):
        for match in (None, re.compile("line")):
            assert many.count("web", LOG, -1, 21, min_rank=min_rank, match=match) == one.count(
                "web", LOG, -1, 21, min_rank=min_rank, match=match
            )

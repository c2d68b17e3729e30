"""SLO figures as timelines: router counts in at exact times, burn rates and budgets out.

Every case runs on a virtual clock. T is a whole hour, so minute and hour buckets start
at T; `at(m)` is T plus m minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.engine.machine import Settings
from sqlifier.engine.replay import Replay, compile_rules
from sqlifier.engine.series import SeriesStore
from sqlifier.engine.slo import SloCounts, budget_left, burn_rate, exhaustion
from sqlifier.lang import Source, check, parse_source
from sqlifier.signals.slo import SloTracker, faster_than, replay_values
from sqlifier.stack.model import Objective, Service, Slo
from sqlifier.store.slo import SloStore

T = 1_700_000_000 - 1_700_000_000 % 3600  # a whole hour
DAY = 86400.0


def at(minutes: float) -> float:
    return T + minutes * 60


def service(*objectives: Objective, window: float = 30 * DAY) -> Service:
    return Service("web", "run", Path("."), slo=Slo(objectives, window))


AVAILABILITY = Objective("availability", 0.999)
LATENCY = Objective("latency", 0.99, 0.3)


def counters(requests: int, errors: int = 0, slow: int = 0) -> dict[str, object]:
    """Cumulative counters of one track: `slow` requests took 400 ms, the rest 20 ms."""
    latency = [0] * 26
    latency[8] = requests - slow  # (15, 20] ms
    latency[16] = slow  # (300, 500] ms
    return {
        "requests": requests,
        "status": {"2xx": requests - errors, "5xx": errors},
        "failed": 0,
        "latency": latency,
        "latency_sum": 0.0,
    }


def feed(tracker: SloTracker, minutes: range, per_minute: int, errors: int, start: int = 0) -> int:
    """One reading a minute, `per_minute` more requests of which `errors` failed; returns
    the cumulative count reached."""
    total = start
    bad = 0
    for minute in minutes:
        total += per_minute
        bad += errors
        tracker.observe(at(minute), {"web": {"stable": counters(total, bad)}})
    return total


# --- the arithmetic ---------------------------------------------------------------------------


def test_burn_rate_is_the_bad_share_over_the_allowed_share() -> None:
    assert burn_rate(990, 1000, 0.999) == pytest.approx(10.0)
    assert burn_rate(999, 1000, 0.999) == pytest.approx(1.0)
    assert burn_rate(0, 0, 0.999) is None


def test_budget_left_goes_negative_once_overspent() -> None:
    assert budget_left(999_500, 1_000_000, 0.999) == pytest.approx(0.5)
    assert budget_left(998_000, 1_000_000, 0.999) == pytest.approx(-1.0)
    assert budget_left(0, 0, 0.999) is None


def test_exhaustion_at_the_current_rate() -> None:
    # Half the budget left of 30 days, burning at 10: 1.5 days.
    assert exhaustion(0.5, 10.0, 30 * DAY) == pytest.approx(1.5 * DAY)
    assert exhaustion(-0.1, 10.0, 30 * DAY) == 0.0
    assert exhaustion(0.5, 0.0, 30 * DAY) is None


def test_latency_good_is_read_from_the_histogram() -> None:
    histogram = [0] * 26
    histogram[15] = 10  # (200, 300] ms
    histogram[16] = 10  # (300, 500] ms
    assert faster_than(histogram, 300) == 10
    assert faster_than(histogram, 400) == pytest.approx(15)  # half the (300, 500] bucket


# --- windows on a virtual clock ---------------------------------------------------------------


def test_burn_rates_over_5m_and_1h_at_exact_times() -> None:
    counts = SloCounts(0.999, 30 * DAY)
    for minute in range(60):  # an hour of 1% errors: burn rate 10
        counts.add(at(minute), 990, 1000)
    for minute in range(60, 65):  # then five clean minutes
        counts.add(at(minute), 1000, 1000)
    assert counts.burn_rate(at(59.5), 300) == pytest.approx(10.0)
    assert counts.burn_rate(at(59.5), 3600) == pytest.approx(10.0)
    # At 01:04:30 the 5 minutes are 01:00-01:04: all clean.
    assert counts.burn_rate(at(64.5), 300) == pytest.approx(0.0)
    # The hour is 00:05-01:04: 55 minutes at 1%, 5 clean.
    assert counts.burn_rate(at(64.5), 3600) == pytest.approx(55 * 10 / 60 / 1000 / 0.001)
    # One minute earlier, 00:04-01:03: 56 minutes at 1%.
    assert counts.burn_rate(at(63.5), 3600) == pytest.approx(56 * 10 / 60 / 1000 / 0.001)


def test_a_gap_in_the_data_counts_nothing_good_or_bad() -> None:
    counts = SloCounts(0.999, 30 * DAY)
    for minute in range(10):
        counts.add(at(minute), 980, 1000)  # 2%: burn rate 20
    # Nothing recorded from 00:10 to 00:40 (the agent was down, nothing routed).
    for minute in range(40, 45):
        counts.add(at(minute), 1000, 1000)
    assert counts.burn_rate(at(30), 300) is None  # no requests in the window: no data
    assert counts.burn_rate(at(44.5), 300) == pytest.approx(0.0)
    # The hour holds the 10 bad minutes and the 5 clean ones, nothing for the gap.
    assert counts.burn_rate(at(44.5), 3600) == pytest.approx(10 * 20 / 15 / 1000 / 0.001)
    assert counts.counts(at(44.5), 3600) == (10 * 980 + 5 * 1000, 15 * 1000)


def test_windows_past_six_hours_are_counted_by_the_hour() -> None:
    counts = SloCounts(0.999, 30 * DAY)
    for hour in range(72):  # three days, one bad hour a day
        bad = 100 if hour % 24 == 0 else 0
        counts.add(at(hour * 60), 100_000 - bad, 100_000)
    now = at(71 * 60 + 30)
    assert counts.burn_rate(now, 3 * DAY) == pytest.approx(300 / 7_200_000 / 0.001)
    # Six hours back from 71:30 (minutes 65:31-71:30) hold no bad hour.
    assert counts.burn_rate(now, 6 * 3600) == pytest.approx(0.0)


def test_budget_over_the_whole_window_forgets_what_left_it() -> None:
    counts = SloCounts(0.99, 2 * DAY)
    counts.add(at(0), 0, 1000)  # a bad start: 1000 errors, ten times the budget so far
    for hour in range(1, 48):
        counts.add(at(hour * 60), 1000, 1000)
    assert counts.budget_left(at(47 * 60)) == pytest.approx(1 - 1000 / (0.01 * 48_000))
    counts.add(at(48 * 60), 1000, 1000)
    # At 49:00 the first hour has left the 2-day window: the budget is whole again.
    assert counts.budget_left(at(49 * 60)) == pytest.approx(1.0)


# --- the tracker: router counters in, signals out -------------------------------------------


def test_first_reading_is_a_starting_point_and_restarts_count_from_zero() -> None:
    tracker = SloTracker({"web": service(AVAILABILITY)}, at(0))
    tracker.observe(at(0), {"web": {"stable": counters(50_000, 5_000)}})  # before us
    tracker.observe(at(1), {"web": {"stable": counters(51_000, 5_010)}})
    # The data plane started again: its counts are taken whole.
    tracker.observe(at(2), {"web": {"stable": counters(1_000, 10)}})
    (_, counts), *_ = tracker.objectives["web"]
    assert counts.counts(at(2), 3600) == (1_980, 2_000)


def test_levels_give_each_objective_and_the_worst_of_them() -> None:
    tracker = SloTracker({"web": service(AVAILABILITY, LATENCY)}, at(0))
    tracker.observe(at(0), {"web": {"stable": counters(0)}})
    tracker.observe(at(1), {"web": {"stable": counters(1000, errors=2, slow=50)}})
    store = SeriesStore()
    tracker.levels(store, at(1))
    assert store.level("web", "burn_rate:3600.availability", at(1)) == pytest.approx(2.0)
    assert store.level("web", "burn_rate:3600.latency", at(1)) == pytest.approx(5.0)
    assert store.level("web", "burn_rate:3600", at(1)) == pytest.approx(5.0)
    assert store.level("web", "error_budget", at(1)) == pytest.approx(1 - 50 / 10)


def test_the_window_survives_an_agent_restart(tmp_path: Path) -> None:
    path = tmp_path / "slo.db"
    first = SloTracker({"web": service(AVAILABILITY)}, at(0), SloStore(path))
    total = feed(first, range(90), 1000, 5)  # 90 minutes at 0.5%: burn rate 5
    first.flush(at(90))
    first.close()
    # The agent is down from 01:30 to 01:40; the data plane counts on meanwhile.
    total += 10 * 1000
    second = SloTracker({"web": service(AVAILABILITY)}, at(100), SloStore(path))
    (_, counts), *_ = second.objectives["web"]
    # 00:41-01:40 holds the minutes counted from 00:41 to 01:29 (00:00 was a starting point).
    assert counts.burn_rate(at(100), 3600) == pytest.approx(5.0)
    assert counts.counts(at(100), 3600) == (49 * 995, 49 * 1000)
    assert counts.budget_left(at(100)) == pytest.approx(1 - 89 * 5 / (0.001 * 89_000))
    # The new agent's first reading is a starting point: the ten minutes are not counted.
    feed(second, range(100, 106), 1000, 0, start=total)
    assert counts.burn_rate(at(105.5), 300) == pytest.approx(0.0)
    assert counts.counts(at(105.5), 300) == (5000, 5000)
    second.close()


# --- rules read them ----------------------------------------------------------------------------


PAGING = "ON burn_rate(1h) > 14.4 AND burn_rate(5m) > 14.4 DO NOTIFY 'page {service.name}';"


def _rules(text: str) -> list:  # type: ignore[type-arg]
    source = Source(text, "r.sql")
    parsed, diagnostics = parse_source(source)
    assert diagnostics == []
    assert [d for d in check([(source, parsed)], None) if d.is_error] == []
    return compile_rules([parsed])


def test_the_paging_pair_fires_when_both_windows_burn(tmp_path: Path) -> None:
    """2% errors from 00:00 burn at 20: the 5-minute window passes 14.4 at once, the hour
    only once 44 of its 60 minutes are bad (44 x 20 / 60 = 14.67)."""
    tracker = SloTracker({"web": service(AVAILABILITY)}, at(0))
    replay = Replay(_rules(PAGING), [], {"web": 1})
    engine = replay.engine
    tracker.observe(at(-61), {"web": {"stable": counters(0)}})
    total = 0
    for minute in range(-60, 0):  # a clean hour before
        total += 1000
        tracker.observe(at(minute), {"web": {"stable": counters(total)}})
    for minute in range(60):
        total += 1000
        tracker.observe(at(minute), {"web": {"stable": counters(total, 20 * (minute + 1))}})
    fired = []
    for second in range(0, 3600, 10):
        now = at(0) + second
        tracker.levels(replay.store, now)
        result = engine.tick(now, replay, replay.services)
        fired += [(now, c.verb) for c in result.commands]
    # Counted up to now's minute: at 00:43:00 the hour holds minutes 00:00-00:43 (44 bad).
    assert fired[0] == (at(43), "NOTIFY")


def test_backtest_computes_any_window_from_the_slo_history(tmp_path: Path) -> None:
    path = tmp_path / "slo.db"
    tracker = SloTracker({"web": service(AVAILABILITY)}, at(0), SloStore(path))
    feed(tracker, range(120), 1000, 0)
    total = feed(tracker, range(120, 150), 1000, 30, start=120 * 1000)  # 3%: burn rate 30
    assert total == 150_000
    tracker.close()
    store = SloStore(path)
    keys = {"burn_rate:7200", "burn_rate:600"}
    rows = list(replay_values({"web": service(AVAILABILITY)}, store, keys, at(100), at(150)))
    store.close()
    values = {(t, key): value for t, _, key, value in rows}
    assert values[(at(149), "burn_rate:600")] == pytest.approx(30.0)
    # Two hours back from 02:29 are 00:30-02:29, of which the last 30 minutes at 3%.
    assert values[(at(149), "burn_rate:7200")] == pytest.approx(30 * 30 / 120)
    replay = Replay(
        _rules("ON burn_rate(10m) > 14.4 DO NOTIFY 'page';"),
        [],
        {"web": 1},
        Settings(),
    )
    assert replay.rules[0].tests[0].key == "burn_rate:600"

"""The dashboard's hour of history: the sparklines' minutes read whole once, then only the
minute that fills; a service's hour at 10 s (a real History file; the clock is the `now`
given)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlifier.dashboard.views import Series, spark_points
from sqlifier.store.history import History

T0 = 1_800_000_000.0  # a whole hour


class Counted:
    """The real History, with each aggregated read's span kept."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.reads: list[tuple[float, float]] = []

    def peaks(self, since: float, until: float, every: int, **kwargs: Any) -> Any:
        self.reads.append((since, until))
        return self.history.peaks(since, until, every, **kwargs)

    def columns(self, *args: Any, **kwargs: Any) -> Any:
        return self.history.columns(*args, **kwargs)


def _filled(tmp_path: Path) -> History:
    history = History(tmp_path / "history.db")
    for slot in range(360):
        history.append(T0 + slot * 10, {"web": {"rps": float(slot), "cpu": 0.5}})
    return history


def test_the_sparklines_read_the_hour_once_then_the_minute_that_fills(tmp_path: Path) -> None:
    history = Counted(_filled(tmp_path))
    source: Any = type("S", (), {"history": lambda self: history})()
    series = Series(source)
    now = T0 + 3595
    first = series.spark("web", "rps", now)
    assert history.reads == [(T0, T0 + 3600)]  # the hour's whole minutes, and this one
    assert first.split()[-1] == "120,1"  # the newest minute, the highest value
    history.history.append(T0 + 3600, {"web": {"rps": 1000.0}})
    later = series.spark("web", "rps", now + 10)
    assert history.reads[-1] == (T0 + 3540, T0 + 3610)  # only from the minute last read
    assert later != first and later.split()[-1] == "120,1"
    assert series.spark("web", "rps", now + 10) is later  # drawn once per change


def test_a_service_hour_is_its_last_hour_at_ten_seconds(tmp_path: Path) -> None:
    history = _filled(tmp_path)
    source: Any = type("S", (), {"history": lambda self: history})()
    series = Series(source)
    hour = series.hour("web", T0 + 3595)
    assert [v for _, v in hour["rps"]][-2:] == [358.0, 359.0]
    history.append(T0 + 3600, {"web": {"rps": 360.0}})
    later = series.hour("web", T0 + 3605)["rps"]
    assert later[-1] == (T0 + 3600, 360.0)
    assert len(later) == 360  # the oldest bucket left the hour
    assert series.hour("nobody", T0 + 3605) == {}


def test_a_sparkline_spans_the_box_from_the_first_minute_to_the_last() -> None:
    points = spark_points({T0: 1.0, T0 + 60: 3.0, T0 + 3540: 2.0}, int(T0))
    assert points == "0,23 2,1 120,12"
    assert spark_points({}, int(T0)) == ""

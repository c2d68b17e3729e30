"""The dashboard's hour of history: read whole once, then bucket by bucket (a real
History file; the clock is the `now` given)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlifier.dashboard.views import Series
from sqlifier.store.history import History

T0 = 1_800_000_000.0


class Source:
    def __init__(self, history: History) -> None:
        self._history = history

    def history(self) -> History:
        return self._history


def test_the_hour_is_read_once_then_bucket_by_bucket(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    for slot in range(360):
        history.append(T0 + slot * 10, {"web": {"rps": float(slot)}})
    source: Any = Source(history)
    series = Series(source)
    now = T0 + 3595
    assert [v for _, v in series.hour(now)["web"]["rps"]][-2:] == [358.0, 359.0]
    history.append(T0 + 3600, {"web": {"rps": 360.0}})
    later = series.hour(now + 10)["web"]["rps"]
    assert later[-1] == (T0 + 3600, 360.0)
    assert len(later) == 360  # the oldest bucket left the hour
    assert [t for t, _ in later] == sorted({t for t, _ in later})

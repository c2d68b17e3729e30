"""The history's reads for the dashboard, `columns` and `peaks`, give what `read` gives
(a real History file: buffered, flushed, reopened, and half of each)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.store.history import History

T0 = 1_800_000_000.0  # a whole hour


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    """Two hours and a half: the first flushed and reopened, the rest buffered on top of
    a flushed part (the open hour), with gaps."""
    rng = random.Random(3)
    first = History(tmp_path / "h.db")
    for slot in range(0, 900, 1):
        if slot % 7 == 3:
            continue  # a gap
        frame = {"web": {"rps": rng.uniform(0, 9), "cpu": rng.random()}}
        if slot % 2:
            frame["pay"] = {"rps": rng.uniform(0, 9)}
        first.append(T0 + slot * 10, frame)
        if slot == 500:
            first.flush()
    first.close()
    again = History(tmp_path / "h.db")
    for slot in range(850, 900):
        again.append(T0 + slot * 10, {"web": {"rps": 100.0 + slot}})  # the later value wins
    try:
        yield again
    finally:
        again.close()


def _expected(
    history: History, since: float, until: float
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    found: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for t, service, key, value in history.read(since, until):
        found.setdefault(service, {}).setdefault(key, []).append((t, value))
    return found


@pytest.mark.parametrize(("since", "until"), [(T0, T0 + 9000), (T0 + 3595, T0 + 8000), (5, 5)])
def test_columns_are_read_grouped_by_series(history: History, since: float, until: float) -> None:
    assert history.columns(since, until) == _expected(history, since, until)


def test_columns_give_the_services_and_keys_asked(history: History) -> None:
    found = history.columns(T0, T0 + 9000, services=["pay"], keys=["rps", "nothing"])
    assert found == {"pay": _expected(history, T0, T0 + 9000)["pay"]}
    assert set(history.columns(T0, T0 + 9000, keys=["cpu"])["web"]) == {"cpu"}


def test_peaks_are_each_groups_highest_value(history: History) -> None:
    since, until = T0 + 1234, T0 + 8888
    expected: dict[str, dict[str, dict[int, float]]] = {}
    for service, keys in _expected(history, since, until).items():
        for key, points in keys.items():
            groups = expected.setdefault(service, {}).setdefault(key, {})
            for t, value in points:
                minute = int(t // 60 * 60)
                groups[minute] = max(value, groups.get(minute, value))
    assert history.peaks(since, until, 60) == expected
    assert history.peaks(since, until, 60, services=["web"], keys=["rps"]) == {
        "web": {"rps": expected["web"]["rps"]}
    }


def test_peaks_refuse_a_group_that_does_not_divide_the_hour(history: History) -> None:
    with pytest.raises(ValueError, match="multiple of 10 s dividing an hour, not 70"):
        history.peaks(T0, T0 + 60, 70)

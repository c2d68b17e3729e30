"""The signal history: real SQLite files, written, flushed, reopened, pruned and damaged."""

from __future__ import annotations

import math
import sqlite3
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlifier.errors import UserError
from sqlifier.store.history import History

T0 = 1_767_225_600.0  # an hour boundary
HOUR = 3600.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "history.db"


Row = tuple[float, str, str, float]


@pytest.fixture
def history(path: Path) -> Iterator[History]:
    opened = History(path)
    yield opened
    opened.close()


def everything(history: History) -> list[Row]:
    return list(history.read(-math.inf, math.inf))


def stored(path: Path) -> list[Row]:
    """What another process would read from the file."""
    history = History(path)
    rows = everything(history)
    history.close()
    return rows


def test_round_trip(path: Path, history: History) -> None:
    history.append(T0, {"web": {"cpu": 0.25, "rps": 12.5}, "api": {"log.error": 3}})
    history.append(T0 + 10, {"web": {"cpu": 0.5}})
    history.flush()
    assert everything(history) == [
        (T0, "api", "log.error", 3.0),
        (T0, "web", "cpu", 0.25),
        (T0, "web", "rps", 12.5),
        (T0 + 10, "web", "cpu", 0.5),
    ]


def test_appends_to_one_bucket_merge_keys_and_the_later_value_wins(
    path: Path, history: History
) -> None:
    history.append(T0 + 20, {"web": {"cpu": 0.1, "rps": 4}})
    history.append(T0 + 27.5, {"web": {"cpu": 0.2}, "api": {"restart": 1}})
    assert everything(history) == [
        (T0 + 20, "api", "restart", 1.0),
        (T0 + 20, "web", "cpu", 0.2),
        (T0 + 20, "web", "rps", 4.0),
    ]


def test_bucket_time_is_floored_to_the_resolution(path: Path, history: History) -> None:
    history.append(T0 + 19.99, {"web": {"cpu": 0.1}})
    assert everything(history) == [(T0 + 10, "web", "cpu", 0.1)]


def test_read_keeps_since_and_excludes_until(path: Path, history: History) -> None:
    for i in range(6):
        history.append(T0 + 10 * i, {"web": {"cpu": i}})
    assert [row[3] for row in history.read(T0 + 20, T0 + 40)] == [2.0, 3.0]
    assert [row[3] for row in history.read(T0 + 15, T0 + 40.5)] == [2.0, 3.0, 4.0]
    assert list(history.read(T0 + 40, T0 + 40)) == []


def test_read_filters_services(path: Path, history: History) -> None:
    history.append(T0, {"web": {"cpu": 1}, "api": {"cpu": 2}, "db": {"cpu": 3}})
    history.flush()
    history.append(T0 + 10, {"web": {"cpu": 4}, "api": {"cpu": 5}})
    assert list(history.read(T0, T0 + HOUR, {"web", "db"})) == [
        (T0, "db", "cpu", 3.0),
        (T0, "web", "cpu", 1.0),
        (T0 + 10, "web", "cpu", 4.0),
    ]
    assert list(history.read(T0, T0 + HOUR, [])) == []


def test_read_orders_by_time_then_service_then_key_across_hours(
    path: Path, history: History
) -> None:
    history.append(T0 + 2 * HOUR, {"web": {"b": 1, "a": 2}})
    history.flush()
    history.append(T0, {"web": {"z": 3}, "api": {"y": 4}})  # late: an older, closed hour
    history.append(T0 + HOUR - 10, {"api": {"x": 5}})
    history.flush()
    history.append(T0 + 2 * HOUR + 10, {"api": {"w": 6}})
    assert everything(history) == [
        (T0, "api", "y", 4.0),
        (T0, "web", "z", 3.0),
        (T0 + HOUR - 10, "api", "x", 5.0),
        (T0 + 2 * HOUR, "web", "a", 2.0),
        (T0 + 2 * HOUR, "web", "b", 1.0),
        (T0 + 2 * HOUR + 10, "api", "w", 6.0),
    ]


def test_buffered_buckets_are_read_before_any_flush(path: Path, history: History) -> None:
    history.append(T0, {"web": {"cpu": 0.7}})
    assert everything(history) == [(T0, "web", "cpu", 0.7)]
    assert stored(path) == []  # another reader sees only what was flushed


def test_flushed_buckets_survive_reopening(path: Path, history: History) -> None:
    history.append(T0, {"web": {"cpu": 0.7}})
    history.flush()
    assert stored(path) == [(T0, "web", "cpu", 0.7)]


def test_close_flushes(path: Path, history: History) -> None:
    history.append(T0, {"web": {"cpu": 0.7}})
    history.close()
    history.close()
    assert stored(path) == [(T0, "web", "cpu", 0.7)]


def test_a_reopened_history_merges_with_the_hour_on_disk(path: Path) -> None:
    first = History(path)
    first.append(T0, {"web": {"cpu": 0.1, "rps": 1}})
    first.append(T0 + 10, {"web": {"cpu": 0.2}})
    first.close()
    second = History(path)
    second.append(T0 + 10, {"web": {"rps": 2}})
    second.append(T0, {"web": {"rps": 3}})
    rows = everything(second)
    assert rows == [
        (T0, "web", "cpu", 0.1),
        (T0, "web", "rps", 3.0),
        (T0 + 10, "web", "cpu", 0.2),
        (T0 + 10, "web", "rps", 2.0),
    ]
    second.close()
    assert stored(path) == rows


def test_a_late_bucket_for_a_written_hour_merges_with_it(path: Path, history: History) -> None:
    history.append(T0, {"web": {"cpu": 0.1}})
    history.append(T0 + HOUR, {"web": {"cpu": 0.2}})
    history.flush()  # the first hour is closed: written and dropped from memory
    history.append(T0 + 10, {"web": {"cpu": 0.3}})
    history.flush()
    assert [row[3] for row in stored(path)] == [0.1, 0.3, 0.2]


def test_values_are_kept_exactly(path: Path) -> None:
    values = {
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "negative zero": -0.0,
        "infinite": math.inf,
        "big count": float(2**53),
        "third": 1 / 3,
    }
    history = History(path)
    history.append(T0, {"web": values})
    history.close()
    read = {key: value for _, _, key, value in stored(path)}
    assert {k: struct.pack("<d", v) for k, v in read.items()} == {
        k: struct.pack("<d", v) for k, v in values.items()
    }


KEYS = [
    "prometheus:sum(rate(http_requests_total{code=~\"5..\",service='web'}[5m]))",
    "quote \" and ' and \\ backslash",
    "ünïcødé ✓ 服务 🚀",
    "",
    "x" * 10_000,
    "log.critical",
]


def test_any_key_string_round_trips(path: Path, history: History) -> None:
    history.append(T0, {"web": dict.fromkeys(KEYS, 1.0)})
    history.close()
    assert [key for _, _, key, _ in stored(path)] == sorted(KEYS)


def test_prune_deletes_hours_older_than_retention(path: Path) -> None:
    history = History(path, retention=2 * HOUR)
    for hour in range(4):
        history.append(T0 + hour * HOUR, {"web": {"cpu": hour}, "api": {"cpu": hour}})
    history.flush()
    history.append(T0 + HOUR + 10, {"db": {"cpu": 9}})  # buffered, in an hour to be pruned
    # At 4h the window starts at 2h: hours 0 and 1 hold nothing newer; 2 chunks each + db.
    assert history.prune(T0 + 4 * HOUR) == 5
    assert sorted({t for t, *_ in everything(history)}) == [T0 + 2 * HOUR, T0 + 3 * HOUR]
    assert sorted({t for t, *_ in stored(path)}) == [T0 + 2 * HOUR, T0 + 3 * HOUR]
    assert history.prune(T0 + 4 * HOUR) == 0


def test_prune_keeps_an_hour_holding_a_bucket_inside_retention(path: Path) -> None:
    history = History(path, retention=HOUR)
    history.append(T0 + HOUR - 10, {"web": {"cpu": 1}})
    assert history.prune(T0 + 2 * HOUR - 10) == 0
    assert history.prune(T0 + 2 * HOUR) == 1


def test_empty_history_has_no_span(history: History) -> None:
    assert history.span() is None


def test_span_is_the_oldest_and_newest_bucket_held(path: Path, history: History) -> None:
    history.append(T0 + 40, {"web": {"cpu": 1}})
    history.append(T0 + HOUR + 50, {"api": {"cpu": 1}})
    history.flush()
    history.append(T0 + 3 * HOUR + 20, {"web": {"cpu": 1}})  # still buffered
    assert history.span() == (T0 + 40, T0 + 3 * HOUR + 20)
    reader = History(path)
    assert reader.span() == (T0 + 40, T0 + HOUR + 50)
    reader.close()


def corrupt(path: Path, service: str, data: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE chunks SET data = ? WHERE service = ?", (data, service))
    db.close()


def valid_blob_of_wrong_length() -> bytes:
    return zlib.compress(struct.pack("<I", 1) + struct.pack("<I", 3) + b"cpu" + b"\1" * 10)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda blob: blob[: len(blob) // 2], id="truncated"),
        pytest.param(lambda blob: blob[:20] + bytes([blob[20] ^ 0xFF]) + blob[21:], id="flipped"),
        pytest.param(lambda blob: b"", id="empty"),
        pytest.param(lambda blob: valid_blob_of_wrong_length(), id="wrong length"),
        pytest.param(lambda blob: zlib.compress(b"\xff\xff"), id="short header"),
        pytest.param(lambda blob: "text, not a blob", id="text"),
    ],
)
def test_a_corrupt_chunk_is_skipped_and_counted(
    path: Path, damage: Callable[[bytes], object]
) -> None:
    history = History(path)
    history.append(T0, {"web": {"cpu": 0.5}, "api": dict.fromkeys(KEYS, 0.25)})
    history.close()
    with sqlite3.connect(path) as db:
        (blob,) = db.execute("SELECT data FROM chunks WHERE service = 'api'").fetchone()
    db.close()
    corrupt(path, "api", damage(blob))
    reader = History(path)
    assert everything(reader) == [(T0, "web", "cpu", 0.5)]
    assert reader.skipped == 1
    assert reader.span() == (T0, T0)


def test_a_corrupt_chunk_is_replaced_by_new_buckets_for_its_hour(
    path: Path, history: History
) -> None:
    history.append(T0, {"web": {"cpu": 0.5}})
    history.close()
    corrupt(path, "web", b"garbage")
    history = History(path)
    history.append(T0 + 10, {"web": {"cpu": 0.6}})
    history.close()
    assert history.skipped == 1
    assert stored(path) == [(T0 + 10, "web", "cpu", 0.6)]


def test_a_file_of_an_older_layout_is_refused(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE samples (t REAL, service TEXT, key TEXT, value REAL)")
    db.close()
    with pytest.raises(UserError) as error:
        History(path)
    assert str(error.value) == (
        f"{path}: signal history written by an older sqlifier (layout 0; this one reads "
        "layout 1); move the file aside to start a new history"
    )


def test_a_file_of_a_newer_layout_is_refused(path: Path) -> None:
    History(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(UserError, match=r"written by a newer sqlifier \(layout 2;"):
        History(path)


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.write_bytes(b"not a database, just text" * 100)
    with pytest.raises(UserError) as error:
        History(path)
    assert str(error.value) == f"{path}: not a signal history (file is not a database)"


def test_the_file_uses_wal(path: Path) -> None:
    History(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


READER = """
import sys
from pathlib import Path
from sqlifier.store.history import History

SERVICES, KEYS, BUCKETS, T0 = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), 1_767_225_600
history = History(Path(sys.argv[1]))
reads = 0
while True:
    rows = list(history.read(T0, T0 + 10**6))
    reads += 1
    buckets = sorted({t for t, *_ in rows})
    # Every flush is one transaction: a reader sees whole buckets, from the first on.
    assert buckets == [T0 + 10 * i for i in range(len(buckets))], buckets
    assert len(rows) == len(buckets) * SERVICES * KEYS, (len(rows), len(buckets))
    assert all(value == t for t, _, _, value in rows)
    if len(buckets) == BUCKETS:
        break
print(reads, history.skipped)
"""


def test_readers_in_other_processes_see_whole_flushed_buckets(path: Path) -> None:
    services, keys, buckets = 10, 18, 400  # across an hour's end, flushed every minute
    writer = History(path)
    writer.flush()
    args = [sys.executable, "-c", READER, str(path), str(services), str(keys), str(buckets)]
    readers = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for i in range(buckets):
            t = T0 + 10 * i
            frame = {f"svc-{s}": {f"key-{k}": t for k in range(keys)} for s in range(services)}
            writer.append(t, frame)
            if i % 6 == 5:
                writer.flush()
        writer.close()
        outputs = [reader.communicate(timeout=60)[0] for reader in readers]
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()
    assert [reader.returncode for reader in readers] == [0, 0]
    assert [out.split()[1] for out in outputs] == ["0", "0"]  # nothing skipped


frames = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=800),  # buckets: a little over two hours
        st.sampled_from(["web", "api", "payment-gateway"]),
        st.dictionaries(
            st.text(max_size=8), st.floats(allow_nan=False, width=64), min_size=1, max_size=4
        ),
        st.booleans(),  # flush after this append
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames)
def test_reading_returns_every_value_last_written(
    appends: list[tuple[int, str, dict[str, float], bool]],
) -> None:
    expected: dict[tuple[float, str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "history.db")
        for bucket, service, values, flush in appends:
            history.append(T0 + 10 * bucket, {service: values})
            for key, value in values.items():
                expected[(T0 + 10 * bucket, service, key)] = value
            if flush:
                history.flush()
        rows = sorted(expected.items())
        assert everything(history) == [(*key, value) for key, value in rows]
        history.close()
        assert stored(Path(tmp) / "history.db") == [(*k, v) for k, v in rows]

"""The SLO history: good and total requests per minute, per service and objective.

`.sqlifier/<env>/slo.db` (SQLite, WAL), beside the signal history rather than in it: an
objective's window is 30 days (the signal history keeps 7), and it needs two counts a
minute, not a value every 10 s. One row per service, objective and hour:

    service, objective, hour (its start, seconds), good, total   (the hour's sums)
    minutes: zlib of 120 float64 little-endian: good of minutes 0-59, then total

The hour's sums let an agent that starts again rebuild a 30-day window from 720 small
rows per objective without opening a blob; only the last `MINUTE_SPAN` is read minute by
minute. The writer buffers the open hour and rewrites its row on every flush (once a
minute); one process writes, any number read (`sqlifier slo`, `plan`).
"""

from __future__ import annotations

import math
import sqlite3
import sys
import zlib
from array import array
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlifier.engine.slo import MINUTE_SPAN, SloCounts
from sqlifier.errors import UserError

__all__ = ["SloStore"]

LAYOUT = 1
_HOUR = 3600
_SCHEMA = """
CREATE TABLE minutes (
    service TEXT NOT NULL,
    objective TEXT NOT NULL,
    hour INTEGER NOT NULL,
    good REAL NOT NULL,
    total REAL NOT NULL,
    minutes BLOB NOT NULL,
    PRIMARY KEY (service, objective, hour)
) WITHOUT ROWID
"""


class _Hour:
    __slots__ = ("dirty", "values")

    def __init__(self, values: array[float] | None = None) -> None:
        self.values = values if values is not None else array("d", bytes(8 * 120))
        self.dirty = False


def _encode(values: array[float]) -> bytes:
    out = array("d", values)
    if sys.byteorder == "big":
        out.byteswap()
    return zlib.compress(out.tobytes(), 6)


def _decode(blob: object) -> array[float] | None:
    if not isinstance(blob, bytes):
        return None
    try:
        raw = zlib.decompress(blob)
    except zlib.error:
        return None
    if len(raw) != 8 * 120:
        return None
    values = array("d", raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values


class SloStore:
    """Per-minute good and total requests of every objective, kept `retention` seconds."""

    def __init__(self, path: Path, retention: float = 31 * 86400.0) -> None:
        self.path = path
        self.retention = retention
        self._buffer: dict[tuple[str, str, int], _Hour] = {}
        self._db = _open(path)

    def add(self, service: str, objective: str, t: float, good: float, total: float) -> None:
        """Requests counted at `t` (added to its minute)."""
        minute = math.floor(t / 60)
        hour = minute // 60 * _HOUR
        key = (service, objective, hour)
        held = self._buffer.get(key)
        if held is None:
            held = self._buffer[key] = self._stored(key)
        slot = minute % 60
        held.values[slot] += good
        held.values[60 + slot] += total
        held.dirty = True

    def _stored(self, key: tuple[str, str, int]) -> _Hour:
        """An hour a previous writer may have begun: its minutes, to add to."""
        row = self._db.execute(
            "SELECT minutes FROM minutes WHERE service = ? AND objective = ? AND hour = ?", key
        ).fetchone()
        return _Hour(_decode(row[0]) if row is not None else None)

    def flush(self, now: float | None = None) -> None:
        """Write the changed hours in one transaction; hours before `now`'s leave memory."""
        dirty = [(key, hour) for key, hour in self._buffer.items() if hour.dirty]
        if dirty:
            with _transaction(self._db):
                for key, hour in dirty:
                    values = hour.values
                    self._db.execute(
                        "INSERT OR REPLACE INTO minutes VALUES (?, ?, ?, ?, ?, ?)",
                        (*key, sum(values[:60]), sum(values[60:]), _encode(values)),
                    )
            for _, hour in dirty:
                hour.dirty = False
        if now is not None:
            current = math.floor(now / _HOUR) * _HOUR
            for key in [k for k in self._buffer if k[2] < current]:
                del self._buffer[key]

    def prune(self, now: float) -> int:
        """Forget hours wholly older than `now - retention`; how many rows went."""
        last = math.floor((now - self.retention) / _HOUR) * _HOUR - _HOUR
        with _transaction(self._db):
            cursor = self._db.execute("DELETE FROM minutes WHERE hour <= ?", (last,))
        return cursor.rowcount

    def close(self) -> None:
        self.flush()
        self._db.close()

    # --- reading --------------------------------------------------------------------

    def load(self, service: str, objective: str, counts: SloCounts, now: float) -> None:
        """Fill `counts` with what is recorded of the objective's window up to `now`: the
        sums of the hours before `now`'s, and the minutes of the last `MINUTE_SPAN` (and
        of `now`'s hour) up to `now`'s minute."""
        current = math.floor(now / _HOUR) * _HOUR
        since = math.floor((now - counts.window) / _HOUR) * _HOUR
        recent = min(current, math.floor((now - MINUTE_SPAN) / _HOUR) * _HOUR)
        rows = self._db.execute(
            "SELECT hour, good, total FROM minutes WHERE service = ? AND objective = ?"
            " AND hour >= ? AND hour < ? ORDER BY hour",
            (service, objective, since, current),
        ).fetchall()
        for hour, good, total in rows:
            counts.hours.add(float(hour), float(good), float(total))
        for hour, values in self._minutes(service, objective, recent, now):
            for slot in range(60):
                t = float(hour + 60 * slot)
                if not (values[slot] or values[60 + slot]) or t > now:
                    continue
                counts.minutes.add(t, values[slot], values[60 + slot])
                if hour == current:
                    counts.hours.add(t, values[slot], values[60 + slot])

    def load_all(self, counts: Mapping[tuple[str, str], SloCounts], now: float) -> None:
        """`load` for many (service, objective) at once, in two queries, each ring filled
        in one pass: what an agent that starts again does for every objective."""
        if not counts:
            return
        current = math.floor(now / _HOUR) * _HOUR
        longest = max(c.window for c in counts.values())
        since = math.floor((now - longest) / _HOUR) * _HOUR
        recent = min(current, math.floor((now - MINUTE_SPAN) / _HOUR) * _HOUR)
        hours: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
        rows = self._db.execute(
            "SELECT service, objective, hour, good, total FROM minutes"
            " WHERE hour >= ? AND hour < ?",
            (since, current),
        )
        for service, objective, hour, good, total in rows:
            found = counts.get((service, objective))
            if found is not None and hour >= now - found.window - _HOUR:
                hours.setdefault((service, objective), {})[hour // _HOUR] = (good, total)
        minutes: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
        rows = self._db.execute(
            "SELECT service, objective, hour, minutes FROM minutes WHERE hour >= ? AND hour <= ?",
            (recent, now),
        )
        last = math.floor(now / 60)
        for service, objective, hour, blob in rows:
            values = _decode(blob) if (service, objective) in counts else None
            if values is None:
                continue
            held = minutes.setdefault((service, objective), {})
            for slot in range(60):
                if (values[slot] or values[60 + slot]) and hour // 60 + slot <= last:
                    held[hour // 60 + slot] = (values[slot], values[60 + slot])
                    if hour == current:
                        sums = hours.setdefault((service, objective), {})
                        good, total = sums.get(hour // _HOUR, (0.0, 0.0))
                        sums[hour // _HOUR] = (good + values[slot], total + values[60 + slot])
        for key, found in counts.items():
            _fill(found.hours, hours.get(key))
            _fill(found.minutes, minutes.get(key))

    def _minutes(
        self, service: str, objective: str, since: int, until: float
    ) -> Iterator[tuple[int, array[float]]]:
        rows = self._db.execute(
            "SELECT hour, minutes FROM minutes WHERE service = ? AND objective = ?"
            " AND hour >= ? AND hour <= ? ORDER BY hour",
            (service, objective, since, until),
        ).fetchall()
        for hour, blob in rows:
            values = _decode(blob)
            if values is not None:
                yield int(hour), values

    def keys(self) -> list[tuple[str, str]]:
        """Every (service, objective) recorded."""
        rows = self._db.execute("SELECT DISTINCT service, objective FROM minutes")
        return sorted((str(s), str(o)) for s, o in rows)

    def minutes(
        self, service: str, objective: str, since: float, until: float
    ) -> Iterator[tuple[float, float, float]]:
        """(minute start, good, total) of every minute with requests in `[since, until)`."""
        first = math.floor(since / _HOUR) * _HOUR
        for hour, values in self._minutes(service, objective, first, until):
            for slot in range(60):
                t = float(hour + 60 * slot)
                if since <= t < until and values[60 + slot]:
                    yield t, values[slot], values[60 + slot]

    def size(self) -> int:
        """Bytes the file holds (its pages in use)."""
        count = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((count - free) * page)


def _fill(ring: Any, buckets: dict[int, tuple[float, float]] | None) -> None:
    """A ring given every bucket from the first recorded to the last, gaps as zeros."""
    if not buckets:
        return
    first, last = min(buckets), max(buckets)
    empty = (0.0, 0.0)
    run = [buckets.get(number, empty) for number in range(first, last + 1)]
    ring.fill(first, [g for g, _ in run], [t for _, t in run])


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            with _transaction(db):
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    db.execute(_SCHEMA)
                    db.execute(f"PRAGMA user_version={LAYOUT}")
                    version = LAYOUT
                else:
                    version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as error:
        db.close()
        raise UserError(f"{path}: not an SLO history ({error})") from error
    if version != LAYOUT:
        db.close()
        raise UserError(
            f"{path}: SLO history of layout {version}, this sqlifier reads layout {LAYOUT}; "
            "move the file aside to start a new one"
        )
    return db

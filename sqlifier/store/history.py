"""The signal history: every service's signals in 10 s buckets, kept on disk for backtests.

One SQLite file (WAL). Each row of `chunks` holds one service's hour: 360 buckets, stored
column by column and compressed with zlib. Layout 1 of a chunk, before compression:

    u32 key count, then per key: u32 length + UTF-8 text      (keys sorted)
    per key: 360 bytes, 1 where the bucket has a value         (the presence masks)
    per key: 360 float64 little-endian, absent buckets 0.0,    (the values, byte-shuffled:
             all keys' values laid end to end                  every 1st byte, then 2nd...)

Byte shuffling puts the sign and exponent bytes of similar numbers side by side, where
zlib squeezes them to almost nothing; values are kept exactly (no rounding).

The writer (the agent) buffers the open hour in memory and rewrites its chunk on every
flush(). One process writes a file; any number read it, each with its own `History`, and
see what was last flushed (each flush is one transaction). A `History` belongs to the
thread that opened it (the sqlite3 default).
"""

from __future__ import annotations

import json
import math
import sqlite3
import struct
import sys
import zlib
from array import array
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sqlifier.errors import UserError

__all__ = ["History"]

LAYOUT = 1
_STEP = 10  # seconds per bucket (History.RESOLUTION); chunk starts are whole seconds
SLOTS = 360  # buckets per chunk
_HOUR = SLOTS * _STEP
# zlib levels. The open hour is rewritten on every flush: level 1 costs half the time of 6
# for 4% more bytes. A closed hour is written once more, at 6 (9 would save under 1% more).
_FAST = 1
_SMALL = 6

_SCHEMA = """
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    start INTEGER NOT NULL,
    service TEXT NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (start, service)
)
"""

_Column = tuple[bytearray, "array[float]"]
_Hour = list[tuple[str, list[tuple[str, bytearray, "array[float]"]]]]


class _Corrupt(Exception):
    """A chunk that does not decode."""


class _Chunk:
    """One service's hour in memory: per key, a presence mask and 360 value slots."""

    __slots__ = ("columns", "complete", "dirty")

    def __init__(self, columns: dict[str, _Column] | None = None, complete: bool = False):
        self.columns: dict[str, _Column] = columns if columns is not None else {}
        self.complete = complete  # holds everything the file holds for this chunk
        self.dirty = False

    def put(self, slot: int, values: Mapping[str, float]) -> None:
        columns = self.columns
        for key, value in values.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = (bytearray(SLOTS), array("d", bytes(8 * SLOTS)))
            column[1][slot] = value  # first: a value that is no number raises here
            column[0][slot] = 1
        self.dirty = True

    def overlay(self, other: _Chunk) -> None:
        """Take every value `other` holds, replacing this chunk's value for the same bucket."""
        for key, (mask, values) in other.columns.items():
            mine = self.columns.get(key)
            if mine is None:
                self.columns[key] = (bytearray(mask), array("d", values))
                continue
            for slot in range(SLOTS):
                if mask[slot]:
                    mine[0][slot] = 1
                    mine[1][slot] = values[slot]

    def copy(self) -> _Chunk:
        columns = {key: (bytearray(m), array("d", v)) for key, (m, v) in self.columns.items()}
        return _Chunk(columns, self.complete)

    def used(self) -> tuple[int, int] | None:
        """The first and last slot holding any value."""
        masks = [mask for mask, _ in self.columns.values()]
        firsts = [f for f in (mask.find(1) for mask in masks) if f >= 0]
        if not firsts:
            return None
        return min(firsts), max(mask.rfind(1) for mask in masks)


def _encode(chunk: _Chunk, level: int) -> bytes:
    keys = sorted(chunk.columns)
    parts: list[bytes | bytearray] = [struct.pack("<I", len(keys))]
    for key in keys:
        raw = key.encode("utf-8", "surrogatepass")
        parts += [struct.pack("<I", len(raw)), raw]
    parts += [chunk.columns[key][0] for key in keys]
    values = array("d")
    for key in keys:
        values.extend(chunk.columns[key][1])
    if sys.byteorder == "big":
        values.byteswap()
    packed = values.tobytes()
    parts += [packed[i::8] for i in range(8)]
    return zlib.compress(b"".join(parts), level)


def _decode(blob: object) -> _Chunk:
    try:
        if not isinstance(blob, bytes):
            raise _Corrupt("not a blob")
        raw = zlib.decompress(blob)
        (count,) = struct.unpack_from("<I", raw, 0)
        pos = 4
        keys = []
        for _ in range(count):
            (size,) = struct.unpack_from("<I", raw, pos)
            keys.append(raw[pos + 4 : pos + 4 + size].decode("utf-8", "surrogatepass"))
            pos += 4 + size
        if len(raw) != pos + count * SLOTS * 9 or len(set(keys)) != count:
            raise _Corrupt("wrong length")
    except (zlib.error, struct.error, UnicodeDecodeError) as error:
        raise _Corrupt(str(error)) from error
    width = count * SLOTS
    shuffled = raw[pos + count * SLOTS :]
    packed = bytearray(8 * width)
    for i in range(8):
        packed[i::8] = shuffled[i * width : (i + 1) * width]
    values = array("d", packed)
    if sys.byteorder == "big":
        values.byteswap()
    columns = {}
    for n, key in enumerate(keys):
        mask = bytearray(raw[pos + n * SLOTS : pos + (n + 1) * SLOTS])
        columns[key] = (mask, values[n * SLOTS : (n + 1) * SLOTS])
    return _Chunk(columns)


def _bucket_ceil(t: float) -> int:
    """The first bucket starting at or after `t` (infinite times clamp to the float range)."""
    return math.ceil(max(min(t / _STEP, 2.0**53), -(2.0**53)))


class History:
    """Signal values per 10 s bucket, per service and key; the source of backtests."""

    RESOLUTION = float(_STEP)

    def __init__(self, path: Path, retention: float = 7 * 86400) -> None:
        self.path = path
        self.retention = retention
        self.skipped = 0  # chunks that did not decode, passed over by read() and span()
        self._buffer: dict[tuple[int, str], _Chunk] = {}
        self._newest = -(2**63)  # start of the newest chunk appended to
        self._db = _open(path)
        self._closed = False

    # --- writing --------------------------------------------------------------------

    def append(self, t: float, frame: Mapping[str, Mapping[str, float]]) -> None:
        """Add one bucket (`t` floored to 10 s): service -> key -> value; merges keys."""
        hour, slot = divmod(math.floor(t / _STEP), SLOTS)
        start = hour * _HOUR
        self._newest = max(self._newest, start)
        for service, values in frame.items():
            if not values:
                continue
            chunk = self._buffer.get((start, service))
            if chunk is None:
                chunk = self._buffer[(start, service)] = _Chunk()
            chunk.put(slot, values)

    def flush(self) -> None:
        """Write the buffered buckets in one transaction; they are durable when it returns.

        The open hour stays in memory, to be rewritten whole by the next flush; closed
        hours are written once more, compressed harder, and leave memory.
        """
        closed = [(key, chunk) for key, chunk in self._buffer.items() if key[0] < self._newest]
        dirty = [(key, chunk) for key, chunk in self._buffer.items() if chunk.dirty]
        dirty = [(key, chunk) for key, chunk in dirty if key[0] >= self._newest]
        if not closed and not dirty:
            return
        with _transaction(self._db):
            for key, chunk in dirty:
                self._write(key, chunk, _FAST)
            for key, chunk in closed:
                self._write(key, chunk, _SMALL)
        for _, chunk in dirty:
            chunk.dirty = False
        for key, _ in closed:
            del self._buffer[key]

    def _write(self, key: tuple[int, str], chunk: _Chunk, level: int) -> None:
        if not chunk.complete:
            self._complete(*key, chunk)
        self._db.execute(
            "INSERT INTO chunks (start, service, data) VALUES (?, ?, ?)"
            " ON CONFLICT (start, service) DO UPDATE SET data = excluded.data",
            (*key, _encode(chunk, level)),
        )

    def _complete(self, start: int, service: str, chunk: _Chunk) -> None:
        """Merge the file's copy of a chunk under the buffered values."""
        row = self._db.execute(
            "SELECT data FROM chunks WHERE start = ? AND service = ?", (start, service)
        ).fetchone()
        if row is not None:
            try:
                stored = _decode(row[0])
            except _Corrupt:
                self.skipped += 1  # unreadable anyway: the buffered values replace it
            else:
                stored.overlay(chunk)
                chunk.columns = stored.columns
        chunk.complete = True

    def prune(self, now: float) -> int:
        """Delete every chunk (service-hour) whose buckets are all older than `now - retention`.

        Returns how many chunks went, on disk or buffered. An hour with one bucket inside
        the retention is kept whole, so up to an hour more than `retention` stays. Freed
        pages are reused by new chunks; the file does not shrink.
        """
        last = math.floor(now - self.retention) - _HOUR  # the last start to delete
        with _transaction(self._db):
            removed = set(
                self._db.execute("SELECT start, service FROM chunks WHERE start <= ?", (last,))
            )
            self._db.execute("DELETE FROM chunks WHERE start <= ?", (last,))
        for key in [k for k in self._buffer if k[0] <= last]:
            removed.add(key)
            del self._buffer[key]
        return len(removed)

    def close(self) -> None:
        """Flush and close; a closed history cannot be used again."""
        if not self._closed:
            self.flush()
            self._db.close()
            self._closed = True

    # --- reading --------------------------------------------------------------------

    def read(
        self, since: float, until: float, services: Collection[str] | None = None
    ) -> Iterator[tuple[float, str, str, float]]:
        """(t, service, key, value) for `since <= t < until`, by t, then service, then key.

        Includes buffered buckets. Chunks that do not decode are skipped and counted in
        `skipped`. Counts come back as floats.
        """
        first, end = _bucket_ceil(since), _bucket_ceil(until)
        if first >= end:
            return
        wanted = None if services is None else set(services)
        for start in self._starts(first // SLOTS * _HOUR, end * _STEP):
            hour = self._hour(start, wanted)
            base = start // _STEP
            for slot in range(max(first - base, 0), min(end - base, SLOTS)):
                t = float((base + slot) * _STEP)
                for service, columns in hour:
                    for key, mask, values in columns:
                        if mask[slot]:
                            yield t, service, key, values[slot]

    def columns(
        self,
        since: float,
        until: float,
        services: Collection[str] | None = None,
        keys: Collection[str] | None = None,
    ) -> dict[str, dict[str, list[tuple[float, float]]]]:
        """service -> key -> [(t, value)] for `since <= t < until`, oldest first: the values
        `read` gives, grouped by series, of the `keys` asked only (every key for None).

        The buffered hour is read where it lies, not copied: a page that asks for the
        newest bucket of every service costs one pass over that bucket.
        """
        found: dict[str, dict[str, list[tuple[float, float]]]] = {}
        first, end = _bucket_ceil(since), _bucket_ceil(until)
        if first >= end:
            return found
        for start in self._starts(first // SLOTS * _HOUR, end * _STEP):
            base = start // _STEP
            low, high = max(first - base, 0), min(end - base, SLOTS)
            for service, key, mask, values in self._columns(start, services, keys):
                points = [
                    (float((base + slot) * _STEP), values[slot])
                    for slot in range(low, high)
                    if mask[slot]
                ]
                if points:
                    found.setdefault(service, {}).setdefault(key, []).extend(points)
        return found

    def peaks(
        self,
        since: float,
        until: float,
        every: int,
        services: Collection[str] | None = None,
        keys: Collection[str] | None = None,
    ) -> dict[str, dict[str, dict[int, float]]]:
        """service -> key -> {group start: the highest value in it}, the buckets of
        `since <= t < until` grouped by `every` seconds (a multiple of 10 dividing an hour;
        groups start at multiples of `every`): a sparkline's points, aggregated where the
        values lie, without building one tuple per bucket."""
        if every % _STEP or _HOUR % every:
            raise ValueError(f"every must be a multiple of {_STEP} s dividing an hour, not {every}")
        width = every // _STEP
        found: dict[str, dict[str, dict[int, float]]] = {}
        first, end = _bucket_ceil(since), _bucket_ceil(until)
        if first >= end:
            return found
        for start in self._starts(first // SLOTS * _HOUR, end * _STEP):
            base = start // _STEP
            low, high = max(first - base, 0), min(end - base, SLOTS)
            for service, key, mask, values in self._columns(start, services, keys):
                groups: dict[int, float] | None = None
                for group in range(low - low % width, high, width):
                    a, b = max(group, low), min(group + width, high)
                    held = mask.count(1, a, b)
                    if held == b - a:
                        top = max(values[a:b])
                    elif held:
                        top = max(values[slot] for slot in range(a, b) if mask[slot])
                    else:
                        continue
                    if groups is None:
                        groups = found.setdefault(service, {}).setdefault(key, {})
                    groups[start + group * _STEP] = top
        return found

    def _columns(
        self, start: int, services: Collection[str] | None, keys: Collection[str] | None
    ) -> Iterator[tuple[str, str, bytearray, array[float]]]:
        """(service, key, presence mask, values) of one hour, for `columns` and `peaks`:
        a buffered chunk that holds the file's copy is read in place, and its blob is not
        even fetched; any other is decoded, with the buffered values laid over it."""
        wanted = None if services is None else set(services)
        buffered = {
            service: chunk
            for (s, service), chunk in self._buffer.items()
            if s == start and (wanted is None or service in wanted)
        }
        whole = sorted(service for service, chunk in buffered.items() if chunk.complete)
        query = "SELECT service, data FROM chunks WHERE start = ?"
        query += " AND service NOT IN (SELECT value FROM json_each(?))"
        params: tuple[object, ...] = (start, json.dumps(whole))
        if wanted is not None:
            query += " AND service IN (SELECT value FROM json_each(?))"
            params += (json.dumps(sorted(wanted)),)
        chunks = {service: buffered[service] for service in whole}
        for service, blob in self._db.execute(query, params).fetchall():
            try:
                chunk = _decode(blob)
            except _Corrupt:
                self.skipped += 1
                continue
            if service in buffered:
                chunk.overlay(buffered[service])
            chunks[service] = chunk
        for service, chunk in buffered.items():
            chunks.setdefault(service, chunk)
        for service in sorted(chunks):
            columns = chunks[service].columns
            for key in sorted(columns if keys is None else set(keys) & columns.keys()):
                yield service, key, *columns[key]

    def span(self) -> tuple[float, float] | None:
        """The oldest and the newest bucket holding any value, or None when empty."""
        oldest = newest = None
        for start in self._starts():
            used = [u for u in (c.used() for c in self._chunks(start).values()) if u is not None]
            if used:
                oldest = start + min(u[0] for u in used) * _STEP
                break
        for start in reversed(self._starts()):
            used = [u for u in (c.used() for c in self._chunks(start).values()) if u is not None]
            if used:
                newest = start + max(u[1] for u in used) * _STEP
                break
        if oldest is None or newest is None:
            return None
        return float(oldest), float(newest)

    def _starts(self, low: int = -(2**63), high: int = 2**63 - 1) -> list[int]:
        """Start times of the chunks held in `[low, high)`, on disk or buffered, ascending."""
        rows = self._db.execute(
            "SELECT DISTINCT start FROM chunks WHERE start >= ? AND start < ?", (low, high)
        )
        held = {start for (start,) in rows}
        held.update(start for start, _ in self._buffer if low <= start < high)
        return sorted(held)

    def _chunks(self, start: int, services: set[str] | None = None) -> dict[str, _Chunk]:
        """The chunks of one hour, the file's copy overlaid with the buffered values."""
        query = "SELECT service, data FROM chunks WHERE start = ?"
        if services is not None:
            query += " AND service IN (SELECT value FROM json_each(?))"
        params = (start,) if services is None else (start, json.dumps(sorted(services)))
        buffered = {
            service: chunk
            for (s, service), chunk in self._buffer.items()
            if s == start and (services is None or service in services)
        }
        found = {}
        for service, blob in self._db.execute(query, params).fetchall():
            if service in buffered and buffered[service].complete:
                continue
            try:
                found[service] = _decode(blob)
            except _Corrupt:
                self.skipped += 1
        for service, chunk in buffered.items():
            if service in found:
                found[service].overlay(chunk)
            else:
                found[service] = chunk.copy()
        return found

    def _hour(self, start: int, services: set[str] | None) -> _Hour:
        chunks = self._chunks(start, services)
        return [
            (
                service,
                [(key, *chunks[service].columns[key]) for key in sorted(chunks[service].columns)],
            )
            for service in sorted(chunks)
        ]


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection autocommits)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _open(path: Path) -> sqlite3.Connection:
    """Connect, creating the file at the current layout, or refuse a file of another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # The WAL keeps the size of its largest checkpoint; cap what it keeps after one.
        db.execute("PRAGMA journal_size_limit=67108864")
        version = _layout(db)
        if version is None:
            with _transaction(db):  # a second process may have created it meanwhile
                version = _layout(db)
                if version is None:
                    db.execute(_SCHEMA)
                    db.execute(f"PRAGMA user_version={LAYOUT}")
                    version = LAYOUT
    except sqlite3.DatabaseError as error:
        db.close()
        raise UserError(f"{path}: not a signal history ({error})") from error
    if version != LAYOUT:
        db.close()
        age = "an older" if version < LAYOUT else "a newer"
        raise UserError(
            f"{path}: signal history written by {age} sqlifier (layout {version}; this one "
            f"reads layout {LAYOUT}); move the file aside to start a new history"
        )
    return db


def _layout(db: sqlite3.Connection) -> int | None:
    """The file's layout version; None for a new, empty file."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None:
        return None
    return version

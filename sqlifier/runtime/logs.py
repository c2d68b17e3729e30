"""Log lines: their level, read the way people write them.

A line's level comes from, in order: a JSON object's `level`, `severity`, `lvl` or
`levelname` field (names, or pino's numbers 10-60); logfmt's `level=`; a leading level word
in capitals, in brackets or before a colon (`ERROR ...`, `[warn] ...`, `error: ...`,
`2026-01-01 12:00:00 CRITICAL ...`, Python's `ERROR:root:...`). A line with no level is
`info`, on stdout and stderr alike: many programs write ordinary output to stderr.

Masking, classifying and writing an instance's output costs some 5 µs a line: a chatty
instance's poll (256 KiB, some 3,700 lines) is tens of milliseconds of work. The agent does
it in slices of SLICE lines (`OutputTail.poll_in_slices`), letting its event loop — the
API, probes, deploys — run between two slices, so none waits for more than one slice. A
worker thread was measured too (benchmarks/logs.py) and made the API slower: the thread
and the loop take turns at the interpreter, and at every socket call the loop's thread
waited for the worker's switch interval (5 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path

from sqlifier.runtime.space import SPACE

__all__ = ["DEFAULT_LEVEL", "LogFile", "OutputTail", "classify"]

DEFAULT_LEVEL = "info"

# Canonical names, for aliases and common spellings.
_CANONICAL = {
    "debug": "debug",
    "trace": "debug",
    "info": "info",
    "information": "info",
    "notice": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "emerg": "critical",
    "alert": "critical",
    "panic": "critical",
}
_LOGFMT = re.compile(r"(?:^|\s)(?:level|lvl|severity)=\"?([A-Za-z]+)", re.IGNORECASE)
# A level word near the start: after an optional timestamp and punctuation.
_LEADING = re.compile(r"^(?:[\d\-:.,TZ+/ ]{8,40}\s+)?([\[<(]?)([A-Za-z]{3,11})([\]>):]?)(?:\s|:|$)")


def classify(line: str) -> str:
    """The level of one log line: debug, info, warn, error or critical."""
    stripped = line.strip()
    if stripped.startswith("{"):
        level = _json_level(stripped)
        if level:
            return level
    # logfmt needs an '=': most lines have none, and the search would try every position.
    match = _LOGFMT.search(stripped) if "=" in stripped else None
    if match:
        level = _CANONICAL.get(match.group(1).lower())
        if level:
            return level
    match = _LEADING.match(stripped)
    if match:
        opening, word, closing = match.groups()
        # `ERROR x`, `[error] x`, `error: x` are levels; `error rate is fine` is prose.
        if word.isupper() or opening or closing:
            level = _CANONICAL.get(word.lower())
            if level:
                return level
    return DEFAULT_LEVEL


def _json_level(text: str) -> str | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for key in ("level", "severity", "lvl", "levelname"):
        value = record.get(key)
        if isinstance(value, str):
            return _CANONICAL.get(value.lower())
        if isinstance(value, int) and key in ("level", "severity"):
            return _numeric(value)
    return None


def _numeric(value: int) -> str:
    """pino and bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal."""
    if value >= 60:
        return "critical"
    if value >= 50:
        return "error"
    if value >= 40:
        return "warn"
    if value >= 30:
        return "info"
    return "debug"


@dataclass
class LogFile:
    """One instance's log: JSON lines `{"t", "stream", "level", "line"}`, rotated by size.

    `web-0.log` is current; when it passes `max_bytes` it becomes `web-0.log.1` (and
    `.1` becomes `.2`, up to `keep`). A write that fails (a full disk) never raises: the
    line is dropped and counted in `dropped`, and the next write tries again. `on_lines`
    hears every batch, `(time, [(level, line)])`, written or not: the signals count what
    the instance said, not what the disk kept.
    """

    path: Path
    max_bytes: int = 10 * 1024 * 1024
    keep: int = 3
    dropped: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    on_lines: Callable[[float, list[tuple[str, str]]], None] | None = None
    # Masks secret values in a line before it is classified, stored or counted.
    redact: Callable[[str], str] | None = None
    _size: int | None = None

    def write(self, when: float, stream: str, line: str) -> str:
        """Classify and append one line; return its level."""
        return self.write_many(when, stream, [line])[-1]

    def write_many(self, when: float, stream: str, lines: list[str]) -> list[str]:
        """Classify and append lines in one write; return their levels."""
        levels = []
        chunks = []
        # Each record is written as json.dumps(record, ensure_ascii=False) would write it,
        # byte for byte, at a third of the cost: json.dumps makes an encoder per call.
        # `encode_basestring` is the escaper it uses; the levels need no escaping.
        head = f'{{"t": {round(when, 3)!r}, "stream": {encode_basestring(stream)}, "level": "'
        if self.redact is not None:
            lines = [self.redact(line) for line in lines]
        counts = self.counts
        for line in lines:
            level = classify(line)
            levels.append(level)
            counts[level] = counts.get(level, 0) + 1
            chunks.append(f'{head}{level}", "line": {encode_basestring(line)}}}\n')
        data = "".join(chunks).encode("utf-8")
        try:
            if SPACE.low(self.path.parent):  # the last of the disk is for the state
                raise OSError(errno.ENOSPC, "kept for the state")
            if self._size is None:
                self._size = self.path.stat().st_size if self.path.exists() else 0
            if self._size + len(data) > self.max_bytes and self._size > 0:
                self._rotate()
            with self.path.open("ab") as handle:
                handle.write(data)
            self._size += len(data)
        except OSError:
            self.dropped += len(lines)
            SPACE.drop(len(lines))
            self._size = None
        if self.on_lines is not None:
            self.on_lines(when, list(zip(levels, lines, strict=True)))
        return levels

    def _rotate(self) -> None:
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._size = 0


# Lines masked, classified, written and counted at a time by `poll_in_slices`: a quarter
# of a millisecond of work or so, after which the event loop runs whatever else waits.
SLICE = 50

# The raw output file is emptied once this much of it has been read into the log.
TRUNCATE_AT = 1024 * 1024
# A line longer than this is cut (and marked) rather than held in memory whole.
MAX_LINE = 64 * 1024
# At most this much is read per poll, so one chatty instance cannot stall the agent; a
# backlog beyond BACKLOG is skipped (and counted) rather than read late.
READ_AT_ONCE = 256 * 1024
BACKLOG = 4 * 1024 * 1024


@dataclass
class OutputTail:
    """Reads what an instance appended to its raw output file into its log.

    The instance writes `web-0.out` directly (so its output never depends on the agent);
    each `poll` classifies the complete new lines into the structured log. Once more than
    TRUNCATE_AT bytes have been read the file is emptied (the instance appends, so it
    carries on at the new end); whatever it wrote between the read and the truncation is
    lost and counted in `skipped`. `offset` is saved by the agent so that the next one
    reads on from the same place.
    """

    path: Path
    log: LogFile
    offset: int = 0
    skipped: int = 0  # bytes never read: a backlog too large, or a truncation race
    _partial: bytes = b""
    _cutting: bool = False  # inside a line already cut at MAX_LINE: drop to its end
    _queued: list[str] = field(default_factory=list)  # read, not written yet (in slices)

    def poll(self, when: float) -> int:
        """Move new complete lines into the log; how many there were."""
        lines = self._queued + self._take()
        self._queued = []
        if lines:
            self.log.write_many(when, "out", lines)
        return len(lines)

    async def poll_in_slices(self, when: float) -> int:
        """`poll`, SLICE lines at a time, letting the event loop run between slices. Lines
        not written yet wait in `_queued`: a `poll` or `flush` meanwhile writes them first,
        so the log keeps the order the instance wrote in."""
        lines = self._take()
        self._queued += lines
        while self._queued:
            piece, self._queued = self._queued[:SLICE], self._queued[SLICE:]
            self.log.write_many(when, "out", piece)
            if self._queued:
                await asyncio.sleep(0)
        return len(lines)

    def _take(self) -> list[str]:
        """The new complete lines of the output file (at most READ_AT_ONCE bytes)."""
        try:
            size = os.stat(self.path).st_size
            if size == self.offset:
                return []
            if size < self.offset:  # emptied by someone else: start again
                self.offset = 0
            if size - self.offset > BACKLOG:
                self.skipped += size - READ_AT_ONCE - self.offset
                self.offset = size - READ_AT_ONCE
                self._partial, self._cutting = b"", True
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read(min(size - self.offset, READ_AT_ONCE))
        except OSError:
            return []
        self.offset += len(data)
        lines = self._lines(data)
        if self.offset >= TRUNCATE_AT and not self._partial:
            with contextlib.suppress(OSError):
                size = os.stat(self.path).st_size
                os.truncate(self.path, 0)
                self.skipped += size - self.offset
                self.offset = 0
        return lines

    def flush(self, when: float) -> None:
        """The process ended: its unfinished last line is a line too."""
        self.poll(when)
        if self._partial:
            self.log.write(when, "out", self._partial.decode("utf-8", "replace"))
        self._partial, self._cutting = b"", False

    def _lines(self, data: bytes) -> list[str]:
        pieces = (self._partial + data).split(b"\n")
        self._partial = pieces.pop()
        lines = []
        for piece in pieces:
            if self._cutting:
                self._cutting = False  # the end of a line already cut: drop it
                continue
            lines.append(_text(piece))
        if len(self._partial) > MAX_LINE:
            if not self._cutting:
                lines.append(_text(self._partial))
            self._partial, self._cutting = b"", True
        return lines


def _text(raw: bytes) -> str:
    if len(raw) > MAX_LINE:
        return raw[:MAX_LINE].decode("utf-8", "replace") + " [line cut]"
    return raw.decode("utf-8", "replace").rstrip("\r")

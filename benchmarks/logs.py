"""What an instance's output costs the agent, per line.

    .venv/bin/python benchmarks/logs.py [--lines 20000] [--repeat 5]

The agent reads each instance's output, classifies every line's level, appends it to the
instance's JSON-lines log and counts it as a `log` event for the rules (`log_error`). All
of that runs on the agent's event loop, so its cost per line bounds how long a chatty
instance holds the loop: a poll reads at most 256 KiB.

Prints, for three kinds of lines (plain text with a level word, JSON, logfmt) and their
mix, microseconds per line for: classifying alone, `LogFile.write_many` (classify, encode,
append), and the whole path with the series store. Side by side, two baselines on the same
lines: writing each record with `json.dumps(record, ensure_ascii=False)`, the plain way to
write the same bytes, and appending the raw lines to a file with no work at all.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlifier.engine.series import LOG, SeriesStore
from sqlifier.lang.signals import LOG_LEVELS
from sqlifier.runtime.logs import READ_AT_ONCE, LogFile, classify

KINDS = {
    "plain": "2026-11-27 04:00:{s:02d},123 INFO handled GET /api/items/{i} in 3.2ms",
    "json": '{{"level": "info", "msg": "request {i}", "path": "/api/items", "ms": 3.1}}',
    "logfmt": 'time=2026-11-27T04:00:{s:02d}Z level=warn msg="slow query" id={i} ms=120',
}


def lines_of(kind: str, count: int) -> list[str]:
    kinds = list(KINDS) if kind == "mix" else [kind]
    return [KINDS[kinds[i % len(kinds)]].format(i=i, s=i % 60) for i in range(count)]


def best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    folder = Path(tempfile.mkdtemp(prefix="sqlifier-logs-"))
    big = 1 << 40  # no rotation while measuring
    now = time.time()

    print(f"{args.lines} lines per run, best of {args.repeat}; microseconds per line\n")
    print(f"{'lines':8} {'classify':>9} {'write':>9} {'+ store':>9} {'json.dumps':>11} {'raw':>7}")
    for kind in [*KINDS, "mix"]:
        lines = lines_of(kind, args.lines)
        store = SeriesStore()

        def to_store(t: float, pairs: list[tuple[str, str]], store: SeriesStore = store) -> None:
            store.add_many("web", LOG, t, [(LOG_LEVELS[level], text) for level, text in pairs])

        plain = LogFile(folder / f"{kind}.log", max_bytes=big)
        counted = LogFile(folder / f"{kind}-store.log", max_bytes=big, on_lines=to_store)

        def dumps(lines: list[str] = lines, path: Path = folder / f"{kind}-dumps.log") -> None:
            stamp = round(now, 3)
            chunks = [
                json.dumps(
                    {"t": stamp, "stream": "out", "level": classify(x), "line": x},
                    ensure_ascii=False,
                )
                + "\n"
                for x in lines
            ]
            with path.open("ab") as handle:
                handle.write("".join(chunks).encode("utf-8"))

        def raw(lines: list[str] = lines, path: Path = folder / f"{kind}-raw.log") -> None:
            with path.open("ab") as handle:
                handle.write(("\n".join(lines) + "\n").encode("utf-8"))

        per_line = 1e6 / len(lines)
        figures = [
            best(lambda lines=lines: [classify(x) for x in lines], args.repeat),
            best(lambda lines=lines, log=plain: log.write_many(now, "out", lines), args.repeat),
            best(lambda lines=lines, log=counted: log.write_many(now, "out", lines), args.repeat),
            best(dumps, args.repeat),
            best(raw, args.repeat),
        ]
        us = [f * per_line for f in figures]
        print(f"{kind:8} {us[0]:9.2f} {us[1]:9.2f} {us[2]:9.2f} {us[3]:11.2f} {us[4]:7.2f}")
        if kind == "mix":
            size = len("\n".join(lines)) / len(lines) + 1
            poll = READ_AT_ONCE / size
            print(
                f"\nwrite vs json.dumps: {us[3] / us[1]:.2f}x faster. One full poll "
                f"({READ_AT_ONCE // 1024} KiB, {poll:,.0f} mixed lines) holds the event loop "
                f"for about {poll * us[2] / 1000:.0f} ms."
            )


if __name__ == "__main__":
    main()

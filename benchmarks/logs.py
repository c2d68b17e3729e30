"""What an instance's output costs the agent, per line, and what it does to the API.

    .venv/bin/python benchmarks/logs.py [--lines 20000] [--repeat 5] [--no-api]
        [--api-seconds 8] [--rounds 3] [--baseline REV]

The agent reads each instance's output, classifies every line's level, appends it to the
instance's JSON-lines log and counts it as a `log` event for the rules (`log_error`), on
its event loop, 50 lines at a time; its cost per line bounds how much work a chatty
instance makes: a poll reads at most 256 KiB.

Prints, for three kinds of lines (plain text with a level word, JSON, logfmt) and their
mix, microseconds per line for: classifying alone, `LogFile.write_many` (classify, encode,
append), and the whole path with the series store. Side by side, two baselines on the same
lines: writing each record with `json.dumps(record, ensure_ascii=False)`, the plain way to
write the same bytes, and appending the raw lines to a file with no work at all.

Then the agent's API under a chatty instance: a real stack (`sqlifier up`) whose one
instance prints 50,000 mixed lines a second, while a client asks `GET /v1/status` (what
`sqlifier ps` asks) every 5 ms, each latency counted from when the request was due, in
rounds interleaved so that a busy moment of the machine falls on all of them alike; it
prints the p50 and p99 of the answers' latency with
the agent of this checkout, and side by side with the agent of `--baseline` (by default the
commit before output was classified in slices), extracted with `git
archive` and put first on PYTHONPATH, and with the instance silent. The ratio is the
baseline's latency over this checkout's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from sqlifier.agent.client import AgentClient
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
    parser.add_argument("--no-api", dest="api", action="store_false")
    parser.add_argument("--api-seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=BASELINE)
    args = parser.parse_args()
    per_line(args)
    if args.api:
        api_under_output(args.baseline, args.api_seconds, args.rounds)


def per_line(args: argparse.Namespace) -> None:
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
                f"({READ_AT_ONCE // 1024} KiB, {poll:,.0f} mixed lines) takes "
                f"about {poll * us[2] / 1000:.0f} ms of work."
            )


# --- the API under a chatty instance ---------------------------------------------------

BASELINE = "5f7cdc3"  # the last commit that classified a whole poll's output at once
LINES_PER_SECOND = 50_000
INTERVAL = 0.005  # a request every 5 ms
QS = ("p50", "p90", "p95", "p99")

CHATTY = f"""\
import sys, time
kinds = [
    "2026-11-27 04:00:00,123 INFO handled GET /api/items/{{i}} in 3.2ms",
    '{{{{"level": "info", "msg": "request {{i}}", "path": "/api/items", "ms": 3.1}}}}',
    'time=2026-11-27T04:00:00Z level=warn msg="slow query" id={{i}} ms=120',
]
quiet = len(sys.argv) > 1
batch = {LINES_PER_SECOND} // 100  # every 10 ms
start, i = time.monotonic(), 0
while True:
    if not quiet:
        sys.stdout.write("".join(kinds[(i + k) % 3].format(i=i + k) + "\\n" for k in range(batch)))
        sys.stdout.flush()
        i += batch
    start += 0.01
    time.sleep(max(0.0, start - time.monotonic()))
"""


def api_under_output(baseline: str, seconds: float, rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="sqlifier-logs-api-"))
    old = root / "baseline"
    old.mkdir()
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "archive", baseline, "sqlifier"], cwd=repo, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(old, filter="data")
    print(
        f"\nGET /v1/status while one instance prints {LINES_PER_SECOND:,} lines/s; "
        f"{rounds} interleaved rounds of {seconds:g} s each; milliseconds"
    )
    print(f"{'agent':28} {'p50':>7} {'p90':>7} {'p95':>7} {'p99':>7} {'max':>7} {'answers':>8}")
    runs = [
        ("this checkout, silent", None, True),
        (f"baseline {baseline}", old, False),
        ("this checkout", None, False),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for round_ in range(rounds):
        for name, pythonpath, quiet in runs:
            folder = root / f"{name.replace(' ', '-').replace(',', '')}-{round_}"
            times[name] += latencies(folder, pythonpath, quiet, seconds)
    figures = {}
    for name, _, _ in runs:
        cuts = statistics.quantiles(times[name], n=100)
        figures[name] = (cuts[49], cuts[89], cuts[94], cuts[98])
        top, count = max(times[name]), len(times[name])
        shown = " ".join(f"{x:7.2f}" for x in figures[name])
        print(f"{name:28} {shown} {top:7.2f} {count:8,}")
    before, after = figures[runs[1][0]], figures[runs[2][0]]
    ratios = ", ".join(f"{q} {b / a:.1f}x" for q, b, a in zip(QS, before, after, strict=True))
    print(
        f"\nbaseline / this checkout: {ratios} (higher is better; the target: this "
        "checkout's figures near the silent instance's)"
    )


def latencies(folder: Path, pythonpath: Path | None, quiet: bool, seconds: float) -> list[float]:
    """Milliseconds of each answer over `seconds`, against a fresh stack."""
    folder.mkdir(parents=True)
    (folder / "chatty.py").write_text(CHATTY)
    argument = " quiet" if quiet else ""
    (folder / "sqlifier.toml").write_text(
        '[stack]\nname = "logs"\n\n[metrics]\nlisten = "off"\n\n'
        f'[services.chatty]\nrun = "{sys.executable} chatty.py{argument}"\n'
    )
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    sqlifier = [sys.executable, "-m", "sqlifier"]
    up = subprocess.run(
        [*sqlifier, "up", "--detach"], check=False, cwd=folder, env=env, capture_output=True
    )
    if up.returncode != 0:
        raise SystemExit(f"sqlifier up failed:\n{up.stderr.decode()}")
    try:
        client = AgentClient(folder / ".sqlifier" / "dev", "dev")
        time.sleep(2.0)  # the output flows
        # At a steady rate, each latency counted from when the request was due: a client
        # that waited for each answer would send one request into a stalled loop, and
        # the stall would show in one answer of hundreds, below the p99.
        times = []
        first = time.perf_counter()
        for i in range(int(seconds / INTERVAL)):
            due = first + i * INTERVAL
            time.sleep(max(0.0, due - time.perf_counter()))
            client.request("GET", "/v1/status")
            times.append((time.perf_counter() - due) * 1000)
    finally:
        subprocess.run([*sqlifier, "down"], check=False, cwd=folder, env=env, capture_output=True)
    return times


if __name__ == "__main__":
    main()

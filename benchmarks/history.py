"""Disk size and speed of the signal history, filled with a week of synthetic signals.

    .venv/bin/python benchmarks/history.py [--days 7] [--services 100] [--precision realistic]

Writes D days x S services of 10 s buckets (about 18 keys per service per bucket, with
noise, some keys missing) to a temporary file, flushing every `--flush-every` buckets, and
prints the file size against the 1 GB budget, the append throughput, the cost of one
flush at the agent's cadence (every 60 s, the open hour rewritten each time) and the time
to read 24 h for all services and for one.

`--precision realistic` rounds what samplers round (CPU to 0.1 %, memory to whole bytes,
rps to 0.1 request/s); `--precision full` gives every level full float64 noise, the worst
case for compression.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

from sqlifier.store.history import History

BUDGET = 1e9  # bytes: 7 days x 100 services at 10 s must fit
DAY = 86400
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC, an hour boundary
LEVELS = ("debug", "info", "warning", "error", "critical")


class Service:
    """One service's signals: a daily rhythm, noise, the odd canary and restart."""

    def __init__(self, name: str, rng: random.Random, full: bool) -> None:
        self.rng = rng
        self.full = full
        self.load = rng.uniform(5, 400)  # requests/s at the daily peak
        self.phase = rng.uniform(0, 2 * math.pi)
        self.memory = rng.uniform(80e6, 900e6)
        self.instances = rng.choice((1, 2, 2, 3, 4, 6))
        self.debug = rng.random() < 0.5  # half the services log at debug level
        self.queries = [  # the stack file's Prometheus queries about this service
            f'prometheus:sum(rate(http_requests_total{{service="{name}",code=~"5.."}}[1m]))',
            f'prometheus:max(queue_depth{{queue="{name}-jobs"}})',
        ]
        self.canary_until = 0.0

    def frame(self, t: float) -> dict[str, float]:
        rng = self.rng
        daily = 0.55 + 0.45 * math.sin(2 * math.pi * t / DAY + self.phase)
        rps = max(self.load * daily * rng.gauss(1, 0.08), 0.0)
        cpu = min(max(0.02 + 0.7 * daily * rng.gauss(1, 0.1), 0.0), 1.0)
        self.memory += rng.gauss(0, 2e5)
        values = {
            "cpu": cpu if self.full else round(cpu * 1000) / 1000,
            "memory": self.memory if self.full else float(round(self.memory)),
            "rps": rps if self.full else round(rps * 10) / 10,
            "instances": float(self.instances),
            "ready_instances": float(self.instances - (rng.random() < 0.01)),
            "restart": float(rng.random() < 0.001),
        }
        requests = rps * 10
        if requests >= 1:  # latencies and error rate need requests
            errors = sum(rng.random() < 0.002 for _ in range(min(int(requests), 20)))
            values["error_rate"] = errors / requests
            p50 = rng.lognormvariate(math.log(0.02), 0.2)
            values["latency_p50"] = p50
            values["latency_p90"] = p50 * rng.uniform(2, 3)
            values["latency_p95"] = p50 * rng.uniform(3, 4)
            values["latency_p99"] = p50 * rng.uniform(5, 9)
        if self.canary_until <= t and rng.random() < 1 / 8640:  # about one deploy a day
            self.canary_until = t + 1800
        if t < self.canary_until and requests >= 1:
            values["rps.canary"] = round(rps * 0.1 * 10) / 10
            values["error_rate.canary"] = values["error_rate"] * rng.uniform(0.5, 2)
            values["latency_p99.canary"] = values["latency_p99"] * rng.uniform(0.8, 1.3)
        values[self.queries[0]] = rps * values.get("error_rate", 0.0)
        values[self.queries[1]] = float(max(int(rng.gauss(20, 8)), 0))
        lines = requests * 0.5
        for level, share in zip(LEVELS, (2.0, 1.0, 0.05, 0.01, 0.0005), strict=True):
            if level != "debug" or self.debug:
                values[f"log.{level}"] = float(int(lines * share * rng.uniform(0.7, 1.3)))
        return values


def names(count: int) -> list[str]:
    return [f"svc-{i:03}" for i in range(count)]


def fill(
    history: History, days: float, count: int, full: bool, flush_every: int
) -> tuple[int, int, float]:
    """Append every bucket; return (frames, values, seconds spent in append and flush)."""
    rng = random.Random(7)
    services = {name: Service(name, random.Random(name), full) for name in names(count)}
    buckets = int(days * DAY / History.RESOLUTION)
    values = 0
    spent = 0.0
    for n in range(buckets):
        t = START + n * History.RESOLUTION
        # An absent service now and then (a deploy, a stopped agent): no data at all.
        frame = {name: s.frame(t) for name, s in services.items() if rng.random() > 0.001}
        values += sum(len(v) for v in frame.values())
        begin = time.perf_counter()
        history.append(t, frame)
        if (n + 1) % flush_every == 0:
            history.flush()
        spent += time.perf_counter() - begin
    begin = time.perf_counter()
    history.flush()
    spent += time.perf_counter() - begin
    return buckets, values, spent


def agent_flush(history: History, days: float, count: int, full: bool) -> float:
    """Mean seconds per flush over the next hour, appending and flushing as the agent does."""
    services = {name: Service(name, random.Random(name), full) for name in names(count)}
    spent = []
    for n in range(360):
        t = START + days * DAY + n * History.RESOLUTION
        history.append(t, {name: s.frame(t) for name, s in services.items()})
        if (n + 1) % 6 == 0:
            begin = time.perf_counter()
            history.flush()
            spent.append(time.perf_counter() - begin)
    return sum(spent) / len(spent)


def timed_read(
    path: Path, since: float, until: float, services: list[str] | None
) -> tuple[int, float]:
    """(rows, seconds) reading with a fresh History, as a backtest in another process would."""
    history = History(path)
    begin = time.perf_counter()
    rows = sum(1 for _ in history.read(since, until, services))
    seconds = time.perf_counter() - begin
    history.close()
    return rows, seconds


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--precision", choices=("realistic", "full"), default="realistic")
    parser.add_argument("--flush-every", type=int, default=360, help="buckets (360 = 1 h)")
    args = parser.parse_args()
    full = args.precision == "full"

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.db"
        history = History(path, retention=args.days * DAY + 3600)
        frames, values, spent = fill(history, args.days, args.services, full, args.flush_every)
        history.close()
        stored = size(path)

        history = History(path, retention=args.days * DAY + 3600)
        flush = agent_flush(history, args.days, args.services, full)
        history.close()

        end = START + args.days * DAY
        day = min(DAY, args.days * DAY)
        all_rows, all_seconds = timed_read(path, end - day, end, None)
        one_rows, one_seconds = timed_read(path, end - day, end, ["svc-000"])

    per_bucket = stored / (frames * args.services)  # bytes per service per bucket
    week = per_bucket * 60480 * 100
    hours = f"{day / 3600:g} h"
    print(
        f"{args.days:g} days x {args.services} services at 10 s, {args.precision} precision: "
        f"{frames:,} frames, {values:,} values "
        f"({values / frames / args.services:.1f} keys per service per bucket)\n"
    )
    table = [
        ("file size after the fill", f"{stored / 1e6:,.1f} MB"),
        ("  per value", f"{stored / values:.2f} B"),
        ("  7 d x 100 services at this rate", f"{week / 1e6:,.1f} MB"),
        ("  budget", f"{BUDGET / 1e6:,.0f} MB"),
        (f"append, flush every {args.flush_every} buckets", f"{frames / spent:,.0f} frames/s"),
        ("", f"{values / spent:,.0f} values/s"),
        ("one flush at agent cadence (60 s)", f"{flush * 1000:.1f} ms"),
        (f"read {hours}, all services ({all_rows:,} rows)", f"{all_seconds:.2f} s"),
        ("", f"{all_rows / all_seconds:,.0f} rows/s"),
        (f"read {hours}, one service ({one_rows:,} rows)", f"{one_seconds * 1000:.1f} ms"),
    ]
    print(f"{'measure':48} {'figure':>18}")
    for name, figure in table:
        print(f"{name:48} {figure:>18}")
    verdict = "within" if week < BUDGET else "OVER"
    print(f"\n7 days x 100 services: {week / 1e6:,.0f} MB, {verdict} the 1 GB budget")


if __name__ == "__main__":
    main()

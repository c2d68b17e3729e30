"""Cost of the SLO signals: every burn rate and budget of 1,000 services at each tick, and
the SLO history's bytes for a 30-day window per service.

    .venv/bin/python benchmarks/slo.py [--services 1000] [--ticks 30] [--days 30]

Tick: 1,000 services, each with an availability and a latency objective, two tracks, a
day of traffic already counted. Each tick does what the agent does (`SloTracker.step`): a
tenth of the services take the newest data-plane reading and have every figure written
into the series store: 5 burn-rate windows (5m, 30m, 1h, 6h, 3d) and the budget per
objective, and the worst of the two (18 levels a service); so every service's figures
are refreshed every 10 ticks. Printed as CPU ms per tick beside the engine's storm tick
(benchmarks/engine.py, measured in the same run as the baseline) and the engine's 50 ms
budget for 1,000 services; the storm plus the SLO signals must stay within it.

History: `--days` of per-minute counts for a few services (realistic noise: traffic
follows a daily rhythm, errors are rare and bursty) written as the agent writes them (a
row per service, objective and hour; the agent rewrites the open hour's row every 10 s,
which leaves the same rows, so here each hour is flushed once), then the file's bytes
per service and per objective, beside the
signal history's 7-day file for the same services (benchmarks/history.py's layout) as
the baseline; and the time to rebuild a 30-day window when an agent starts.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlifier.engine.series import SeriesStore
from sqlifier.signals.slo import SloTracker
from sqlifier.stack.model import Objective, Service, Slo
from sqlifier.store.history import History
from sqlifier.store.slo import SloStore

TICK_TARGET_MS = 50.0  # the engine's budget per tick for 1,000 services (benchmarks/engine.py)
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DAY = 86400
OBJECTIVES = (Objective("availability", 0.999), Objective("latency", 0.99, 0.3))


def _counters(requests: int, errors: int, slow: int) -> dict[str, Any]:
    latency = [0] * 26
    latency[8] = requests - slow
    latency[16] = slow
    return {
        "requests": requests,
        "status": {"2xx": requests - errors, "5xx": errors},
        "failed": 0,
        "latency": latency,
        "latency_sum": 0.0,
    }


def measure_tick(services: int, ticks: int) -> float:
    """Median CPU ms of one tick's SLO work (a reading observed, every figure written)."""
    rng = random.Random(5)
    names = [f"svc-{i}" for i in range(services)]
    specs = {n: Service(n, "run", Path("."), slo=Slo(OBJECTIVES)) for n in names}
    t = START
    tracker = SloTracker(specs, t)
    totals = {n: [0, 0, 0] for n in names}
    for minute in range(24 * 60):  # a day counted, untimed, a reading a minute
        t = START + minute * 60
        tracker.observe(t, _reading(totals, rng, 60))
    store = SeriesStore()
    times = []
    for _ in range(ticks):
        t += 1
        history = [_Reading(t, _reading(totals, rng, 1))]
        start = time.process_time()
        tracker.step(t, history, store)  # what the agent does each tick
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


class _Reading:
    """One reading of the data plane, as `Traffic.history` holds them."""

    def __init__(self, when: float, services: dict[str, Any]) -> None:
        self.when = when
        self.services = services


def _reading(
    totals: dict[str, list[int]], rng: random.Random, seconds: int
) -> dict[str, dict[str, dict[str, Any]]]:
    out = {}
    for name, counts in totals.items():
        requests = rng.randint(20, 200) * seconds
        counts[0] += requests
        counts[1] += int(requests * 0.0005 * rng.random())
        counts[2] += int(requests * 0.005 * rng.random())
        half = [c // 2 for c in counts]
        out[name] = {
            "stable": _counters(half[0], half[1], half[2]),
            "canary": _counters(counts[0] - half[0], counts[1] - half[1], counts[2] - half[2]),
        }
    return out


def measure_history(services: int, days: int, folder: Path) -> dict[str, float]:
    """Bytes per service of `days` of per-minute counts, and the rebuild time of one."""
    rng = random.Random(9)
    store = SloStore(folder / "slo.db", retention=(days + 1) * DAY)
    bursts = dict.fromkeys(range(services), 0)
    for minute in range(days * 24 * 60):
        t = START + minute * 60
        daily = 0.55 + 0.45 * math.sin(2 * math.pi * t / DAY)
        for n in range(services):
            total = float(int(60 * 100 * daily * rng.gauss(1, 0.1)))
            if rng.random() < 0.0005:
                bursts[n] = rng.randint(2, 30)  # an incident: a few minutes of errors
            bad = float(int(total * rng.uniform(0.02, 0.2))) if bursts[n] else 0.0
            bursts[n] = max(0, bursts[n] - 1)
            if rng.random() < 0.02:
                bad += 1.0  # the odd error
            store.add(f"svc-{n}", "availability", t, total - min(bad, total), total)
            slow = float(int(total * rng.uniform(0.0, 0.01)))
            store.add(f"svc-{n}", "latency", t, total - slow, total)
        if minute % 60 == 59:  # the agent rewrites the open hour every 10 s: same rows
            store.flush(t)
    store.flush(t)
    size = store.size()
    store.close()
    specs = {
        f"svc-{n}": Service(f"svc-{n}", "run", Path("."), slo=Slo(OBJECTIVES, days * DAY))
        for n in range(services)
    }
    store = SloStore(folder / "slo.db", retention=(days + 1) * DAY)
    start = time.process_time()
    SloTracker(specs, START + days * DAY - 1, store)  # what an agent does as it starts
    rebuild = time.process_time() - start
    store.close()
    per = rebuild / (services * len(OBJECTIVES))
    return {"bytes_per_service": size / services, "rebuild_ms": per * 1000}


def baseline_history(services: int, folder: Path) -> float:
    """The signal history's bytes per service for 7 days of its 18 keys (a quick fill)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from history import Service as Signals  # benchmarks/history.py

    rng = random.Random(3)
    signals = [Signals(f"svc-{n}", rng, False) for n in range(services)]
    history = History(folder / "history.db")
    for bucket in range(7 * DAY // 10):
        t = START + bucket * 10
        history.append(t, {f"svc-{n}": s.frame(t) for n, s in enumerate(signals)})
        if bucket % 360 == 359:
            history.flush()
    history.close()
    return (folder / "history.db").stat().st_size / services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--history-services", type=int, default=20)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from engine import measure_storm  # benchmarks/engine.py: the baseline, in the same run

    storm = measure_storm(args.services, args.ticks)["ms_per_tick"]
    slo = measure_tick(args.services, args.ticks)
    target = TICK_TARGET_MS * args.services / 1000
    print(
        f"tick, {args.services:,} services x 2 objectives "
        "(18 SLO levels a service, each refreshed every 10 ticks), CPU ms:"
    )
    print(f"  engine storm tick (baseline)  {storm:8.1f}")
    print(f"  SLO signals                   {slo:8.1f}   {slo / storm:5.2f}x the storm tick")
    print(
        f"  storm + SLO signals           {storm + slo:8.1f}   target {target:.0f} ms: "
        f"{(storm + slo) / target:.2f}x (below 1.00 meets it)"
    )
    with tempfile.TemporaryDirectory() as folder:
        history = measure_history(args.history_services, args.days, Path(folder))
    with tempfile.TemporaryDirectory() as folder:
        signals = baseline_history(args.history_services, Path(folder))
    per = history["bytes_per_service"]
    print(f"\nSLO history, {args.days} days of per-minute counts, 2 objectives a service:")
    print(f"  bytes per service             {per:12,.0f}   ({per / 2:,.0f} per objective)")
    print(f"  signal history, 7 days        {signals:12,.0f}   (baseline: {per / signals:.2f}x)")
    print(
        f"  rebuilding a {args.days}-day window   {history['rebuild_ms']:9.1f} CPU ms per "
        "objective, as an agent starts"
    )
    print("\n(figures from a shared, busy machine: compare the ratios, not the absolutes)")


if __name__ == "__main__":
    main()

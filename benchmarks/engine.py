"""Rule engine throughput: samples ingested and rule x service evaluations per second.

    .venv/bin/python benchmarks/engine.py [--services 10,100,1000,10000] [--ticks 20]

Pinned to one core. For each stack size it feeds one second of samples (cpu, memory, rps,
error rate, p99, instance counts and a few log lines per service) into the series store,
then runs one engine tick over 10 rules that apply to every service (level tests with FOR,
count windows, AND/OR, an IF, SCALE expressions), as the live agent does every second.
Prints samples/s, evaluations/s and milliseconds per tick, with the ratio to the targets
(200,000 samples/s; 200,000 evaluations/s, i.e. 1,000 services x 10 rules in <= 50 ms).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import dataclass

from sqlifier.engine.compiled import ServiceView
from sqlifier.engine.machine import Engine
from sqlifier.engine.replay import compile_rules
from sqlifier.engine.series import LOG, SeriesStore
from sqlifier.lang import Source, check, parse_source
from sqlifier.lang.signals import LOG_LEVELS

TARGET = 200_000

RULES = """
RULE hot ON high_cpu(>80%) FOR 3m DO SCALE service.name TO instances + 2 LIMIT 20;
RULE cold ON low_cpu(<10%) FOR 10m DO SCALE service.name TO instances - 1 LIMIT 2;
RULE auto ON cpu() > 70% FOR 1m DO SCALE service.name TO max(ceil(instances * cpu() / 60%), 2)
  LIMIT 30 COOLDOWN 2m;
RULE errors ON error_rate() > 5% FOR 2m DO NOTIFY '{service.name} errors at {value}';
RULE slow ON latency(p99) > 300ms FOR 2m DO NOTIFY 'slow {service.name}' DRY RUN;
RULE crit ON log_error(level='critical') > 10 FOR 1m DO ROLLBACK service.name TO previous_stable;
RULE busy ON rps() > 500 AND cpu() > 50% FOR 30s DO SCALE service.name TO instances + 1 LIMIT 40;
RULE mem ON memory() > 2GiB FOR 5m DO RESTART service.name;
RULE web ON rps() < 1 OR ready_instances() < 1 FOR 5m IF service.labels.tier = 'web'
  DO NOTIFY 'web tier idle';
RULE noisy ON log(level='error') > 100 FOR 5m DO NOTIFY 'noisy {service.name}';
"""


@dataclass
class World:
    store: SeriesStore
    views: dict[str, ServiceView]

    def service(self, name: str) -> ServiceView | None:
        return self.views.get(name)


def rules() -> list:  # type: ignore[type-arg]
    source = Source(RULES, "bench.sql")
    parsed, diagnostics = parse_source(source)
    errors = [d for d in [*diagnostics, *check([(source, parsed)], None)] if d.is_error]
    assert not errors, errors
    return compile_rules([parsed])


def feed(store: SeriesStore, names: list[str], t: float, rng: random.Random) -> int:
    count = 0
    for name in names:
        store.put(name, "cpu", t, rng.uniform(0.2, 0.7))
        store.put(name, "memory", t, rng.uniform(1e8, 5e8))
        store.put(name, "rps", t, rng.uniform(10, 300))
        store.put(name, "error_rate", t, rng.uniform(0, 0.02))
        store.put(name, "latency_p99", t, rng.uniform(0.01, 0.2))
        store.put(name, "instances", t, 2.0)
        store.put(name, "ready_instances", t, 2.0)
        store.add(name, LOG, t, LOG_LEVELS["info"], "GET / 200")
        store.add(name, LOG, t, LOG_LEVELS["error"], "GET /x 500")
        count += 9
    return count


def measure(services: int, ticks: int) -> dict[str, float]:
    rng = random.Random(7)
    names = [f"svc-{i}" for i in range(services)]
    store = SeriesStore()
    views = {
        n: ServiceView(n, 2, 2, "dev", {"tier": "web" if i % 2 else "api"})
        for i, n in enumerate(names)
    }
    world = World(store, views)
    engine = Engine(rules())
    t = 1_800_000_000.0
    feed(store, names, t - 1, rng)
    engine.tick(t - 1, world, names)  # first tick creates every state
    ingest = tick = 0.0
    samples = evaluations = 0
    for _ in range(ticks):
        t += 1
        start = time.perf_counter()
        samples += feed(store, names, t, rng)
        ingest += time.perf_counter() - start
        start = time.perf_counter()
        engine.tick(t, world, names)
        tick += time.perf_counter() - start
        evaluations += len(engine.rules) * services
    return {
        "samples_per_s": samples / ingest,
        "evals_per_s": evaluations / tick,
        "ms_per_tick": tick / ticks * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", default="10,100,1000,10000")
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    head = ("services", "samples/s", "x target", "evals/s", "x target", "ms/tick")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (9, 12, 9, 12, 9, 9), strict=True)))
    for text in args.services.split(","):
        services = int(text)
        # at least 20,000 service-ticks, so small stacks are timed over enough work
        ticks = max(3, args.ticks if services <= 1000 else args.ticks // 4, 20_000 // services)
        result = measure(services, ticks)
        samples, evals = result["samples_per_s"], result["evals_per_s"]
        print(
            f"{services:>9,} {samples:>12,.0f} {samples / TARGET:>8.2f}x "
            f"{evals:>12,.0f} {evals / TARGET:>8.2f}x {result['ms_per_tick']:>9.1f}"
        )
    print(
        "\n10 rules per service; targets: 200,000 samples/s, "
        "200,000 evaluations/s (50 ms/tick for 1,000 services)"
    )


if __name__ == "__main__":
    main()

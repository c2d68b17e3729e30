"""The dashboard's costs: server time per page, first paint, idle cost, 20 open dashboards.

    .venv/bin/python benchmarks/dashboard.py [--services 100] [--rules 10]

A synthetic stack of N services and R rules without IF (N x R rule x service pairs, 1,000
by default), its engine ticked with CPU samples, an hour of history for every service (the
keys the agent records: CPU, memory, instances, rps, error rate and four latencies, each
traffic key also for the stable track), is read by the real `Dashboard` in this process.
The baseline, run side by side, is the same dashboard over 1 service and 1 rule. Printed
beside each figure: its target. On a shared machine the figures are noisy; the ratios
against the baseline are the comparable part.

Server time is measured three ways: the first render (the hour read whole), a render in
the same 10-second bucket (what was read is reused), and the first render after each new
bucket the agent writes (what a page costs every 10 s while the stack runs).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlifier.dashboard import Dashboard, start
from sqlifier.dashboard.web import Request
from sqlifier.engine.compiled import ServiceView
from sqlifier.engine.machine import Engine
from sqlifier.engine.replay import compile_rules
from sqlifier.engine.series import SeriesStore
from sqlifier.lang import Source, parse_source
from sqlifier.stack.model import Stack
from sqlifier.stack.stackfile import load_stack
from sqlifier.store.audit import AuditLog
from sqlifier.store.decisions import DecisionLog
from sqlifier.store.history import History

CHROMIUM = "/usr/bin/chromium"
PAINTED = ("/", "/services/svc-000")  # the pages whose first paint is measured


class World:
    def __init__(self, store: SeriesStore, views: dict[str, ServiceView]) -> None:
        self.store = store
        self.views = views

    def service(self, name: str) -> ServiceView | None:
        return self.views.get(name)


class Synthetic:
    """A Source over a synthetic stack: what the agent hands the dashboard."""

    def __init__(self, root: Path, services: int, rules: int) -> None:
        names = [f"svc-{i:03d}" for i in range(services)]
        toml = '[stack]\nname = "bench"\n' + "".join(
            f'[services.{n}]\nrun = "python3 app.py"\ninstances = 2\n' for n in names
        )
        (root / "sqlifier.toml").write_text(toml)
        self._stack, _ = load_stack(root / "sqlifier.toml")
        text = "".join(
            f"RULE r{i} ON high_cpu(>{50 + i}%) FOR 3m DO SCALE service.name TO instances + 1 "
            "LIMIT 10;\n"
            for i in range(rules)
        )
        parsed, _ = parse_source(Source(text, "bench.sql"))
        self._store = SeriesStore()
        self._engine = Engine(compile_rules([parsed]))
        rng = random.Random(7)
        now = time.time()
        world = World(self._store, {n: ServiceView(n, 2, 2, "dev", {}) for n in names})
        for second in range(5):
            for n in names:
                self._store.put(n, "cpu", now - 5 + second, rng.uniform(0.3, 0.9))
            self._engine.tick(now - 5 + second, world, names)
        self.names = names
        self.rng = rng
        self._path = root / "history.db"
        self._local = threading.local()
        self.writer = History(self._path)
        self._local.history = self.writer
        for slot in range(360):
            self.write(now - 3600 + slot * 10)
        self.writer.flush()
        self._decisions = DecisionLog(root / "decisions.db")
        self._audit = AuditLog(root / "audit.db")
        for i in range(100):
            self._audit.record("bench", "scale", f"bench/dev/{names[i % services]} to 3", "ok")
        self._status = {
            "phase": "running",
            "error": None,
            "pid": 1,
            "instances": [
                {
                    "service": n,
                    "instance": f"{n}-{k}",
                    "state": "ready",
                    "release": "v1",
                    "track": "stable",
                    "port": 10000 + k,
                    "pid": 100,
                    "restarts": 0,
                }
                for n in names
                for k in range(2)
            ],
            "router": None,
        }

    def write(self, t: float) -> None:
        """One 10 s bucket of every service's signals, as the agent appends it."""
        rng = self.rng
        frame = {}
        for n in self.names:
            values = {
                "cpu": rng.uniform(0.3, 0.9),
                "memory": rng.uniform(1e8, 2e8),
                "instances": 2.0,
                "ready_instances": 2.0,
            }
            for suffix in ("", ".stable"):
                values[f"rps{suffix}"] = rng.uniform(5, 50)
                values[f"error_rate{suffix}"] = rng.uniform(0, 0.02)
                for q in (50, 90, 95, 99):
                    values[f"latency_p{q}{suffix}"] = rng.uniform(0.01, 0.3) * q / 99
            frame[n] = values
        self.writer.append(t - t % 10, frame)

    @property
    def stack(self) -> Stack:
        return self._stack

    @property
    def env(self) -> str:
        return "dev"

    @property
    def audit(self) -> AuditLog:
        return self._audit

    def status(self) -> dict[str, Any]:
        return self._status

    def engine(self) -> Engine:
        return self._engine

    def store(self) -> SeriesStore:
        return self._store

    def history(self) -> History:
        """The writer's own History in the thread that writes; a reader of the same file
        in any other (a History belongs to the thread that opened it)."""
        history: History | None = getattr(self._local, "history", None)
        if history is None:
            history = self._local.history = History(self._path)
        return history

    def decisions(self) -> DecisionLog:
        return self._decisions

    def deploys(self) -> list[dict[str, Any]]:
        return []

    def redact(self, text: str) -> str:
        return text

    async def call(self, method: str, path: str, body: dict[str, Any], who: str) -> Any:
        return 200, {"ok": True}


def _render_ms(board: Dashboard, request: Request) -> float:
    start = time.process_time()
    asyncio.run(board.handle(request))
    return (time.process_time() - start) * 1000


def server_ms(board: Dashboard, path: str, runs: int) -> tuple[float, float]:
    """The first (cold) and the median of `runs` later renders, in ms of CPU."""
    request = Request("GET", path, {}, {}, b"")
    times = [_render_ms(board, request) for _ in range(runs + 1)]
    return times[0], statistics.median(times[1:])


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def bucket_ms(source: Synthetic, path: str, buckets: int) -> tuple[float, float]:
    """The median and the highest CPU time of the first render after each new 10 s bucket
    (the agent appends every 10 s and flushes every minute), after a first render."""
    clock = Clock()
    board = Dashboard(source, clock)
    request = Request("GET", path, {}, {}, b"")
    _render_ms(board, request)
    times = []
    for n in range(buckets):
        clock.now += 10
        source.write(clock.now)
        if n % 6 == 5:
            source.writer.flush()
        times.append(_render_ms(board, request))
    return statistics.median(times), max(times)


class Served:
    """A dashboard served on a free port from a thread of its own."""

    def __init__(self, board: Dashboard) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.board = board
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(start(self.board, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.set_exception_handler(lambda loop, context: None)  # the cancelled streams
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def stop(self) -> None:
        """Stop the loop once its streams have ended (their browsers are gone)."""
        deadline = time.monotonic() + 5
        while self.board.watchers and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the watcher's last look, which finds no one left
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def cpu_share(self, seconds: float) -> float:
        """The share of one core the dashboard's thread (its event loop: the agent's
        side) used over `seconds`; the browsers' side runs in other threads."""
        assert self.thread.ident is not None
        clock = time.pthread_getcpuclockid(self.thread.ident)
        start_cpu, start = time.clock_gettime(clock), time.monotonic()
        time.sleep(seconds)
        return (time.clock_gettime(clock) - start_cpu) / (time.monotonic() - start)


FCP = """new Promise((done) => new PerformanceObserver((list) => {
    const paint = list.getEntriesByName("first-contentful-paint")[0];
    if (paint) done(paint.startTime);
}).observe({type: "paint", buffered: true}))"""


def first_paint(urls: list[str], runs: int = 9) -> list[float] | None:
    """The median first contentful paint of each page, loaded in turn `runs` times."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        paints: list[list[float]] = [[] for _ in urls]
        for url in urls:
            page.goto(url)  # untimed: the browser's caches and the history's first read
        for _ in range(runs):
            for url, found in zip(urls, paints, strict=True):
                page.goto(url)
                found.append(float(page.evaluate(FCP)))
        browser.close()
    return [statistics.median(found) for found in paints]


def _sleeping(seconds: float) -> float:
    start_cpu, start = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - start_cpu) / (time.monotonic() - start)


class Browsers:
    """`count` dashboards: each follows /events and, on every change, fetches its page's
    fragment again, as the script does."""

    def __init__(self, port: int, count: int) -> None:
        import socket

        self.port = port
        self.fetches = 0
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            self.sockets.append(sock)
            threading.Thread(target=self._follow, args=(sock,), daemon=True).start()

    def _follow(self, sock: Any) -> None:
        import urllib.request

        try:
            while data := sock.recv(65536):
                for _ in range(data.count(b"event: change")):
                    url = f"http://127.0.0.1:{self.port}/?fragment=1"
                    urllib.request.urlopen(url, timeout=10).read()
                    self.fetches += 1
        except OSError:
            pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--buckets", type=int, default=12)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sqlifier-dash-bench-"))
    try:
        (folder / "big").mkdir()
        (folder / "small").mkdir()
        big_source = Synthetic(folder / "big", args.services, args.rules)
        small_source = Synthetic(folder / "small", 1, 1)
        big, small = Dashboard(big_source), Dashboard(small_source)
        pairs = args.services * args.rules
        print(f"{args.services} services, {pairs} rule x service pairs; baseline 1 and 1")
        print("server time per page, ms of CPU (target < 100 ms):")
        for path in ("/", "/rules", "/services/svc-000", "/audit", "/dora"):
            cold, warm = server_ms(big, path, 10)
            base_cold, base = server_ms(small, path, 10)
            print(
                f"  {path:<20} {warm:7.1f} warm, {cold:7.1f} cold; baseline {base:6.1f} warm,"
                f" {base_cold:6.1f} cold ({warm / base:5.1f}x warm, {cold / base_cold:5.1f}x cold)"
            )
        print("the first render after each new 10 s bucket, ms of CPU (target < 100 ms):")
        for path in ("/", "/services/svc-000", "/deploys"):
            median, worst = bucket_ms(big_source, path, args.buckets)
            base_median, _ = bucket_ms(small_source, path, args.buckets)
            print(
                f"  {path:<20} {median:7.1f} median, {worst:7.1f} highest of {args.buckets};"
                f" baseline {base_median:6.1f} ({median / base_median:5.1f}x)"
            )
        nothing = _sleeping(args.seconds)  # the baseline: this process serving nothing
        served, base_served = Served(big), Served(small)
        urls = [f"http://127.0.0.1:{s.port}{p}" for s in (served, base_served) for p in PAINTED]
        paints = first_paint(urls)
        if paints is None:
            print("first paint: skipped (no /usr/bin/chromium)")
        else:
            print("first contentful paint in headless Chromium, median of 9 (target < 1000 ms):")
            for n, path in enumerate(PAINTED):
                paint, base_paint = paints[n], paints[n + len(PAINTED)]
                print(
                    f"  {path:<20} {paint:7.0f} ms; baseline {base_paint:6.0f} ms"
                    f" ({paint / base_paint:5.1f}x)"
                )
        idle = served.cpu_share(args.seconds)
        browsers = Browsers(served.port, 20)
        time.sleep(0.5)
        watched = served.cpu_share(args.seconds)
        streams = big.watchers
        browsers.close()
        served.stop()
        base_served.stop()
        print(
            f"the dashboard's thread, idle: {idle * 100:.2f}% of a core (target < 1%); "
            f"20 open dashboards (SSE): {watched * 100:.2f}% (target < 5%); "
            f"{streams} streams, {browsers.fetches} page fetches; baseline, this "
            f"process before it served anything: {nothing * 100:.2f}%"
        )
        print("figures from a shared, busy machine: compare the ratios")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

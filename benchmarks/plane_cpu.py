"""The embedded data plane's own Python work per request, without sockets: this tree's
beside another's, in the same run.

    .venv/bin/python benchmarks/plane_cpu.py --before DIR [--requests 50000] [--rounds 6]

A client connection (`Client`) and a kept-alive connection to an instance (`Upstream`,
in its backend's pool) are driven by hand on a uvloop event loop, with stand-in
transports that take the bytes written and do nothing else: each request is a GET head
given to the client's `data_received`, the gathered writes made (what the end of the
loop's turn does), the instance's answer (a 6-byte body) given to the upstream's
`data_received`, and the writes made again. What is measured is the CPU time per
request of that Python work alone (the quickest of 20 batches, the one least disturbed) — what
the kernel's side (the same reads and writes HAProxy makes) leaves out. On a busy machine
it moves much less than requests/s over real sockets (benchmarks/traffic.py), so it is
the figure to compare two versions by: each round runs both trees, one after the other,
each in its own process (DIR holds the other tree's `sqlifier/`, say the main branch's:
`git archive main sqlifier | tar -x -C DIR`).

Reported: microseconds of CPU per request for each tree (the rounds' median) and their
ratio (the median of the rounds' ratios), and the Python-level calls per request of each
(counted by cProfile over 1,000 more: a count, which no other work on the machine moves).
No target: traffic.py's targets are the ones that count; this says how much of a change
is the Python side's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a child process with the tree under test first on sys.path: prints µs/request.
CHILD = r"""
import asyncio, cProfile, io, pstats, sys, time
import uvloop
from sqlifier.router.client import Client
from sqlifier.router.proxy import Proxy
from sqlifier.router.state import DesiredState
from sqlifier.router.upstreams import Upstream

REQUEST = b"GET / HTTP/1.1\r\nHost: shop.localhost\r\nUser-Agent: wrk\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nstable"


class Transport:
    def __init__(self):
        self.written = 0
        self.closing = False
    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default
    def write(self, data):
        self.written += len(data)
    def is_closing(self):
        return self.closing
    def close(self):
        self.closing = True
    def pause_reading(self):
        pass
    def resume_reading(self):
        pass


async def main(count):
    proxy = Proxy()
    backend = {"id": "b", "instance": "web-0", "address": "127.0.0.1:1", "track": "stable"}
    state = {"routes": {"web": [{"host": None, "path": "/"}]},
             "services": {"web": {"backends": [backend]}}}
    proxy.apply(DesiredState.from_json(state))
    live = proxy._backends["b"]
    upstream = Upstream(live, proxy.outbox)
    up = Transport()
    upstream.connection_made(up)
    upstream.idle_since = time.monotonic()
    live.idle.append(upstream)
    client = Client(proxy)
    down = Transport()
    client.connection_made(down)

    flush = proxy.outbox._flush

    async def some(count):
        for number in range(count):
            client.data_received(REQUEST)
            flush()  # what the end of the loop's turn would do
            upstream.data_received(ANSWER)
            flush()
            if number % 500 == 0:
                await asyncio.sleep(0)  # the turns asked for run (and find nothing)

    await some(2000)  # warm-up: every head parsed and kept once
    best = float("inf")
    for _ in range(20):  # the quickest of 20 batches: the least disturbed by other work
        began = time.process_time()
        await some(count // 20)
        best = min(best, time.process_time() - began)
    assert not down.closing and not up.closing, "a connection was closed"
    assert live.counters.requests == count // 20 * 20 + 2000, live.counters.requests
    profile = cProfile.Profile()  # how many Python-level calls: the same on any machine
    profile.enable()
    await some(1000)
    profile.disable()
    calls = pstats.Stats(profile, stream=io.StringIO()).total_calls
    print(best / (count // 20) * 1e6, calls / 1000)


uvloop.run(main(int(sys.argv[1])))
"""


def measure(tree: Path, count: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(count)],
        env=env,
        cwd=tree,  # `-c` puts the working directory first on sys.path: the tree's own
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the tree {tree} failed:\n{result.stderr[-2000:]}")
    cost, calls = result.stdout.split()
    return float(cost), float(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other source tree")
    parser.add_argument("--requests", type=int, default=50_000, help="per tree per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    now: list[float] = []
    before: list[float] = []
    calls: dict[str, float] = {}
    for number in range(args.rounds):
        cost, calls["before"] = measure(args.before, args.requests)
        before.append(cost)
        cost, calls["now"] = measure(ROOT, args.requests)
        now.append(cost)
        print(f"round {number + 1}: before {before[-1]:.2f} us, now {now[-1]:.2f} us", flush=True)
    ratio = statistics.median(n / b for n, b in zip(now, before, strict=True))
    print(
        f"\nPython work per request: now {statistics.median(now):.2f} us, before"
        f" {statistics.median(before):.2f} us (medians); now / before {ratio:.2f}x"
        " (the median of the rounds' ratios; CPU time, so a busy machine moves it less)"
    )
    print(
        f"Python-level calls per request (the stand-in transports' included): now"
        f" {calls['now']:.0f}, before {calls['before']:.0f}; now / before"
        f" {calls['now'] / calls['before']:.2f}x (a count: the same on a quiet machine)"
    )


if __name__ == "__main__":
    main()

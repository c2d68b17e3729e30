"""The samplers with real processes: CPU and memory of whole process trees, a real supervisor
feeding the series store (instances, CPU, log lines, restarts), and the router's numbers
worked out from real cumulative counters."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from sqlifier.engine.series import LOG, RESTART, SeriesStore
from sqlifier.platform.traffic import Traffic, _Reading
from sqlifier.router.metrics import Counters
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.signals.samplers import InstanceSample, ProcessSampler, Samplers, traffic_levels
from sqlifier.stack import load_stack
from tests.runtime.test_supervisor import service, write_stack

PY = sys.executable
BURN = f"{PY} -c 'while True: pass'"
DEADLINE = 20.0  # seconds: generous, for a loaded machine

# --- processes -------------------------------------------------------------------------------


@contextlib.contextmanager
def spawn(command: str) -> Iterator[subprocess.Popen[str]]:
    """A shell command in a session of its own; everything it started is killed after."""
    with subprocess.Popen(
        ["/bin/sh", "-c", command],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def sample_until(
    sampler: ProcessSampler, pid: int, done: Callable[[InstanceSample], bool]
) -> InstanceSample:
    """Sample every quarter second until `done` holds (a rate needs time to pass)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        sample = sampler.sample({"web-0": pid}, time.monotonic())["web-0"]
        if done(sample):
            return sample
        assert time.monotonic() < deadline, f"still {sample} after {DEADLINE:g}s"
        time.sleep(0.25)


def busy(sample: InstanceSample) -> bool:
    return sample.cpu is not None and sample.cpu > 0.5


def test_a_busy_process_uses_about_one_core() -> None:
    sampler = ProcessSampler()
    with spawn(f"exec {BURN}") as process:
        first = sampler.sample({"web-0": process.pid}, time.monotonic())
        assert first["web-0"].cpu is None
        sample = sample_until(sampler, process.pid, busy)
    assert sample.cpu is not None and sample.cpu < 1.5


def test_a_shell_counts_the_child_that_burns_the_cpu() -> None:
    sampler = ProcessSampler()
    with spawn(f"{BURN}; true") as process:
        sample = sample_until(sampler, process.pid, busy)
        # The shell itself is idle: the core is its child's.
        assert psutil.Process(process.pid).children()
        assert psutil.Process(process.pid).cpu_times().user < 0.5
    assert sample.cpu is not None and sample.cpu < 1.5


def test_children_that_end_between_samples_still_count() -> None:
    # Each child lives a fraction of a second: only its parent's reaped-children time
    # remembers it.
    sampler = ProcessSampler()
    short = f"{PY} -c 'sum(range(2_000_000))'"
    with spawn(f"while true; do {short}; done") as process:
        sample = sample_until(sampler, process.pid, busy)
    assert sample.cpu is not None and sample.cpu < 1.5


def test_a_child_that_ended_is_counted_once() -> None:
    # The child burns one CPU second and ends; its shell reaps it and sleeps on. Its time
    # moves from its own entry to the shell's reaped-children time, and counts only once.
    sampler = ProcessSampler()
    burn = f"{PY} -c 'while __import__(\"time\").process_time() < 1.0: pass'"
    with spawn(f"{burn}; exec sleep 1000") as process:
        shell = psutil.Process(process.pid)
        last = time.monotonic()
        sampler.sample({"web-0": process.pid}, last)
        used = 0.0
        deadline = last + DEADLINE
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            cpu = sampler.sample({"web-0": process.pid}, now)["web-0"].cpu
            assert cpu is not None
            used, last = used + cpu * (now - last), now
            with contextlib.suppress(psutil.Error):
                if shell.name() == "sleep":  # the burner was reaped, the shell exec'd
                    break
            assert now < deadline, "the burner did not end"
    assert 0.9 < used < 1.4


def test_memory_counts_the_whole_tree() -> None:
    sampler = ProcessSampler()
    # Writing every byte makes the pages resident; it holds them until killed.
    allocate = f'{PY} -c \'import signal; b = b"x" * (200 << 20); print("ready", flush=True); signal.pause()\''
    with spawn(f"{allocate}; true") as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        sample = sampler.sample({"web-0": process.pid}, time.monotonic())["web-0"]
    assert sample.memory >= 150 << 20


def test_a_child_that_ends_and_one_that_starts_are_handled() -> None:
    sampler = ProcessSampler()
    with spawn("sleep 1000; sleep 1000") as process:
        shell = psutil.Process(process.pid)
        first = sample_until(sampler, process.pid, lambda s: len(shell.children()) == 1)
        (child,) = shell.children()
        child.kill()
        # The shell starts the second sleep: a different process under the same root.
        deadline = time.monotonic() + DEADLINE
        while [c.pid for c in shell.children()] in ([], [child.pid]):
            assert time.monotonic() < deadline, "the shell did not start its second sleep"
            time.sleep(0.05)
        second = sample_until(sampler, process.pid, lambda s: s.cpu is not None)
    assert first.cpu is None
    assert second.cpu is not None and 0.0 <= second.cpu < 0.5


def test_a_process_that_is_gone_is_left_out() -> None:
    sampler = ProcessSampler()
    with spawn("exec sleep 1000") as process:
        assert "web-0" in sampler.sample({"web-0": process.pid}, time.monotonic())
        process.kill()
        process.wait()
    gone = process.pid
    assert sampler.sample({"web-0": gone, "web-1": gone}, time.monotonic()) == {}


# --- a real supervisor ------------------------------------------------------------------------

NOISY_LINES = ("ERROR disk almost full", "CRITICAL payment gateway down", "WARNING slow start")
# Says its three lines (one on stderr), then runs the test app.
NOISY = f"""\
import runpy, sys
print({NOISY_LINES[0]!r}, flush=True)
print({NOISY_LINES[1]!r}, file=sys.stderr, flush=True)
print({NOISY_LINES[2]!r}, flush=True)
runpy.run_path("app.py", run_name="__main__")
"""


def supervise(
    root: Path, services: str, body: Callable[[Supervisor, Samplers, SeriesStore], Awaitable[None]]
) -> None:
    """Run the stack with samplers wired in as the agent wires them."""
    (root / "noisy.py").write_text(NOISY)
    stack, _ = load_stack(write_stack(root, services))

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", root / ".sqlifier" / "dev")
        store = SeriesStore()
        samplers = Samplers(store, supervisor)
        supervisor.on_lines = samplers.on_lines
        try:
            await supervisor.start(ready_timeout=20)
            await body(supervisor, samplers, store)
        finally:
            await supervisor.stop()

    asyncio.run(main())


async def step_until(samplers: Samplers, done: Callable[[float], bool]) -> float:
    """Step every quarter second until `done(t)` holds; the last step's time."""
    deadline = time.monotonic() + DEADLINE
    while True:
        t = time.time()
        samplers.step(t)
        if done(t):
            return t
        assert time.monotonic() < deadline, f"not done after {DEADLINE:g}s"
        await asyncio.sleep(0.25)


def test_instances_cpu_and_memory_of_a_running_service(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor, samplers: Samplers, store: SeriesStore) -> None:
        t = await step_until(samplers, lambda t: store.level("web", "cpu", t) is not None)
        assert store.level("web", "instances", t) == 2
        assert store.level("web", "ready_instances", t) == 2
        cpu = store.level("web", "cpu", t)
        assert cpu is not None and 0.0 <= cpu < 1.0  # an idle HTTP server
        memory = store.level("web", "memory", t)
        assert memory is not None and 5 << 20 < memory < 1 << 30
        each = [i["memory"] for i in samplers.instances.values()]
        assert memory == sum(each) / 2  # not the sum: a mean, like cpu
        assert sorted(
            (i["instance"], i["state"], i["track"]) for i in samplers.instances.values()
        ) == [("web-0", "ready", "stable"), ("web-1", "ready", "stable")]

    supervise(tmp_path, service("web", "instances = 2"), body)


def test_a_draining_instance_is_not_counted(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor, samplers: Samplers, store: SeriesStore) -> None:
        supervisor.instances["web"][1].draining = True  # what the router's drain sets
        t = time.time()
        samplers.step(t)
        assert store.level("web", "instances", t) == 1
        assert store.level("web", "ready_instances", t) == 1

    supervise(tmp_path, service("web", "instances = 2"), body)


def test_a_service_scaled_to_zero_has_no_cpu_sample(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor, samplers: Samplers, store: SeriesStore) -> None:
        before = await step_until(samplers, lambda t: store.level("web", "cpu", t) is not None)
        await supervisor.scale("web", 0)
        t = before + 1
        samplers.step(t)
        assert store.level("web", "instances", t) == 0
        assert store.level("web", "ready_instances", t) == 0
        assert store.last_sample("web", "cpu") == before
        assert store.last_sample("web", "memory") == before
        assert samplers.instances == {}

    supervise(tmp_path, service("web"), body)


def test_log_lines_reach_the_store_with_their_rank(tmp_path: Path) -> None:
    noisy = (
        f'\n[services.web]\nrun = "{PY} noisy.py"\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )

    async def body(supervisor: Supervisor, samplers: Samplers, store: SeriesStore) -> None:
        def lines(rank: int) -> list[str]:
            return [
                text
                for text in (*NOISY_LINES, "INFO listening web-0")
                if store.count("web", LOG, 0.0, math.inf, rank=rank, match=re.compile(text))
            ]

        deadline = time.monotonic() + DEADLINE
        while not lines(20):  # the service's last line
            assert time.monotonic() < deadline, "no info line reached the store"
            await asyncio.sleep(0.05)
        assert lines(30) == ["WARNING slow start"]
        assert lines(40) == ["ERROR disk almost full"]
        assert lines(50) == ["CRITICAL payment gateway down"]
        assert store.count("web", LOG, 0.0, math.inf) == 4
        assert samplers.log_totals == {"web": {"error": 1, "critical": 1, "warn": 1, "info": 1}}

    supervise(tmp_path, noisy, body)


def test_a_killed_instance_adds_one_restart_event(tmp_path: Path) -> None:
    async def body(supervisor: Supervisor, samplers: Samplers, store: SeriesStore) -> None:
        samplers.step(time.time())  # what it counted before: none of it is an event
        (instance,) = supervisor.instances["web"]
        assert instance.launched is not None
        os.kill(instance.launched.pid, signal.SIGKILL)
        await step_until(samplers, lambda t: instance.life.restarts == 1)
        await step_until(samplers, lambda t: instance.life.state.value == "ready")
        assert store.count("web", RESTART, 0.0, math.inf) == 1

    supervise(tmp_path, service("web"), body)


# --- the router's numbers ----------------------------------------------------------------------


def counters(requests: list[tuple[int, float, int]]) -> dict[str, object]:
    """Cumulative counters as the data plane reports them: (status, seconds, how many)."""
    c = Counters()
    for status, seconds, times in requests:
        for _ in range(times):
            c.record(status, seconds)
    return c.to_json()


def reading(
    when: float,
    stable: list[tuple[int, float, int]],
    canary: list[tuple[int, float, int]] | None = None,
) -> _Reading:
    tracks = {"stable": counters(stable)}
    if canary is not None:
        tracks["canary"] = counters(canary)
    return _Reading(when, {}, {"web": tracks})


def test_rps_error_rate_and_latency_per_track_and_combined() -> None:
    history = [
        reading(100.0, [], []),
        reading(110.0, [(200, 0.0045, 95), (500, 0.0045, 5)], [(200, 0.040, 9), (503, 0.040, 1)]),
    ]
    levels = traffic_levels(history)["web"]
    assert levels == pytest.approx(
        {
            "rps": 11.0,
            "error_rate": 6 / 110,
            "latency_p50": 0.0041,  # 3 ms + 2 ms * 55/100: inside the 3-5 ms bucket
            "latency_p90": 0.00498,
            "latency_p95": 0.039,  # 30 ms + 20 ms * 4.5/10: into the canary's 30-50 ms
            "latency_p99": 0.0478,
            "rps.stable": 10.0,
            "error_rate.stable": 0.05,
            "latency_p50.stable": 0.004,
            "latency_p90.stable": 0.0048,
            "latency_p95.stable": 0.0049,
            "latency_p99.stable": 0.00498,
            "rps.canary": 1.0,
            "error_rate.canary": 0.1,
            "latency_p50.canary": 0.040,
            "latency_p90.canary": 0.048,
            "latency_p95.canary": 0.049,
            "latency_p99.canary": 0.0498,
        }
    )


def test_rates_are_taken_over_the_last_ten_seconds() -> None:
    # A burst of 1000 requests at the start, then ten a second for twenty seconds.
    history = [reading(0.0, [])] + [
        reading(float(s), [(200, 0.001, 1000 + 10 * (s - 1))]) for s in range(1, 21)
    ]
    assert traffic_levels(history)["web"]["rps"] == pytest.approx(10.0)


def test_no_requests_give_a_rate_of_zero_and_no_error_rate_or_latency() -> None:
    same = [(200, 0.001, 7)]
    levels = traffic_levels([reading(0.0, same), reading(10.0, same)])
    assert levels == {"web": {"rps": 0.0, "rps.stable": 0.0}}


def test_one_reading_gives_nothing() -> None:
    assert traffic_levels([reading(0.0, [(200, 0.001, 7)])]) == {}


def test_samplers_write_the_router_numbers_once_per_reading(tmp_path: Path) -> None:
    services = '[router]\nkind = "embedded"\n' + service("web", 'routes = ["/"]')
    stack, _ = load_stack(write_stack(tmp_path, services))
    state = tmp_path / ".sqlifier" / "dev"
    supervisor = Supervisor(stack, "dev", state)
    traffic = Traffic(stack, "dev", state, supervisor)
    store = SeriesStore()
    samplers = Samplers(store, supervisor, traffic)

    traffic.history.append(reading(0.0, []))
    samplers.step(1000.0)
    assert store.last_sample("web", "rps") is None  # one reading is no rate yet
    assert store.level("web", "instances", 1000.0) == 0
    traffic.history.append(reading(10.0, [(200, 0.002, 50)]))
    samplers.step(1001.0)
    assert store.level("web", "rps", 1001.0) == pytest.approx(5.0)
    assert store.level("web", "error_rate.stable", 1001.0) == 0.0
    assert store.level("web", "latency_p50", 1001.0) == pytest.approx(0.0015)
    samplers.step(1002.0)  # no new reading: a router that stopped answering goes stale
    assert store.last_sample("web", "rps") == 1001.0

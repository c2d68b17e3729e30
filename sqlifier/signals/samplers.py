"""Samplers: what the agent measures every second, written into the series store.

- **Processes.** Each instance's CPU and resident memory, over its whole process tree: a
  service started through a shell, or one that forks workers, counts every process under
  it. On Linux a tree is read from its own processes' `/proc` children files, not by
  looking at every process on the machine. CPU is a fraction of one core, averaged over
  the readings of the last `[engine] cpu_window` (2 s by default, `CPU_WINDOW`; whole
  engine intervals, at least one): a rule's `FOR` asks whether the load was sustained,
  and one idle second of a jittery process should not restart its FOR. A longer window
  steadies a noisy reading, and delays by as much the moment a rule sees a step in the
  load (docs/stack-file.md, "The CPU window").
- **The supervisor.** Running and ready instances per service, and a `restart` event for
  each restart an instance's lifecycle counts.
- **The router.** Requests per second, error rate and latency quantiles per service over
  the last ten seconds of the data plane's readings, for all tracks together (`rps`) and
  for each (`rps.canary`); and the data plane's counters themselves, kept monotonic
  across its restarts (`totals.py`), for `/metrics`.
- **Logs.** Every classified line an instance writes becomes a `log` event carrying its
  level's rank (`Samplers.on_lines`, given to the supervisor as its `on_lines`).

A service with no running instance gets no CPU or memory sample, so those go stale and read
as "no data" rather than as zero; a service without traffic has no error rate or latency.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psutil

from sqlifier.engine.series import LOG, RESTART, SeriesStore
from sqlifier.lang.signals import LOG_LEVELS
from sqlifier.router.metrics import Counters, summarize
from sqlifier.runtime.lifecycle import Lifecycle, State
from sqlifier.runtime.space import free_bytes
from sqlifier.runtime.supervisor import Instance, Supervisor
from sqlifier.signals.totals import RouterTotals

__all__ = [
    "CPU_WINDOW",
    "WINDOW",
    "InstanceSample",
    "ProcessSampler",
    "Reading",
    "RouterHistory",
    "Samplers",
    "traffic_levels",
]

WINDOW = 10.0  # seconds of router readings behind rps, error_rate and latency
CPU_WINDOW = 2.0  # seconds: an instance's CPU is the mean of its readings over this window
# Two CPU samples closer than this would measure the kernel's clock ticks (10 ms), not use.
MIN_INTERVAL = 0.1
QUANTILES = (50, 90, 95, 99)

_Key = tuple[int, float]  # (pid, create time): one process, never a recycled pid


class Children(Protocol):
    """A process's children by its pid: a map made in one look, or read when asked."""

    def get(self, pid: int, default: list[psutil.Process], /) -> list[psutil.Process]: ...


@dataclass(frozen=True, slots=True)
class InstanceSample:
    cpu: float | None  # cores used since the previous sample (1.0 = one); None at first
    memory: int  # resident bytes of the whole tree


@dataclass
class _Tree:
    """One instance's processes as last sampled, with the CPU seconds of each."""

    t: float
    processes: dict[_Key, psutil.Process]
    cpu_seconds: dict[_Key, float]
    cpu: float | None = None


class ProcessSampler:
    """CPU and memory of process trees, from one sample to the next."""

    def __init__(self) -> None:
        self._trees: dict[str, _Tree] = {}

    def sample(self, roots: Mapping[str, int], t: float) -> dict[str, InstanceSample]:
        """Each tree by the name it is given under, from its root's pid; `t` is a steady
        clock in seconds. A root that is gone, or not ours to read, is left out."""
        samples: dict[str, InstanceSample] = {}
        # On Linux each tree's own processes name their children (`_child_pids`);
        # elsewhere one look at every process's parent serves all trees: psutil's
        # `children()` would take that look again for each instance.
        children: Children = _proc_children if PROC_CHILDREN else _ppid_map() if roots else {}
        for name, pid in roots.items():
            sample = self._sample_tree(name, pid, children, t)
            if sample is not None:
                samples[name] = sample
        for name in self._trees.keys() - samples.keys():
            del self._trees[name]
        return samples

    def _sample_tree(
        self, name: str, pid: int, children: Children, t: float
    ) -> InstanceSample | None:
        before = self._trees.get(name)
        processes = _members(pid, children, before.processes if before is not None else {})
        cpu_seconds: dict[_Key, float] = {}
        memory = 0
        for key, process in list(processes.items()):
            try:
                with process.oneshot():
                    cpu_seconds[key] = _cpu_seconds(process.cpu_times())
                    memory += process.memory_info().rss
            except psutil.Error:  # ended meanwhile: as if it had not been listed
                del processes[key]
        if not any(key[0] == pid for key in processes):
            return None  # the root is gone: so is the instance
        if before is not None and t - before.t < MIN_INTERVAL:
            return InstanceSample(before.cpu, memory)  # too soon: keep the longer interval
        tree = _Tree(t, processes, cpu_seconds)
        if before is not None:
            tree.cpu = _used(before, cpu_seconds) / (t - before.t)
        self._trees[name] = tree
        return InstanceSample(tree.cpu, memory)


def _ppid_map() -> dict[int, list[psutil.Process]]:
    """Every process under its parent's pid (psutil caches the objects between calls)."""
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid"]):
        ppid = process.info["ppid"]
        if ppid is not None:  # None: not ours to read
            children.setdefault(ppid, []).append(process)
    return children


def _child_pids(pid: int) -> list[int]:
    """A process's children, as each of its threads lists those it started
    (`/proc/<pid>/task/<tid>/children`, Linux): a few small reads of this process, where
    psutil would read the parent of every process on the machine."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return found


class _ProcChildren:
    """`Children` from /proc: a process's children as psutil objects, made when asked."""

    def get(self, pid: int, default: list[psutil.Process]) -> list[psutil.Process]:
        found = []
        for child in _child_pids(pid):
            try:
                found.append(psutil.Process(child))
            except psutil.Error:  # ended meanwhile
                continue
        return found or default


_proc_children = _ProcChildren()
_this = os.getpid()
PROC_CHILDREN = os.path.exists(f"/proc/{_this}/task/{_this}/children")


def _members(
    pid: int, children: Children, known: Mapping[_Key, psutil.Process]
) -> dict[_Key, psutil.Process]:
    """The root and everything under it by (pid, create time), the objects of the
    previous sample reused; empty when the root is gone."""
    try:
        found = [psutil.Process(pid)]
    except psutil.Error:
        return {}
    members: dict[_Key, psutil.Process] = {}
    for process in found:  # grows as it goes: breadth first
        try:
            key = (process.pid, process.create_time())
        except psutil.Error:
            continue
        if key not in members:
            members[key] = known.get(key, process)
            found.extend(children.get(process.pid, []))
    return members


def _cpu_seconds(times: Any) -> float:
    """A process's CPU time with that of the children it has reaped: a worker that ended
    between two samples still counts, in its parent."""
    own = float(times.user + times.system)
    # Linux reports reaped children's times; elsewhere they are not known.
    return own + float(
        getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    )


def _used(before: _Tree, now: Mapping[_Key, float]) -> float:
    """CPU seconds the tree used since `before`: its total now minus its total then.

    A process that ended is taken out of the earlier total, its time having moved into its
    parent's reaped-children time. One that left the tree alive (an orphan adopted by init)
    takes its time with it, so it counts on neither side.
    """
    used = sum(seconds - before.cpu_seconds.get(key, 0.0) for key, seconds in now.items())
    for key, seconds in before.cpu_seconds.items():
        if key not in now and not _alive(before.processes[key]):
            used -= seconds
    return max(0.0, used)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- the router ---------------------------------------------------------------------------


class Reading(Protocol):
    """One reading of the data plane's cumulative counters (`Traffic.history` holds them)."""

    @property
    def when(self) -> float: ...

    @property
    def services(self) -> Mapping[str, Mapping[str, Any]]: ...  # service -> track -> counters


class RouterHistory(Protocol):
    """What the samplers read of `sqlifier.platform.traffic.Traffic`."""

    @property
    def history(self) -> Sequence[Reading]: ...


def traffic_levels(
    history: Sequence[Reading], window: float = WINDOW
) -> dict[str, dict[str, float]]:
    """Service -> key -> value over the last `window` seconds of readings: `rps`,
    `error_rate`, `latency_p50` ... `latency_p99` (seconds), each for all tracks together
    and with a `.stable` / `.canary` suffix for one. Nothing without two readings."""
    if len(history) < 2:
        return {}
    newest = history[-1]
    # Readings come about once a second: the half second takes in the one at the edge.
    oldest = next((r for r in history if newest.when - r.when <= window + 0.5), history[0])
    seconds = newest.when - oldest.when
    if seconds <= 0:
        return {}
    levels: dict[str, dict[str, float]] = {}
    for service, tracks in newest.services.items():
        earlier = oldest.services.get(service, {})
        deltas = {
            track: Counters.from_json(now).minus(Counters.from_json(earlier.get(track, {})))
            for track, now in tracks.items()
        }
        values = _router_values(deltas.values(), seconds, "")
        for track, delta in deltas.items():
            values.update(_router_values([delta], seconds, f".{track}"))
        levels[service] = values
    return levels


def _router_values(deltas: Iterable[Counters], seconds: float, suffix: str) -> dict[str, float]:
    """The keys one summary gives; error rate and latency only when there were requests."""
    summary = summarize(deltas, seconds)
    values: dict[str, float] = {}
    rps, error_rate = summary["rps"], summary["error_rate"]
    if rps is not None:
        values[f"rps{suffix}"] = rps
    if error_rate is not None:
        values[f"error_rate{suffix}"] = error_rate
    for q in QUANTILES:
        ms = summary[f"p{q}"]
        if ms is not None:
            values[f"latency_p{q}{suffix}"] = ms / 1000
    return values


# --- all of it, every second ---------------------------------------------------------------


class Samplers:
    """Feeds the series store from the supervisor, the processes and the router.

    `step(t)` once a second; `on_lines` as the supervisor's `on_lines`. `t` is the store's
    clock (the engine's); `clock` is a steady clock that only times CPU intervals.
    """

    def __init__(
        self,
        store: SeriesStore,
        supervisor: Supervisor,
        traffic: RouterHistory | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_window: float = CPU_WINDOW,
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.traffic = traffic
        self.clock = clock
        self.processes = ProcessSampler()
        # Instance id -> service, instance, track, state, draining, cpu, memory (/metrics);
        # every instance, cpu and memory None while it has no process.
        self.instances: dict[str, dict[str, object]] = {}
        # Service -> level -> log lines since the agent started (a counter for /metrics).
        self.log_totals: dict[str, dict[str, int]] = {}
        # The router's requests and latencies per service and track (counters for /metrics).
        self.router_totals = RouterTotals()
        self._restarts: dict[str, tuple[Lifecycle, int]] = {}
        self._cpu_history: dict[str, deque[float]] = {}
        # `step` runs once an engine interval: the window as a number of readings.
        self.cpu_readings = max(1, round(cpu_window / interval))
        self._reading: Reading | None = None  # the newest router reading already written

    def step(self, t: float) -> None:
        """Sample everything once and write it at time `t`."""
        instances = self.supervisor.all_instances()
        self._sample_instances(instances, t)
        self._count_restarts(instances, t)
        if self.traffic is not None:
            self._sample_traffic(self.traffic.history, t)

    def on_lines(self, service: str, t: float, lines: list[tuple[str, str]]) -> None:
        """Classified log lines, `(level, text)`, as `log` events with their level's rank."""
        totals = self.log_totals.setdefault(service, {})
        ranks, info = LOG_LEVELS, LOG_LEVELS["info"]
        for level, _ in lines:
            totals[level] = totals.get(level, 0) + 1
        self.store.add_many(
            service, LOG, t, [(ranks.get(level, info), text) for level, text in lines]
        )

    def on_denied(self, service: str, t: float, destination: str, count: int) -> None:
        """Connections an isolated instance's egress denied, as `egress_denied` events."""
        for _ in range(count):
            self.store.add(service, "egress_denied", t, 0, destination)

    def _sample_instances(self, instances: list[Instance], t: float) -> None:
        launched = [i for i in instances if i.launched is not None]
        roots = {i.id: i.launched.pid for i in launched if i.launched is not None}
        samples = self._smoothed(self.processes.sample(roots, self.clock()))
        self.instances = {i.id: _describe(i, samples.get(i.id)) for i in instances}
        free = free_bytes(self.supervisor.state_dir)
        for service in self.supervisor.services:
            # A draining instance is on its way out: its replacement or nothing counts.
            running = [i for i in launched if i.service.name == service and not i.draining]
            ready = [i for i in running if i.life.state is State.READY]
            self.store.put(service, "instances", t, len(running))
            self.store.put(service, "ready_instances", t, len(ready))
            if free is not None:  # the same for every service: the stack's state folder
                self.store.put(service, "disk_free", t, free)
            measured = [samples[i.id] for i in running if i.id in samples]
            cpus = [s.cpu for s in measured if s.cpu is not None]
            limits = self.supervisor.services[service].resources
            if cpus:
                self.store.put(service, "cpu", t, sum(cpus) / len(cpus))
                if limits is not None and limits.cpu is not None:
                    self.store.put(service, "cpu_share", t, sum(cpus) / len(cpus) / limits.cpu)
            if measured:
                memory = sum(s.memory for s in measured) / len(measured)
                self.store.put(service, "memory", t, memory)
                if limits is not None and limits.memory is not None:
                    self.store.put(service, "memory_share", t, memory / limits.memory)

    def _smoothed(self, samples: dict[str, InstanceSample]) -> dict[str, InstanceSample]:
        """Each instance's CPU as the mean of its last `cpu_readings` readings."""
        history = self._cpu_history
        for key in [k for k in history if k not in samples]:
            del history[key]
        out = {}
        for key, sample in samples.items():
            if sample.cpu is None:
                out[key] = sample
                continue
            recent = history.setdefault(key, deque(maxlen=self.cpu_readings))
            recent.append(sample.cpu)
            out[key] = InstanceSample(sum(recent) / len(recent), sample.memory)
        return out

    def _count_restarts(self, instances: list[Instance], t: float) -> None:
        seen: dict[str, tuple[Lifecycle, int]] = {}
        for instance in instances:
            life = instance.life
            before = self._restarts.get(instance.id)
            # A new lifecycle (a replacement under the same id) starts its own count.
            if before is not None and before[0] is life:
                for _ in range(life.restarts - before[1]):
                    self.store.add(instance.service.name, RESTART, t)
            seen[instance.id] = (life, life.restarts)
        self._restarts = seen

    def _sample_traffic(self, history: Sequence[Reading], t: float) -> None:
        # Only a new reading is written: a router that stopped answering goes stale.
        if not history or history[-1] is self._reading:
            return
        self._reading = history[-1]
        self.router_totals.observe(self._reading.services)
        for service, values in traffic_levels(history).items():
            for key, value in values.items():
                self.store.put(service, key, t, value)


def _describe(instance: Instance, sample: InstanceSample | None) -> dict[str, object]:
    return {
        "service": instance.service.name,
        "instance": instance.name,
        "track": instance.track,
        "state": instance.life.state.value,
        "draining": instance.draining,
        "cpu": sample.cpu if sample is not None else None,
        "memory": sample.memory if sample is not None else None,
    }

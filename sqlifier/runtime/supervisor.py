"""The supervisor: runs a stack's services as local processes and keeps them running.

One asyncio loop owns all state. Each instance has a `Lifecycle` (the pure state machine)
and its probe trackers; the loop feeds them events — a process exited, a probe answered,
time passed — and carries out the commands they return: launch a process, stop one.
Services start in dependency order, each waiting for what it depends on to be ready;
stateful instances start one after another (`db-1` once `db-0` is ready) and stop in
reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sqlifier.errors import UserError
from sqlifier.runtime.lifecycle import Command, Lifecycle, State
from sqlifier.runtime.logs import LogFile, OutputTail
from sqlifier.runtime.private import private_dir
from sqlifier.runtime.probes import ProbeTracker, run_probe
from sqlifier.runtime.process import (
    Launched,
    LaunchError,
    argv_for,
    instance_env,
    is_same_process,
    launch,
    signal_group,
    stop_group,
    wait,
)
from sqlifier.stack.envfile import read_env_file
from sqlifier.stack.model import Service, Stack

__all__ = ["Event", "Instance", "StartFailed", "Supervisor", "start_order"]

TICK = 0.1  # seconds between looks at due restarts and probes


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, for the screen and the record."""

    when: float
    instance: str
    state: str
    reason: str


class StartFailed(Exception):
    """A service did not become ready; the message names it and says why."""


class SecretHolder(Protocol):
    """What secrets are delivered to: an instance, or a one-off command of a service (a
    deploy's `migrate`); `id` names its private folder of secret files."""

    @property
    def service(self) -> Service: ...

    @property
    def name(self) -> str: ...

    @property
    def id(self) -> str: ...


@dataclass
class Instance:
    service: Service
    index: int
    port: int
    life: Lifecycle
    log: LogFile
    tail: OutputTail
    data_dir: Path | None
    launched: Launched | None = None
    release: str = "current"
    track: str = "stable"
    draining: bool = False  # taking no new requests: it is about to stop
    weight: int = 100  # its share within its track, relative to the others (1-256)
    held: bool = False  # ready but kept from traffic (a canary until it is warm)
    probe_passed: int = 0  # when its readiness probe last passed (ms since the epoch)
    probes: dict[str, ProbeTracker] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.service.name}-{self.index}"

    @property
    def id(self) -> str:
        """Unique even while a replacement with the same name runs beside it."""
        return f"{self.name}_{self.port}"

    def snapshot(self) -> dict[str, object]:
        return {
            "service": self.service.name,
            "instance": self.name,
            "pid": self.launched.pid if self.launched else None,
            "started": self.launched.started if self.launched else None,
            "log_offset": self.tail.offset,
            "port": self.port,
            "address": f"127.0.0.1:{self.port}",
            "state": self.life.state.value,
            "reason": self.life.reason,
            "restarts": self.life.restarts,
            "release": self.release,
            "track": self.track,
            "draining": self.draining,
            "weight": self.weight,
            "held": self.held,
        }


def start_order(services: Mapping[str, Service]) -> list[str]:
    """Services so that each comes after everything it depends on (the stack file has
    been checked: no cycles, no unknown names)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dependency in services[name].depends_on:
            visit(dependency)
        order.append(name)

    for name in services:
        visit(name)
    return order


class Supervisor:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        release: str = "current",
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        base_env: Mapping[str, str] | None = None,
        before_stop: Callable[[Instance], Awaitable[None]] | None = None,
        on_lines: Callable[[str, float, list[tuple[str, str]]], None] | None = None,
        secrets: Callable[[SecretHolder], Awaitable[Mapping[str, str]]] | None = None,
        after_stop: Callable[[SecretHolder], None] | None = None,
        redactor: Callable[[str], str] | None = None,
    ) -> None:
        self.stack = stack
        self.env = env
        self.services = stack.services_for(env)
        self.state_dir = state_dir
        self.release = release
        self.on_event = on_event
        self.clock = clock
        self.base_env = dict(os.environ if base_env is None else base_env)
        env_file = stack.environment(env).env_file
        if env_file is not None:  # the stack's own `env` still wins over it
            self.base_env.update(read_env_file(stack.root / env_file, env_file))
        # Called before an instance is stopped on purpose: the router drains it.
        self.before_stop = before_stop
        # Every line an instance writes, classified: (service, time, [(level, line)]).
        self.on_lines = on_lines
        # The values of an instance's secrets, resolved just before it starts (env vars).
        self.secrets = secrets
        # Called after an instance stopped for good (its secret files are removed).
        self.after_stop = after_stop
        # Masks secret values in output lines.
        self.redactor = redactor
        self.instances: dict[str, list[Instance]] = {name: [] for name in self.services}
        # The release each service's stable instances run: (version, folder); a service
        # not listed runs from its `source` as release `release` ("current").
        self.releases: dict[str, tuple[str, Path]] = {}
        # A rollout's new-release instances, beside the stable ones until promotion.
        self.canaries: dict[str, list[Instance]] = {name: [] for name in self.services}
        # Instances leaving after a promotion: draining, then stopped.
        self.retiring: list[Instance] = []
        # Replacements starting beside the instance they will replace (restart).
        self.replacements: list[Instance] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._reported: dict[str, tuple[State, str]] = {}
        # Instances a previous agent left running, by name: {pid, started, port, log_offset}.
        self.adoptable: dict[str, dict[str, Any]] = {}
        # One operation at a time per service: two `scale` calls never interleave.
        self._locks: dict[str, asyncio.Lock] = {name: asyncio.Lock() for name in self.services}

    # --- the whole stack --------------------------------------------------------------

    async def start(self, ready_timeout: float = 60.0) -> None:
        """Start every service in dependency order (adopting what `adoptable` names);
        raise StartFailed naming the first service that does not become ready."""
        self._loop_task = asyncio.create_task(self._loop())
        try:
            for name in start_order(self.services):
                await self.scale(name, self.services[name].instances, ready_timeout)
        finally:
            await self._stop_unadopted()

    async def _stop_unadopted(self) -> None:
        """Instances an earlier agent left that this one did not take over: stopped, so
        that nothing runs unrecorded."""
        records, self.adoptable = list(self.adoptable.values()), {}
        for record in records:
            pid, started = int(record["pid"]), float(record["started"])
            if is_same_process(pid, started):
                await stop_group(Launched(pid, started), 10.0)

    async def stop(self) -> None:
        """Stop everything, dependents first; no process is left behind."""
        await self._stop_unadopted()
        for name in reversed(start_order(self.services)):
            await self.stop_canaries(name)
            await self.scale(name, 0)
        # Instances a promotion or a restart left on their way out.
        for instance in list(self.retiring) + list(self.replacements):
            await self._stop_instance(instance)
        self.retiring.clear()
        self.replacements.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    def all_instances(self) -> list[Instance]:
        """Every instance with a process, replacements being started included."""
        stable = [i for name in self.instances for i in self.instances[name]]
        canaries = [i for name in self.canaries for i in self.canaries[name]]
        return stable + canaries + self.retiring + self.replacements

    def snapshot(self) -> list[dict[str, object]]:
        records = [i.snapshot() for name in self.instances for i in self.instances[name]]
        # Replacements, canaries and retiring instances are recorded too, so that an agent
        # that dies meanwhile leaves nothing running unrecorded; the next agent stops them.
        passing = self.replacements + self.retiring
        passing += [i for name in self.canaries for i in self.canaries[name]]
        return records + [{**i.snapshot(), "replacement": True} for i in passing]

    # --- one service ------------------------------------------------------------------

    async def scale(self, name: str, count: int, ready_timeout: float = 60.0) -> None:
        """Run `count` instances of a service: only the added ones start, only the
        removed ones (the highest ordinals) stop."""
        async with self._locks[name]:
            await self._scale(name, count, ready_timeout)

    async def _scale(self, name: str, count: int, ready_timeout: float) -> None:
        service = self.services[name]
        current = self.instances[name]
        while len(current) > count:
            # Stopped before it leaves the record: an agent that dies meanwhile still
            # lists it for the next one.
            await self._stop_instance(current[-1])
            current.pop()
        while len(current) < count:
            name_n = f"{name}-{len(current)}"
            record = self.adoptable.pop(name_n, None)
            expected = self.releases.get(name, (self.release, service.source))[0]
            if record is not None and record.get("release", self.release) != expected:
                self.adoptable[f"{name_n}#other-release"] = record  # stopped, not adopted
                record = None
            port = int(record["port"]) if record else None
            instance = self._new_instance(service, len(current), port=port)
            current.append(instance)
            adopted = record is not None and self.adopt(
                instance, int(record["pid"]), float(record["started"]), int(record["log_offset"])
            )
            if not adopted:
                self._apply(instance, instance.life.start(self.clock()))
            if service.stateful or len(current) == count:
                # Stateful instances start one after another; others all at once.
                await self._wait_ready(name, len(current), ready_timeout)

    async def restart(self, name: str, ready_timeout: float = 60.0) -> None:
        """Replace each instance in turn, waiting for it to be ready before the next."""
        async with self._locks[name]:
            await self._restart(name, ready_timeout)

    async def _restart(
        self, name: str, ready_timeout: float, only_release: str | None = None
    ) -> None:
        service = self.services[name]
        # A replacement can run beside the instance it replaces when nothing pins it to
        # one port or one data folder: then it starts first and the old one stops once
        # the new one is ready, and a single instance restarts without a gap.
        surge = service.port is None and not service.stateful
        for index, instance in enumerate(list(self.instances[name])):
            if only_release is not None and instance.release != only_release:
                continue
            if not surge:
                await self._stop_instance(instance)
                fresh = self._new_instance(service, index, port=instance.port)
                self.instances[name][index] = fresh
                self._apply(fresh, fresh.life.start(self.clock()))
                await self._wait_ready(name, len(self.instances[name]), ready_timeout)
                continue
            fresh = self._new_instance(service, index, shared=instance)
            self.replacements.append(fresh)
            self._apply(fresh, fresh.life.start(self.clock()))
            try:
                await self._wait_all_ready([fresh], ready_timeout)
            except StartFailed:
                await self._stop_instance(fresh)
                self.replacements.remove(fresh)
                raise
            # Both are listed while the old one drains and stops: the router sees the
            # old one draining beside its ready replacement.
            await self._stop_instance(instance)
            self.instances[name][index] = fresh
            self.replacements.remove(fresh)
            self._report(fresh)

    # --- releases: canaries, promotion, replacement ----------------------------------

    async def start_canaries(
        self,
        service: Service,
        count: int,
        release: tuple[str, Path],
        ready_timeout: float = 60.0,
    ) -> list[Instance]:
        """Grow the canary track of `service` to `count` instances of `release` (run with
        the config `service` it was made with), beside the stable ones; the new instances,
        once ready. StartFailed (the new ones stopped again) when one does not become
        ready: a crash loop, a failing probe."""
        name = service.name
        async with self._locks[name]:
            canaries = self.canaries[name]
            fresh = []
            while len(canaries) < count:
                index = len(canaries)
                stable = self.instances[name]
                shared = stable[index] if index < len(stable) else None
                instance = self._new_instance(
                    service, index, shared=shared, release=release, track="canary"
                )
                instance.weight = 1 if service.warmup.slow_start else 100
                instance.held = True  # until the deployer has warmed it up
                canaries.append(instance)
                fresh.append(instance)
                self._apply(instance, instance.life.start(self.clock()))
            try:
                await self._wait_all_ready(fresh, ready_timeout)
            except StartFailed:
                for instance in reversed(fresh):
                    await self._stop_instance(instance)
                    canaries.remove(instance)
                raise
            return fresh

    async def stop_canaries(self, name: str) -> None:
        """Drain and stop every canary of `name`."""
        async with self._locks[name]:
            canaries = self.canaries[name]
            while canaries:
                await self._stop_instance(canaries[-1])
                canaries.pop()

    def locked(self, name: str) -> asyncio.Lock:
        """The lock that serializes operations on one service (scale, restart, promote)."""
        return self._locks[name]

    def promote(self, service: Service, release: tuple[str, Path]) -> list[Instance]:
        """The canaries become the stable instances, `release` the service's stable release
        and `service` its config. The old instances are marked draining and returned, for
        `retire` once the router has the new state (the caller sends it). Call it holding
        `locked(name)`, so no scale runs meanwhile."""
        name = service.name
        old, fresh = self.instances[name], self.canaries[name]
        for instance in fresh:
            instance.track = "stable"
        for instance in old:
            instance.draining = True
        self.instances[name], self.canaries[name] = fresh, []
        self.retiring.extend(old)
        self.releases[name] = release
        self.services[name] = service
        for instance in fresh + old:
            self._report(instance)
        return old

    async def retire(self, instances: list[Instance]) -> None:
        """Stop instances `promote` returned (each drained first)."""
        for instance in instances:
            await self._stop_instance(instance)
            with contextlib.suppress(ValueError):
                self.retiring.remove(instance)

    async def replace_release(
        self, service: Service, release: tuple[str, Path], ready_timeout: float = 60.0
    ) -> None:
        """Run `release` (with its config `service`) on every instance, replacing them one
        at a time (a service without routes or pinned to ports or data has no canary). On
        StartFailed every instance is brought back to the release it ran before, then it
        is raised."""
        name = service.name
        async with self._locks[name]:
            previous, previous_spec = self.releases.get(name), self.services[name]
            self.releases[name], self.services[name] = release, service
            try:
                await self._restart(name, ready_timeout)
            except StartFailed:
                self.services[name] = previous_spec
                if previous is None:
                    self.releases.pop(name, None)
                else:
                    self.releases[name] = previous
                with contextlib.suppress(StartFailed):
                    await self._restart(name, ready_timeout, only_release=release[0])
                raise

    # --- instances --------------------------------------------------------------------

    def _new_instance(
        self,
        service: Service,
        index: int,
        port: int | None = None,
        shared: Instance | None = None,
        release: tuple[str, Path] | None = None,
        track: str = "stable",
    ) -> Instance:
        """A new instance; with `shared`, a replacement running beside that one on a port
        of its own and writing to the same log. It runs `release` (version, folder), by
        default the service's stable release."""
        release = release or self.releases.get(service.name)
        version = self.release
        if release is not None:
            version = release[0]
            service = replace(service, source=release[1])
        if port is None:
            port = service.port + index if service.port is not None else _free_port()
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        data_dir = None
        if service.stateful:
            data_dir = self.state_dir / "data" / f"{service.name}-{index}"
            data_dir.mkdir(parents=True, exist_ok=True)
        life = Lifecycle(
            f"{service.name}-{index}",
            service.restart,
            has_startup_probe=service.probes.startup is not None,
        )
        if shared is not None:
            log, tail = shared.log, shared.tail
        else:
            log = LogFile(
                logs / f"{life.name}.log",
                on_lines=partial(self._lines, service.name),
                redact=self._redact,
            )
            # The raw output is written outside .sqlifier/: it is read, masked and
            # classified into the log, and secret values must never reach a file there.
            out = private_dir(self.state_dir, "out") / f"{life.name}.out"
            # What is already in the output file was read by whoever ran this instance before.
            tail = OutputTail(out, log, offset=out.stat().st_size if out.exists() else 0)
        instance = Instance(
            service, index, port, life, log, tail, data_dir, release=version, track=track
        )
        for kind in ("startup", "readiness", "liveness"):
            probe = getattr(service.probes, kind)
            if probe is not None:
                instance.probes[kind] = ProbeTracker(probe)
        return instance

    def _apply(self, instance: Instance, commands: list[Command]) -> None:
        for command in commands:
            if command is Command.START:
                self._spawn(instance, self._launch(instance))
            else:
                self._spawn(instance, self._terminate(instance))
        self._report(instance)

    async def _launch(self, instance: Instance) -> None:
        service = instance.service
        env = instance_env(
            service,
            instance.index,
            instance.port,
            self.env,
            instance.release,
            instance.data_dir,
            self.base_env,
        )
        try:
            if service.port is not None and not _port_free(instance.port):
                raise LaunchError(f"{instance.name}: port {instance.port} is already in use")
            if self.secrets is not None and service.secrets:
                try:
                    env.update(await self.secrets(instance))
                except UserError as exc:  # the message names the reference, never a value
                    raise LaunchError(str(exc)) from None
            launched = await launch(
                argv_for(service), service.source, env, instance.name, instance.tail.path
            )
        except LaunchError as exc:
            self._apply(instance, instance.life.exited(self.clock(), None, str(exc)))
            self._schedule_restart(instance)
            return
        if not instance.life.wanted:  # stopped while it was being launched
            await stop_group(launched, instance.service.stop_timeout)
            return
        self._attach(instance, launched)
        if "startup" not in instance.probes:
            self._apply(instance, instance.life.startup(self.clock(), True))

    def _attach(self, instance: Instance, launched: Launched) -> None:
        instance.launched = launched
        for tracker in instance.probes.values():
            tracker.next_at = 0.0
            tracker.successes = tracker.failures = 0
            tracker.verdict = None
        self._spawn(instance, self._watch(instance, launched))

    def adopt(self, instance: Instance, pid: int, started: float, offset: int) -> bool:
        """Take over an instance a previous agent started, if it is still that process."""
        if not is_same_process(pid, started):
            return False
        instance.tail.offset = offset
        life = instance.life
        life.wanted = True
        life.started_at = self.clock()
        life.startup_passed = True
        life.state = State.UNREADY
        life.reason = "adopted; waiting for readiness"
        self._attach(instance, Launched(pid, started))
        self._report(instance)
        return True

    async def _watch(self, instance: Instance, launched: Launched) -> None:
        code = await wait(launched)
        # The leader is gone: nothing it started may outlive it.
        signal_group(launched.pid, signal.SIGKILL)
        if instance.launched is launched:
            instance.launched = None
            instance.tail.flush(time.time())
            detail = None if launched.process else "exited (exit code unknown: adopted)"
            self._apply(instance, instance.life.exited(self.clock(), code, detail))
            self._schedule_restart(instance)

    def _schedule_restart(self, instance: Instance) -> None:
        """Start the replacement at its restart time exactly, not at the next tick."""
        due = instance.life.restart_at
        if due is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(
                max(0.0, due - self.clock()),
                lambda: self._apply(instance, instance.life.tick(self.clock())),
            )

    async def _terminate(self, instance: Instance) -> None:
        launched = instance.launched
        if launched is not None:
            await stop_group(launched, instance.service.stop_timeout)

    async def _stop_instance(self, instance: Instance) -> None:
        # No new requests first; those in flight finish (up to the stop timeout).
        if self.before_stop is not None and instance.launched is not None:
            instance.draining = True
            self._report(instance)
            with contextlib.suppress(Exception):
                await self.before_stop(instance)
        # The lifecycle's STOP command is carried out here, once, and awaited.
        instance.life.stop(self.clock())
        self._report(instance)
        launched = instance.launched
        if launched is not None:
            await stop_group(launched, instance.service.stop_timeout)
        instance.tail.flush(time.time())
        for task in list(instance.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=instance.service.stop_timeout + 1)
        if instance.life.state is not State.STOPPED:
            instance.life.state = State.STOPPED
        if self.after_stop is not None:
            self.after_stop(instance)
        self._report(instance)

    async def _wait_ready(self, name: str, count: int, timeout: float) -> None:
        await self._wait_all_ready(self.instances[name][:count], timeout)

    async def _wait_all_ready(self, instances: list[Instance], timeout: float) -> None:
        deadline = self.clock() + timeout
        while True:
            if all(i.life.state is State.READY for i in instances):
                return
            for instance in instances:
                failed = instance.life.state is State.CRASHLOOP or (
                    instance.life.state is State.STOPPED and instance.life.wanted
                )
                if failed:
                    raise StartFailed(f"{instance.name} did not start: {instance.life.reason}")
            if self.clock() >= deadline:
                laggard = next(i for i in instances if i.life.state is not State.READY)
                raise StartFailed(
                    f"{laggard.name} was not ready after {timeout:g}s "
                    f"({laggard.life.state.value}: {laggard.life.reason})"
                )
            self._changed.clear()
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that lands as the wait ends, and Ctrl-C would go unheard.
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=TICK)
            finally:
                waiter.cancel()

    # --- the loop ---------------------------------------------------------------------

    async def _loop(self) -> None:
        ticks = 0
        while True:
            now = self.clock()
            ticks += 1
            for instance in self.all_instances():
                if ticks % 5 == 0 and instance.tail.poll(time.time()):
                    # An instance that writes a lot must not hold up the API and the
                    # deploys: the loop lets them in after each busy read.
                    await asyncio.sleep(0)
                if instance.life.restart_at is not None:
                    self._apply(instance, instance.life.tick(now))
                if instance.launched is not None:
                    self._probe(instance, now)
            await asyncio.sleep(TICK)

    def _probe(self, instance: Instance, now: float) -> None:
        life = instance.life
        if not life.startup_passed:
            kinds = ["startup"]
        else:
            kinds = ["readiness", "liveness"]
            if "readiness" not in instance.probes and life.state is State.UNREADY:
                self._apply(instance, life.readiness(now, True))
        for kind in kinds:
            tracker = instance.probes.get(kind)
            if tracker is not None and tracker.due(now):
                tracker.next_at = now + tracker.probe.period  # one probe in flight at a time
                self._spawn(instance, self._run_probe(instance, kind, tracker))

    async def _run_probe(self, instance: Instance, kind: str, tracker: ProbeTracker) -> None:
        result = await run_probe(tracker.probe, instance.port, str(instance.service.source))
        now = self.clock()
        verdict = tracker.record(now, result)
        if verdict is None:
            return
        life = instance.life
        if kind == "readiness" and result.ok:
            instance.probe_passed = int(time.time() * 1000)
        decide = {"startup": life.startup, "readiness": life.readiness, "liveness": life.liveness}
        self._apply(instance, decide[kind](now, verdict))
        if not verdict:
            life.reason = f"{life.reason}: {result.detail}"
            self._report(instance)

    # --- plumbing ---------------------------------------------------------------------

    def _spawn(self, instance: Instance, work: Any) -> None:
        task = asyncio.ensure_future(work)
        instance.tasks.add(task)
        task.add_done_callback(instance.tasks.discard)

    def _redact(self, line: str) -> str:
        return self.redactor(line) if self.redactor is not None else line

    def _lines(self, service: str, when: float, lines: list[tuple[str, str]]) -> None:
        if self.on_lines is not None:
            self.on_lines(service, when, lines)

    def _report(self, instance: Instance) -> None:
        self._changed.set()
        life = instance.life
        seen = (life.state, life.reason)
        if self.on_event is not None and self._reported.get(instance.name) != seen:
            self._reported[instance.name] = seen
            self.on_event(Event(time.time(), instance.name, life.state.value, life.reason))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

"""The supervisor: runs a stack's services as local processes and keeps them running.

One asyncio loop owns all state. Each instance has a `Lifecycle` (the pure state machine)
and its probe trackers; the loop feeds them events — a process exited, a probe answered,
time passed — and carries out the commands they return: launch a process, stop one.
Services start in dependency order, each waiting for what it depends on to be ready;
stateful instances start one after another (`db-1` once `db-0` is ready) and stop in
reverse.

This module decides which instances there are (services, canaries, replacements, the
ones retiring) and how many of each service are wanted: the desired count and who set it
(`counts`: "stack" for the stack file, "cli:USER" for `sqlifier scale`, "rule:NAME" for
a rule's SCALE), saved with the instances so that an agent that dies leaves it for the
next one (`keep_counts`); `runner.py` runs each (launch, probes, restarts, stop), `instance.py`
holds what is known about one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from sqlifier.runtime.fence import fence_problem
from sqlifier.runtime.instance import Event, Instance, SecretHolder, StartFailed
from sqlifier.runtime.process import Launched, is_same_process, stop_group
from sqlifier.runtime.runner import InstanceRunner
from sqlifier.stack.envfile import read_env_file
from sqlifier.stack.model import Service, Stack

__all__ = ["Event", "Instance", "StartFailed", "Supervisor", "start_order"]


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


class Supervisor(InstanceRunner):
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
        environ = dict(os.environ if base_env is None else base_env)
        env_file = stack.environment(env).env_file
        if env_file is not None:  # the stack's own `env` still wins over it
            environ.update(read_env_file(stack.root / env_file, env_file))
        super().__init__(env, state_dir, release, on_event, clock, environ, before_stop, on_lines)
        self.stack = stack
        self.services = stack.services_for(env)
        # The values of an instance's secrets, resolved just before it starts (env vars).
        self.secrets = secrets
        # Called after an instance stopped for good (its secret files are removed).
        self.after_stop = after_stop
        # Masks secret values in output lines.
        self.redactor = redactor
        self.instances: dict[str, list[Instance]] = {name: [] for name in self.services}
        # A rollout's new-release instances, beside the stable ones until promotion.
        self.canaries: dict[str, list[Instance]] = {name: [] for name in self.services}
        # Instances leaving after a promotion: draining, then stopped.
        self.retiring: list[Instance] = []
        # Replacements starting beside the instance they will replace (restart).
        self.replacements: list[Instance] = []
        self._loop_task: asyncio.Task[None] | None = None
        # Instances a previous agent left running, by name: {pid, started, port, log_offset}
        # ("web-0#canary" for a canary).
        self.adoptable: dict[str, dict[str, Any]] = {}
        # The canaries of a rollout the next agent takes up: adopted as the stack starts.
        self.expected_canaries: dict[str, tuple[Service, tuple[str, Path]]] = {}
        # service -> {"count", "by", "file"}: the desired count, who set it, and the stack
        # file's `instances` when it was set (an edited file starts from the file again).
        self.counts: dict[str, dict[str, Any]] = {}
        self._file_counts = {name: service.instances for name, service in self.services.items()}
        # One operation at a time per service: two `scale` calls never interleave.
        self._locks: dict[str, asyncio.Lock] = {name: asyncio.Lock() for name in self.services}

    # --- the whole stack --------------------------------------------------------------

    async def start(self, ready_timeout: float = 60.0) -> None:
        """Start every service in dependency order (adopting what `adoptable` names);
        raise StartFailed naming the first service that does not become ready."""
        for service in self.services.values():  # never run one unisolated
            problem = fence_problem([service])
            if problem is not None:
                raise StartFailed(
                    f'service {service.name} asks for isolation = "network": {problem}'
                )
        self._loop_task = asyncio.create_task(self._loop())
        try:
            for name in start_order(self.services):
                wanted = self.counts.get(name) or self._from_file(name)
                await self.scale(name, int(wanted["count"]), ready_timeout, str(wanted["by"]))
            for service, release in self.expected_canaries.values():
                self._adopt_canaries(service, release)
        finally:
            await self._stop_unadopted()

    def _adopt_canaries(self, service: Service, release: tuple[str, Path]) -> None:
        """The canaries of `release` an earlier agent left taking traffic, from the first
        index on; one that was not admitted yet (still warming up) is stopped instead."""
        name = service.name
        canaries, stable = self.canaries[name], self.instances[name]
        while True:
            index = len(canaries)
            record = self.adoptable.get(f"{name}-{index}#canary")
            if record is None or record.get("release") != release[0] or record.get("held"):
                return
            del self.adoptable[f"{name}-{index}#canary"]
            shared = stable[index] if index < len(stable) else None
            instance = self._new_instance(
                service, index, port=int(record["port"]), shared=shared, release=release,
                track="canary",
            )  # fmt: skip
            # Sharing the stable instance's log, it reads on from where that one is.
            offset = shared.tail.offset if shared is not None else int(record["log_offset"])
            if not self.adopt(instance, int(record["pid"]), float(record["started"]), offset):
                return
            canaries.append(instance)  # admitted, at full weight: its ramp is over

    def keep_counts(self, left: object) -> None:
        """The desired counts an earlier agent of this stack left when it died: kept,
        unless the stack file's `instances` of a service changed since (then the file
        decides). An `up` after a clean `down` has none to keep: the file decides."""
        if not isinstance(left, dict):
            return
        for name, wanted in left.items():
            if name not in self.services or not isinstance(wanted, dict):
                continue
            try:
                count, by, file = int(wanted["count"]), str(wanted["by"]), int(wanted["file"])
            except (KeyError, TypeError, ValueError):
                continue
            if file == self._file_counts[name] and count >= 0:
                self.counts[name] = {"count": count, "by": by, "file": file}

    def _from_file(self, name: str) -> dict[str, Any]:
        """The count of the config the service runs with (its live release's, or the
        stack file's)."""
        return {"count": self.services[name].instances, "by": "stack"}

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
            async with self._locks[name]:  # the desired count stays as it was
                await self._scale(name, 0, 60.0)
        # Instances a promotion or a restart left on their way out.
        for instance in list(self.retiring) + list(self.replacements):
            await self._stop_instance(instance)
        self.retiring.clear()
        self.replacements.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.cgroups is not None:  # the stack's own folder of cgroups too
            self.cgroups.remove_all()

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

    async def scale(
        self, name: str, count: int, ready_timeout: float = 60.0, by: str = "stack"
    ) -> None:
        """Run `count` instances of a service: only the added ones start, only the
        removed ones (the highest ordinals) stop. `by` set the count; it is recorded
        before any instance changes, so an agent that dies meanwhile leaves it."""
        async with self._locks[name]:
            file = self._file_counts[name]
            self.counts[name] = {"count": count, "by": by, "file": file}
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

    async def _wait_ready(self, name: str, count: int, timeout: float) -> None:
        await self._wait_all_ready(self.instances[name][:count], timeout)

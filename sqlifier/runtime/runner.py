"""Running instances: each instance's `Lifecycle` (the pure state machine) fed by its process
and its probes, on one asyncio loop, and the commands it returns carried out.

The loop looks every `TICK` at due restarts, probes and output; a process that exits is
noticed at once (its leader is awaited), and a restart that is due starts at its time
exactly. An instance is stopped on purpose in one place (`_stop_instance`): drained first,
its lifecycle told, its process group stopped, its tasks awaited. `InstanceRunner` is the
supervisor's lower half: `Supervisor` decides which instances there are (services, canaries,
replacements); this runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from sqlifier.errors import UserError
from sqlifier.runtime.cgroups import Cgroups, InstanceGroup, format_bytes
from sqlifier.runtime.commands import service_argv
from sqlifier.runtime.fence import Fence
from sqlifier.runtime.instance import Event, Instance, SecretHolder, StartFailed
from sqlifier.runtime.lifecycle import Command, Lifecycle, State
from sqlifier.runtime.logs import LogFile, OutputTail
from sqlifier.runtime.private import private_dir
from sqlifier.runtime.probes import ProbeTracker, run_probe
from sqlifier.runtime.process import (
    Launched,
    LaunchError,
    instance_env,
    is_same_process,
    launch,
    signal_group,
    stop_group,
    wait,
)
from sqlifier.stack.model import Isolation, Service

__all__ = ["TICK", "InstanceRunner"]

TICK = 0.1  # seconds between looks at due restarts and probes


class InstanceRunner:
    """Runs instances; the supervisor says which (`all_instances`)."""

    def __init__(
        self,
        env: str,
        state_dir: Path,
        release: str,
        on_event: Callable[[Event], None] | None,
        clock: Callable[[], float],
        base_env: dict[str, str],
        before_stop: Callable[[Instance], Awaitable[None]] | None,
        on_lines: Callable[[str, float, list[tuple[str, str]]], None] | None,
    ) -> None:
        self.env = env
        self.state_dir = state_dir
        self.release = release
        self.on_event = on_event
        self.clock = clock
        self.base_env = base_env
        # Called before an instance is stopped on purpose: the router drains it.
        self.before_stop = before_stop
        # Every line an instance writes, classified: (service, time, [(level, line)]).
        self.on_lines = on_lines
        # The values of an instance's secrets, resolved just before it starts (env vars).
        self.secrets: Callable[[SecretHolder], Awaitable[Mapping[str, str]]] | None = None
        # Called after an instance stopped for good (its secret files are removed).
        self.after_stop: Callable[[SecretHolder], None] | None = None
        # Masks secret values in output lines.
        self.redactor: Callable[[str], str] | None = None
        # The other services' addresses an instance of a service is given (`ORDERS_URL`).
        self.discovery: Callable[[Service], Mapping[str, str]] | None = None
        # Told when the kernel killed an instance for its memory: (instance, what happened).
        self.on_oom: Callable[[Instance, str], None] | None = None
        # Instances' cgroups for their `resources` (cgroups.py), by instance id.
        self.cgroups: Cgroups | None = None
        self.groups: dict[str, InstanceGroup] = {}
        # The release each service's stable instances run: (version, folder); a service
        # not listed runs from its `source` as release `release` ("current").
        self.releases: dict[str, tuple[str, Path]] = {}
        # Namespaces and accounts: what keeps instances in (nothing for a plain service).
        self.fence = Fence(state_dir)
        # Connections an isolated instance opened that its egress denied:
        # (service, time, destination, count), for the `egress_denied()` signal.
        self.on_denied: Callable[[str, float, str, int], None] | None = None
        self._changed = asyncio.Event()
        self._reported: dict[str, tuple[State, str]] = {}

    def all_instances(self) -> list[Instance]:
        """Every instance with a process: the ones the loop looks after."""
        raise NotImplementedError

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
            self.discovery(service) if self.discovery is not None else None,
        )
        try:
            isolated = service.isolation is not Isolation.NONE  # its port is in its namespace
            if service.port is not None and not isolated and not _port_free(instance.port):
                raise LaunchError(f"{instance.name}: port {instance.port} is already in use")
            if self.secrets is not None and service.secrets:
                try:
                    env.update(await self.secrets(instance))
                except UserError as exc:  # the message names the reference, never a value
                    raise LaunchError(str(exc)) from None
            try:
                fencing = await self.fence.prepare(
                    instance.id, service, instance.port, instance.data_dir
                )
            except UserError as exc:  # it never runs unfenced
                raise LaunchError(f"{instance.name}: {exc}") from None
            instance.host = fencing.host
            launched = await launch(
                service_argv(service, env, instance.name),
                service.source,
                env,
                instance.name,
                instance.tail.path,
                fencing.prefix,
                fencing.account,
                self._group(instance),
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
        instance.host = self.fence.address(instance.id) or instance.host
        if instance.service.resources is not None:  # its cgroup is kept, the process in it
            group = self._hierarchy().existing(instance.id)
            if group is not None:
                self.groups[instance.id] = group
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
        oom = self._oom_killed(instance)
        if instance.launched is launched:
            instance.launched = None
            instance.tail.flush(time.time())
            detail = None if launched.process else "exited (exit code unknown: adopted)"
            detail = oom or detail
            self._apply(instance, instance.life.exited(self.clock(), code, detail))
            if oom is not None:
                instance.oom_kills += 1
                instance.log.write(time.time(), "sqlifier", f"ERROR {instance.name} was {oom}")
                if self.on_oom is not None:
                    self.on_oom(instance, f"{instance.name} was {oom}: {instance.life.reason}")
            self._schedule_restart(instance)
        await self._remove_group(instance.id)

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
        with contextlib.suppress(UserError):
            await self.fence.release(instance.id)
        self._report(instance)

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

    # --- limits (cgroups.py) ------------------------------------------------------------

    def _hierarchy(self) -> Cgroups:
        """The stack's cgroups, found the first time an instance has limits; where there
        are none, said once."""
        if self.cgroups is None:
            self.cgroups = Cgroups.detect(self.state_dir)
            if self.cgroups.unavailable is not None:
                self._warn(f"limits are not enforced: {self.cgroups.unavailable}")
        return self.cgroups

    def _group(self, instance: Instance) -> InstanceGroup | None:
        """A fresh cgroup for an instance with `resources`, its limits set."""
        resources = instance.service.resources
        if resources is None or self._hierarchy().version is None:
            return None
        try:
            group = self._hierarchy().create(instance.id, resources)
        except OSError as exc:
            self._warn(f"{instance.name}: limits are not enforced: {exc.strerror or exc}")
            return None
        self.groups[instance.id] = group
        return group

    def _oom_killed(self, instance: Instance) -> str | None:
        """What the kernel did, when it killed a process of the instance for memory."""
        group = self.groups.get(instance.id)
        resources = instance.service.resources
        if group is None or not group.oom_killed():
            return None
        limit = resources.memory if resources is not None else None
        shown = f" of {format_bytes(limit)}" if limit is not None else ""
        return f"OOM-killed: its memory reached its limit{shown} (resources.memory)"

    async def _remove_group(self, instance_id: str) -> None:
        """Remove an instance's cgroup once its last process is gone (a moment after
        SIGKILL; one that left the process group is killed here)."""
        group = self.groups.pop(instance_id, None)
        for attempt in range(50):
            # A restart made a new cgroup at the same place: it is that one's now.
            if group is None or instance_id in self.groups or group.remove():
                return
            if attempt == 10:
                group.kill()
            await asyncio.sleep(0.02)

    def _warn(self, message: str) -> None:
        print(f"sqlifier: {message}", file=sys.stderr, flush=True)
        if self.on_event is not None:
            self.on_event(Event(time.time(), "resources", "warning", message))

    # --- the loop ---------------------------------------------------------------------

    async def _loop(self) -> None:
        ticks = 0
        while True:
            now = self.clock()
            ticks += 1
            for instance in self.all_instances():
                if ticks % 5 == 0:
                    # In slices: an instance that writes a lot must not hold up the API
                    # and the deploys.
                    await instance.tail.poll_in_slices(time.time())
                if instance.life.restart_at is not None:
                    self._apply(instance, instance.life.tick(now))
                if instance.launched is not None:
                    self._probe(instance, now)
            if ticks % 10 == 0:
                await self._denials()
            await asyncio.sleep(TICK)

    async def _denials(self) -> None:
        """Connections isolated instances opened that their egress denied: logged by the
        kernel, counted by nftables, read here once a second."""
        with contextlib.suppress(UserError):
            by_id = {i.id: i for i in self.all_instances()}
            for denial in await self.fence.new_denials():
                instance = by_id.get(denial.instance)
                if instance is None:
                    continue
                if self.on_event is not None:
                    self.on_event(
                        Event(
                            time.time(),
                            instance.name,
                            "egress-denied",
                            f"{denial.count} connection(s) to {denial.destination} denied "
                            "by its egress",
                        )
                    )
                if self.on_denied is not None:
                    self.on_denied(
                        instance.service.name, time.time(), denial.destination, denial.count
                    )

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
        result = await run_probe(
            tracker.probe, instance.port, str(instance.service.source), instance.host
        )
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

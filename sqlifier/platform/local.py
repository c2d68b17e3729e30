"""The local platform: supervised processes on this machine behind the data plane.

Instances are the supervisor's (`runtime/supervisor.py`); traffic is the data plane's,
kept by `traffic.py`. Every call of the seam is carried out by one of the two; none
reaches a process or the router any other way.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlifier.errors import UserError
from sqlifier.platform import (
    CANARY,
    STABLE,
    InstanceInfo,
    LogLine,
    Platform,
    PlatformError,
    ReleaseRef,
)
from sqlifier.platform.traffic import Traffic
from sqlifier.router.metrics import Counters
from sqlifier.runtime.commands import RunResult, run_command
from sqlifier.runtime.lifecycle import State
from sqlifier.runtime.probes import ProbeResult, run_probe
from sqlifier.runtime.supervisor import Instance, StartFailed, Supervisor
from sqlifier.stack.model import Probe, Service

__all__ = ["LocalPlatform"]

READY_TIMEOUT = 120.0  # an instance a deploy starts must be ready within this
LOG_POLL = 0.2  # seconds between reads of the log files while following


@dataclass(frozen=True)
class _Task:
    """A deploy's one-off command of a service, as secrets are delivered to it."""

    service: Service
    name: str
    id: str


class LocalPlatform:
    def __init__(
        self, supervisor: Supervisor, traffic: Traffic, ready_timeout: float = READY_TIMEOUT
    ) -> None:
        self.supervisor = supervisor
        self.traffic = traffic
        self.ready_timeout = ready_timeout

    # --- what runs ------------------------------------------------------------------

    def services(self) -> Mapping[str, Service]:
        return self.supervisor.services

    def stable_release(self, service: str) -> str:
        release = self.supervisor.releases.get(service)
        return release[0] if release is not None else self.supervisor.release

    def instances(self, service: str, track: str | None = None) -> list[InstanceInfo]:
        found = [
            _info(instance)
            for instance in self.supervisor.all_instances()
            if instance.service.name == service
        ]
        return [info for info in found if track is None or info.track == track]

    def set_stable(self, spec: Service, release: ReleaseRef) -> None:
        self.supervisor.releases[spec.name] = _folder(release)
        self.supervisor.services[spec.name] = spec

    def expect_canaries(self, spec: Service, release: ReleaseRef, percent: float) -> None:
        self.supervisor.expected_canaries[spec.name] = (spec, _folder(release))
        self.traffic.keep_canary(spec.name, percent)

    # --- operating a service -----------------------------------------------------------

    async def scale(self, service: str, count: int, by: str = "stack") -> None:
        try:
            await self.supervisor.scale(service, count, by=by)
        except StartFailed as exc:
            raise PlatformError(str(exc)) from None

    async def restart(self, service: str) -> None:
        try:
            await self.supervisor.restart(service)
        except StartFailed as exc:
            raise PlatformError(str(exc)) from None

    # --- a release beside the stable one ---------------------------------------------

    async def start_canaries(self, spec: Service, release: ReleaseRef, count: int) -> list[str]:
        try:
            fresh = await self.supervisor.start_canaries(
                spec, count, _folder(release), self.ready_timeout
            )
        except StartFailed as exc:
            raise PlatformError(str(exc)) from None
        return [instance.name for instance in fresh]

    async def probe(self, service: str, instance: str, probe: Probe) -> ProbeResult:
        found = self._find(service, instance)
        return await run_probe(probe, found.port, str(found.service.source), found.host)

    async def admit(self, service: str, instances: list[str]) -> None:
        for name in instances:
            self._find(service, name).held = False
        await self.traffic.sync()

    def set_instance_weight(self, service: str, instances: list[str], weight: int) -> None:
        for name in instances:
            self._find(service, name).weight = weight
        self.traffic.changed()

    async def set_canary_share(self, service: str, percent: float) -> None:
        await self.traffic.set_canary(service, percent)

    async def track_counters(self, service: str) -> dict[str, Counters]:
        return await self.traffic.track_counters(service)

    async def stop_canaries(self, service: str) -> None:
        await self.supervisor.stop_canaries(service)

    async def promote(self, spec: Service, release: ReleaseRef) -> list[str]:
        async with self.supervisor.locked(spec.name), self.traffic.batch():
            self.traffic.canary[spec.name] = 0
            old = self.supervisor.promote(spec, _folder(release))
        return [instance.name for instance in old]

    async def retire(self, service: str, instances: list[str]) -> None:
        names = set(instances)
        leaving = [
            instance
            for instance in self.supervisor.retiring
            if instance.service.name == service and instance.name in names
        ]
        await self.supervisor.retire(leaving)

    async def replace(self, spec: Service, release: ReleaseRef) -> None:
        try:
            await self.supervisor.replace_release(spec, _folder(release), self.ready_timeout)
        except StartFailed as exc:
            raise PlatformError(str(exc)) from None

    async def run_task(
        self, spec: Service, release: ReleaseRef, what: str, command: str, timeout: float
    ) -> RunResult:
        """In the release's folder with the service's environment and secrets (delivered
        as to an instance, their files removed after); secret values masked."""
        supervisor = self.supervisor
        data = supervisor.state_dir / "data" / spec.name
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **supervisor.base_env,
            **spec.env,
            "SERVICE": spec.name,
            "RELEASE": release.version,
            "ENV": supervisor.env,
            "DATA_DIR": str(data.absolute()),
        }
        task = _Task(spec, f"{spec.name}/{what}", f"{spec.name}-{what}-{secrets.token_hex(4)}")
        deliver, forget = supervisor.secrets, supervisor.after_stop
        text = f"/bin/sh -c {shlex.quote(command)}" if spec.shell else command
        cwd = release.path if release.path is not None else spec.source
        try:
            if deliver is not None and spec.secrets:
                try:
                    env.update(await deliver(task))
                except UserError as exc:  # names the reference, never a value
                    return RunResult((text,), None, "", False, str(exc), 0.0)
            result = await run_command(text, env, cwd, timeout)
        finally:
            if forget is not None:
                forget(task)
        mask = supervisor.redactor or (lambda line: line)
        return RunResult(
            result.argv,
            result.exit_code,
            mask(result.output),
            result.timed_out,
            mask(result.error) if result.error else None,
            result.seconds,
        )

    # --- watching -------------------------------------------------------------------

    async def logs(self, service: str, since: float = 0.0) -> AsyncIterator[LogLine]:
        folder = self.supervisor.state_dir / "logs"
        offsets: dict[Path, int] = {}
        while True:
            for path in sorted(folder.glob(f"{service}-*.log")):
                instance = path.name.removesuffix(".log")
                if not instance.removeprefix(f"{service}-").isdigit():
                    continue  # web-api-0.log is not web's
                for line in _read_new(path, offsets, since):
                    yield LogLine(line[0], instance, line[1], line[2])
            await asyncio.sleep(LOG_POLL)

    # --- plumbing -------------------------------------------------------------------

    def _find(self, service: str, name: str) -> Instance:
        """The live instance named `name` of `service`: a canary first (it shares its
        name with the stable instance of the same index), then a stable one."""
        supervisor = self.supervisor
        for instance in [*supervisor.canaries.get(service, []), *supervisor.instances[service]]:
            if instance.name == name:
                return instance
        raise PlatformError(f"{service} has no instance {name}")


def _info(instance: Instance) -> InstanceInfo:
    life = instance.life
    return InstanceInfo(
        name=instance.name,
        service=instance.service.name,
        track=CANARY if instance.track == CANARY else STABLE,
        release=instance.release,
        state=life.state.value,
        reason=life.reason,
        ready=life.state is State.READY,
        held=instance.held,
        draining=instance.draining,
        restarts=life.restarts,
        running=instance.launched is not None,
    )


def _folder(release: ReleaseRef) -> tuple[str, Path]:
    if release.path is None:
        raise PlatformError(f"release {release.version} has no folder to run locally")
    return release.version, release.path


def _read_new(path: Path, offsets: dict[Path, int], since: float) -> list[tuple[float, str, str]]:
    """The complete JSON-lines records appended to `path` since the last read."""
    offset = offsets.get(path, 0)
    try:
        with path.open("rb") as handle:
            if handle.seek(0, 2) < offset:
                offset = 0  # rotated
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    offsets[path] = offset + len(complete)
    found = []
    for raw in complete.splitlines():
        try:
            record = json.loads(raw)
            when, level, text = float(record["t"]), str(record["level"]), str(record["line"])
        except (ValueError, KeyError, TypeError):
            continue
        if when >= since:
            found.append((when, level, text))
    return found


def _conforms(platform: LocalPlatform) -> Platform:
    """mypy checks here that LocalPlatform is a Platform."""
    return platform

"""Carrying out a rollout's commands: the platform for instances and traffic, the record,
the audit log, the releases and notifications for the rest.

A run's machine (`delivery.rollout`) is fed observations from two sides: the run's own
task (`drive`), which carries the commands out one after the other and feeds back their
answers, and the agent's requests (approve, pause, resume, abort), which feed it at once.
Commands go to one queue, carried out in order; lines and other record commands at the
head of the queue are carried out at once when no platform command is under way, so a
request's reply shows what it did. Between commands the task waits for the machine's
deadline, computed on the one injected clock, or for a request to wake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlifier.agent.deploy_record import DeployRun
from sqlifier.agent.webhooks import chat_text
from sqlifier.delivery import events
from sqlifier.delivery.releases import Release, Releases, ReleaseStatus
from sqlifier.delivery.rollout import Observation, Phase
from sqlifier.delivery.rollout.messages import (
    Admit,
    Audit,
    Begin,
    CanariesStarted,
    CanariesStopped,
    Command,
    CountersRead,
    CountStable,
    CrashLooping,
    Event,
    Interrupted,
    MarkRelease,
    Notify,
    Promote,
    Promoted,
    ReadCounters,
    Replace,
    Replaced,
    Retire,
    Retired,
    RoundDone,
    RunTask,
    Say,
    SetShare,
    SetWeight,
    ShareSet,
    StableCount,
    StartCanaries,
    StopCanaries,
    TaskDone,
    Tick,
    WarmRound,
    WentLive,
)
from sqlifier.platform import CANARY, STABLE, Platform, PlatformError, ReleaseRef
from sqlifier.runtime.lifecycle import State
from sqlifier.stack.model import Service, Stack
from sqlifier.store.audit import AuditLog

__all__ = ["COMMAND_TIMEOUT", "Executor"]

COMMAND_TIMEOUT = 600.0  # migrate and schema_version
MAX_LINES = 200  # progress lines kept in a run's record
STALLED_WAIT = 0.1  # seconds before a deadline the machine was told of is told again
RECORD = (Say, Notify, Event, Audit, MarkRelease, WentLive)


class Executor:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        platform: Platform,
        releases: Releases,
        audit: AuditLog,
        say: Callable[[str], None],
        clock: Callable[[], float],
        notify: Callable[[dict[str, Any]], None],
    ) -> None:
        self.stack = stack
        self.env = env
        self.state_dir = state_dir
        self.platform = platform
        self.releases = releases
        self.audit = audit
        self.say = say
        self.clock = clock
        self.notify = notify
        # service -> the release its live one was rolled back from (ROLLBACK once per release)
        self.rolled_back_from: dict[str, str] = {}

    # --- feeding the machine --------------------------------------------------------------

    def feed(self, run: DeployRun, seen: Observation, quiet: bool = False) -> None:
        """Tell the run's machine; its commands join the queue (the record's at once when
        nothing is under way). `quiet`: an observation that usually changes nothing (the
        early check's counters, twice a second): the record is saved only if it did."""
        commands = run.machine.step(self.clock(), seen)
        run.queue.extend(commands)
        if not run.busy:
            while run.queue and isinstance(run.queue[0], RECORD):
                self.record(run, run.queue.popleft())
        # Else saved once what is next is done: an abort waits for nothing.
        if not run.queue and (commands or not quiet):
            self.save(run)
        run.progress.set()
        run.wake.set()

    def begin(self, run: DeployRun) -> None:
        self.feed(run, Begin())

    def interrupt(self, run: DeployRun, why: str) -> None:
        """The run cannot go on: it ends failed, recorded (its queue dropped)."""
        run.queue.clear()
        run.busy = False
        self.feed(run, Interrupted(why))

    async def drive(self, run: DeployRun) -> None:
        """Carry out the run's commands until its machine has ended."""
        while True:
            while run.queue:
                command = run.queue.popleft()
                if isinstance(command, RECORD):
                    self.record(run, command)
                    continue
                run.busy = True
                try:
                    answer = await self.perform(run, command)
                finally:
                    run.busy = False
                if answer is not None:
                    early = isinstance(command, ReadCounters) and command.early
                    self.feed(run, answer, quiet=early)
            if run.machine.ended:
                return
            deadline = run.machine.deadline
            await self._until(run, deadline)
            if run.queue:
                continue  # a request's commands (an abort's share of 0) come first
            if run.machine.watching and (looping := self._crash_looping(run)) is not None:
                self.feed(run, looping)
            run.ticked_for = deadline
            self.feed(run, Tick())

    async def _until(self, run: DeployRun, deadline: float | None) -> None:
        """Until the machine's deadline on the injected clock, or a request wakes it."""
        if run.queue:
            return
        run.wake.clear()
        timeout = None if deadline is None else max(0.0, deadline - self.clock())
        if timeout == 0.0 and deadline == run.ticked_for:
            # Told already that this time had come, the machine kept it: never spin on it.
            timeout = STALLED_WAIT
        await wait_for_event(run.wake, timeout)

    def _crash_looping(self, run: DeployRun) -> CrashLooping | None:
        for instance in self.platform.instances(run.service, CANARY):
            if instance.state == State.CRASHLOOP.value:
                return CrashLooping(instance.name, instance.reason)
        return None

    # --- the platform ---------------------------------------------------------------------

    async def perform(self, run: DeployRun, command: Command) -> Observation | None:
        """One command on the platform; its answer for the machine (None: none needed)."""
        platform, name = self.platform, run.service
        spec, ref = run.machine.spec, _ref(run.release)
        match command:
            case RunTask(what, text):
                return TaskDone(what, *await self.run_task(spec, run.release, what, text))
            case CountStable():
                stable = [i for i in platform.instances(name, STABLE) if not i.draining]
                return StableCount(len(stable))
            case StartCanaries(count):
                try:
                    names = await platform.start_canaries(spec, ref, count)
                except PlatformError as exc:
                    return CanariesStarted(error=str(exc))
                return CanariesStarted(tuple(names))
            case WarmRound():
                return await self._warm_round(run, command)
            case Admit(instances):
                await platform.admit(name, list(instances))
            case SetWeight(instances, weight):
                platform.set_instance_weight(name, list(instances), weight)
            case SetShare(percent):
                return await self._set_share(run, percent)
            case ReadCounters():  # for a verdict, or the early check between them
                tracks = await platform.track_counters(name)
                return CountersRead(tracks["stable"], tracks["canary"])
            case StopCanaries():
                await platform.stop_canaries(name)
                return CanariesStopped()
            case Promote():
                return Promoted(tuple(await platform.promote(spec, ref)))
            case Retire(instances):
                await platform.retire(name, list(instances))
                return Retired()
            case Replace():
                try:
                    await platform.replace(spec, ref)
                except PlatformError as exc:
                    return Replaced(str(exc))
                return Replaced()
        return None

    async def _set_share(self, run: DeployRun, percent: float) -> ShareSet:
        try:
            await self.platform.set_canary_share(run.service, percent)
        except Exception as exc:  # the machine decides: an abort goes on regardless
            return ShareSet(percent, str(exc) or type(exc).__name__)
        return ShareSet(percent)

    async def _warm_round(self, run: DeployRun, command: WarmRound) -> RoundDone:
        latencies, failed = [], 0
        for _ in range(command.requests):
            started = self.clock()
            result = await self.platform.probe(run.service, command.instance, command.probe)
            latencies.append(self.clock() - started)
            failed += not result.ok
        return RoundDone(command.instance, tuple(latencies), failed)

    async def run_task(
        self, spec: Service, release: Release, what: str, command: str
    ) -> tuple[bool, str]:
        """migrate or schema_version in the release with the service's environment and
        secrets; (ok, its output or what went wrong), secret values masked."""
        result = await self.platform.run_task(spec, _ref(release), what, command, COMMAND_TIMEOUT)
        output = result.output.strip()
        if result.error:
            return False, result.error
        if result.timed_out:
            return False, f"timed out after {COMMAND_TIMEOUT:g}s: {output[-500:]}"
        if result.exit_code != 0:
            return False, f"exit {result.exit_code}: {output[-500:]}"
        return True, output

    # --- the record -----------------------------------------------------------------------

    def record(self, run: DeployRun, command: Command) -> None:
        match command:
            case Say(text):
                self.line(run, text)
            case Notify(what, message):
                self.notify(self._payload(run, what, message))
            case Event(what, result, why, details):
                self._event(run, what, result, why, details)
            case Audit(what, result, why):
                target = f"{self.stack.name}/{self.env}/{run.service} {run.version}"
                self.audit.record("agent", what, target, result, why=why or run.reason)
            case MarkRelease(version, status, details):
                self._mark(run, version, status, details)
            case WentLive(version, completed, origin):
                self._went_live(run, version, completed, origin)

    def _payload(self, run: DeployRun, what: str, message: str) -> dict[str, Any]:
        """A deploy notification for the [notify] webhook; `text` for chat webhooks."""
        return {
            "stack": self.stack.name,
            "env": self.env,
            "service": run.service,
            "deploy": run.id,
            "event": what,
            "version": run.version,
            "message": message,
            "time": self.clock(),
            "text": chat_text(self.stack.name, self.env, message, f"deploy {run.id}"),
        }

    def _event(self, run: DeployRun, what: str, result: str, why: str, details: Any) -> None:
        release = run.release
        events.deploy_event(
            self.audit, what, who=run.who, stack=self.stack.name, env=self.env,
            service=run.service, version=release.version, result=result,
            why=why or run.reason, commit=release.commit, commit_time=release.commit_time,
            deploy_id=run.id, **details,
        )  # fmt: skip

    def _mark(
        self, run: DeployRun, version: str, status: ReleaseStatus | None, details: Any
    ) -> None:
        mine = version == run.release.version
        if status is None:
            status = (run.release if mine else self.releases.get(run.service, version)).status
        marked = self.releases.mark(run.service, version, status, **details)
        if mine:
            run.release = marked

    def _went_live(self, run: DeployRun, version: str, completed: bool, origin: str | None) -> None:
        now = self.clock()
        for other in self.releases.list(run.service):
            if other.status is ReleaseStatus.LIVE and other.version != version:
                self.releases.mark(run.service, other.version, ReleaseStatus.SUPERSEDED)
        extra: dict[str, Any] = {"deploy_id": run.id}
        if origin is not None:
            extra["rolled_back_from"] = origin
        if completed:
            extra["completed_at"] = now
        self._mark(run, version, ReleaseStatus.LIVE, extra)
        if origin is not None:
            self.rolled_back_from[run.service] = origin
        else:
            self.rolled_back_from.pop(run.service, None)

    def line(self, run: DeployRun, text: str) -> None:
        run.lines.append((self.clock(), text))
        del run.lines[:-MAX_LINES]
        self.say(f"{run.service} {run.kind} {run.version}: {text}")
        self.save(run)

    def finish(self, run: DeployRun, phase: Phase, why: str) -> None:
        """End a run that will not run (a request that cannot wait on), recorded."""
        for command in run.machine.finish(self.clock(), phase, why):
            self.record(run, command)
        run.machine.ended = True
        self.save(run)

    def save(self, run: DeployRun) -> None:
        folder = self.state_dir / "deploys"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{run.id}.json"
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(run.to_json(), indent=2))
        temporary.replace(path)


async def wait_for_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set, or `timeout` seconds (None: no limit); set or not."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    return event.is_set()


def _ref(release: Release) -> ReleaseRef:
    return ReleaseRef(release.version, release.path)

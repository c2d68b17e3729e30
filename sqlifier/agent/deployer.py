"""Deploys and rollbacks, carried out by the agent (it owns the instances and the router).

A deploy of release V of service S, once approved and holding S's lock:

1. `migrate` (if any) runs in V's folder, then `schema_version` is read and recorded on V;
   a failure stops the deploy before any instance of V exists.
2. Canary instances of V start beside the stable ones (stable stays at full size), pass
   their probes and the warm-up gate (synthetic requests straight to each instance until
   p95 <= `max_p95`), and only then get traffic: the rollout's steps (1%, 10%, 50%, 100%
   by default), with `slow_start` ramping the first share up and each later instance's
   weight. Each step needs as many canary instances as its share of the stable count.
3. Every `interval` (10 s) the step is judged on the router's counters of both tracks
   since the step began (`delivery.analysis`): a failure aborts at once; a pass after
   `pause` moves on; too few requests waits up to `pause` x 3, then pauses the rollout
   and notifies once (analysis goes on while paused: a failure still aborts).
4. After the last step (100%) the old instances stay running, idle, for the bake time —
   still judged — then the canaries become the stable instances in one router update,
   the old ones drain and stop, and V is live.

An abort (failed analysis, a canary crash loop, `ABORT ROLLOUT`, a rollback request)
puts 100% of the traffic back on the stable instances first — in force before anything
else happens — then records the failing values, marks V failed, notifies, and after the
bake time drains and stops the canaries.

A rollback to release T (default: the previous stable one) checks the database's schema
revision against T's first (`delivery.schema`), then starts T's instances, warms them,
and moves all traffic to them in one router update; the bad release drains and stops.
During a rollout the stable instances are T's and still running: the rollback is the
abort, and traffic moves at once.

Services without routes, or pinned to ports or data folders (`port`, `stateful`), have
no canary: their instances are replaced one at a time.

Every deploy has an id and a record in `.sqlifier/<env>/deploys/<id>.json`, rewritten on
every change, which `sqlifier deploy status ID` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlifier.agent.files import read_run
from sqlifier.delivery import events
from sqlifier.delivery.analysis import AnalysisError, Verdict, analyse
from sqlifier.delivery.approvals import first_approval, second_approval
from sqlifier.delivery.locks import Locked, ServiceLock, force_release
from sqlifier.delivery.releases import (
    Release,
    ReleaseError,
    Releases,
    ReleaseStatus,
    service_from_config,
)
from sqlifier.delivery.schema import read_revision, rollback_refusal
from sqlifier.errors import UserError
from sqlifier.platform.traffic import Traffic
from sqlifier.router.metrics import Counters
from sqlifier.runtime.commands import run_command
from sqlifier.runtime.lifecycle import State
from sqlifier.runtime.probes import run_probe
from sqlifier.runtime.supervisor import Instance, StartFailed, Supervisor
from sqlifier.stack.model import Probe, ProbeKind, Service, Stack
from sqlifier.store.audit import AuditLog

__all__ = ["TERMINAL", "DeployRun", "Deployer"]

READY_TIMEOUT = 120.0
COMMAND_TIMEOUT = 600.0  # migrate and schema_version
RULE_LOCK_WAIT = 60.0  # a rule's rollback waits this long for a deploy finishing
APPROVAL_TIMEOUT = 3600.0  # a deploy awaiting approval expires after this
STOPPING = "the agent is stopping (sqlifier down): nothing new starts; start the stack again"
RAMP_EVERY = 0.5  # seconds between slow-start weight changes
MAX_LINES = 200  # progress lines kept in a run's record
TERMINAL = frozenset({"complete", "aborted", "failed", "refused", "expired", "rolled back"})


@dataclass
class DeployRun:
    """One deploy or rollback as it goes; its record is `to_json`."""

    id: str
    kind: str  # "deploy" | "rollback"
    service: str
    env: str
    version: str
    from_version: str | None
    who: str
    reason: str
    created: float
    state: str = "starting"
    step: int = 0
    steps: tuple[float, ...] = ()
    weight: float = 0.0  # the canary track's share now, percent
    step_ends: float | None = None
    verdict: dict[str, Any] | None = None
    approved_by: list[str] = field(default_factory=list)
    paused_by: str | None = None
    error: str | None = None
    finished: float | None = None
    detected_at: float | None = None
    restored_at: float | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    abort_reason: str | None = None  # asked for, not yet carried out
    outcome_recorded: bool = True  # False between DEPLOY_START and its complete or abort
    release: Release | None = None  # the release being deployed, once started
    promoted: bool = False  # past the point where an abort can move traffic back
    approval_expires: float | None = None  # a deploy awaiting approval expires then
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "service": self.service,
            "env": self.env,
            "version": self.version,
            "from_version": self.from_version,
            "who": self.who,
            "reason": self.reason,
            "created": self.created,
            "state": self.state,
            "done": self.state in TERMINAL,
            "succeeded": self.state in ("complete", "rolled back"),
            "step": self.step,
            "steps": list(self.steps),
            "weight": self.weight,
            "step_ends": self.step_ends,
            "verdict": self.verdict,
            "approved_by": self.approved_by,
            "paused_by": self.paused_by,
            "error": self.error,
            "finished": self.finished,
            "detected_at": self.detected_at,
            "restored_at": self.restored_at,
            "lines": [[t, text] for t, text in self.lines],
            "approval_expires": self.approval_expires,
        }

    @classmethod
    def awaiting(cls, record: dict[str, Any]) -> DeployRun:
        """A deploy awaiting approval again, from the record a previous agent left."""
        run = cls(
            id=str(record["id"]),
            kind="deploy",
            service=str(record["service"]),
            env=str(record["env"]),
            version=str(record["version"]),
            from_version=record.get("from_version"),
            who=str(record["who"]),
            reason=str(record.get("reason") or ""),
            created=float(record["created"]),
            state="awaiting approval",
            approved_by=[str(who) for who in record.get("approved_by") or []],
            # Records from before expiry times were kept: an hour from the request.
            approval_expires=float(
                record.get("approval_expires") or float(record["created"]) + APPROVAL_TIMEOUT
            ),
        )
        run.lines = [(float(t), str(text)) for t, text in record.get("lines") or []]
        return run


@dataclass(frozen=True)
class _Command:
    """A deploy's one-off command of a service, as secrets are delivered to it."""

    service: Service
    name: str
    id: str


class _Stop(Exception):
    """The run ends here; the message says why (already recorded)."""


class Deployer:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        supervisor: Supervisor,
        traffic: Traffic,
        audit: AuditLog,
        say: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.env = env
        self.state_dir = state_dir
        self.supervisor = supervisor
        self.traffic = traffic
        self.audit = audit
        self.say = say
        self.clock = clock
        self.releases = Releases(state_dir, env, stack.keep_releases)
        self.runs: dict[str, DeployRun] = {}
        self.active: dict[str, DeployRun] = {}  # service -> its deploy or rollback
        self.notify: Callable[[dict[str, Any]], None] = lambda _: None
        # service -> the release its live one was rolled back from (ROLLBACK once per release)
        self.rolled_back_from: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Deploys a previous agent left awaiting approval, for `resume_requests`.
        self._requests: list[dict[str, Any]] = []
        self.stopping = False

    # --- at start ---------------------------------------------------------------------

    def load_live(self) -> None:
        """A service with a live release runs it — its code and the config it was made
        with — from the start; the others run from their `source`."""
        self._close_interrupted()
        for name in list(self.supervisor.services):
            try:
                live = self._live(name)
            except ReleaseError as exc:
                self.say(f"{name} release unreadable, running its source: {exc}")
                continue
            if live is None:
                continue
            try:
                spec = service_from_config(live.config)
            except (KeyError, TypeError, ValueError) as exc:
                self.say(f"{name} release {live.version}: its config is unreadable ({exc})")
                continue
            self.supervisor.releases[name] = (live.version, live.path)
            self.supervisor.services[name] = spec
            if (origin := live.details.get("rolled_back_from")) is not None:
                self.rolled_back_from[name] = str(origin)

    def _close_interrupted(self) -> None:
        """Deploys a previous agent was running when it ended: they end here, failed (its
        canaries are not adopted: the new agent stops them). A deploy still awaiting
        approval had started nothing: it is kept for `resume_requests`."""
        for path in sorted((self.state_dir / "deploys").glob("*.json")):
            record = read_run(self.state_dir, path.stem)
            if record is None or record.get("done"):
                continue
            if record.get("kind") == "deploy" and record.get("state") == "awaiting approval":
                self._requests.append(record)  # nothing started: it can wait on
                continue
            why = f"interrupted: the agent stopped during this {record.get('kind', 'deploy')}"
            record.update(state="failed", done=True, error=why, finished=self.clock())
            record.setdefault("lines", []).append([self.clock(), f"failed: {why}"])
            with contextlib.suppress(OSError):
                path.write_text(json.dumps(record, indent=2))
            if record.get("kind") != "deploy":
                continue
            with contextlib.suppress(ReleaseError, KeyError, TypeError):
                release = self.releases.get(str(record["service"]), str(record["version"]))
                if release.status is ReleaseStatus.BUILT:
                    self.releases.mark(
                        release.service, release.version, ReleaseStatus.FAILED,
                        failed_at=self.clock(), failed_reason=why,
                    )  # fmt: skip
                    events.deploy_event(
                        self.audit, events.ROLLOUT_ABORT, who="agent", stack=self.stack.name,
                        env=self.env, service=release.service, version=release.version,
                        why=why, commit=release.commit, commit_time=release.commit_time,
                        deploy_id=str(record["id"]),
                    )  # fmt: skip

    def resume_requests(self) -> None:
        """Deploys a previous agent left awaiting approval wait on, with their lock taken
        again, until they are approved or expire as they would have."""
        requests, self._requests = self._requests, []
        for record in requests:
            try:
                run = DeployRun.awaiting(record)
            except (KeyError, TypeError, ValueError) as exc:
                self.say(f"deploy {record.get('id')}: its record is unreadable ({exc})")
                continue
            self.runs[run.id] = run
            if (run.approval_expires or 0.0) <= self.clock():
                self._expire(run)
                continue
            lock = ServiceLock(
                self.state_dir, self.env, run.service, "deploy", run.who, run.version, run.reason
            )
            try:
                release = self.releases.get(run.service, run.version)
                if run.service not in self.supervisor.services:
                    why = f"{run.service} is no longer in the stack file"
                elif release.status is ReleaseStatus.LIVE:
                    why = f"{run.version} is already live for {run.service}"
                else:
                    why = ""
                    self._take_back(lock, run)
            except UserError as exc:  # a release or a lock
                why = str(exc)
            if why:
                self._finish(run, "failed", f"it cannot wait on after the agent restarted: {why}")
                continue
            self.active[run.service] = run
            self._line(run, "the agent restarted: still awaiting approval")
            self._spawn(run, lock, self._deploy(run, release))

    def _expire(self, run: DeployRun) -> None:
        """A deploy awaiting approval that no approver approved in time ends, audited."""
        self._finish(run, "expired", "no approver approved it in time")
        target = f"{self.stack.name}/{self.env}/{run.service} {run.version}"
        self.audit.record("agent", "deploy", target, "expired", why=run.reason)

    def _take_back(self, lock: ServiceLock, run: DeployRun) -> None:
        """Take `run`'s lock again. A previous agent that was killed left it held by its
        dead process: that stale lock, for this same deploy, is broken (audited) first."""
        try:
            lock.acquire()
        except Locked as exc:
            info = exc.info
            if not (info.stale and info.user == run.who and info.version == run.version):
                raise
            force_release(self.state_dir, self.env, run.service, "agent", self.audit)
            lock.acquire()

    async def stop(self) -> None:
        self.stopping = True  # a request still waiting for a lock starts nothing now
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- requests ---------------------------------------------------------------------

    async def deploy(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """Start a deploy of an already made release: approval, lock, then the rollout in
        a task. (False, {"error"}) when refused, with nothing changed."""
        name, version = body.get("service"), body.get("version")
        if not isinstance(name, str) or name not in self.supervisor.services:
            known = ", ".join(self.supervisor.services)
            return False, {"error": f"unknown service {name!r}; services: {known}"}
        if not isinstance(version, str):
            return False, {"error": "deploy needs the version of a release"}
        reason = str(body.get("reason") or "")
        target = f"{self.stack.name}/{self.env}/{name} {version}"
        try:
            release = self.releases.get(name, version)
        except ReleaseError as exc:
            return self._refuse(who, "deploy", target, str(exc))
        if release.status is ReleaseStatus.LIVE:
            return self._refuse(
                who, "deploy", target, f"{version} is already live for {name} in {self.env}"
            )
        decision = first_approval(self.stack.environment(self.env), who, bool(body.get("approve")))
        if not decision.allowed and not decision.waiting:
            return self._refuse(who, "deploy", target, decision.reason)
        lock = ServiceLock(self.state_dir, self.env, name, "deploy", who, version, reason)
        try:
            await lock.acquire_async(float(body.get("lock_wait") or 0.0))
        except Locked as exc:
            return self._refuse(who, "deploy", target, str(exc))
        if self.stopping:
            lock.release()
            return self._refuse(who, "deploy", target, STOPPING)
        run = self._new_run("deploy", name, version, who, reason)
        run.from_version = self._stable_version(name)
        if decision.waiting:
            run.state = "awaiting approval"
            timeout = float(body.get("approval_timeout") or APPROVAL_TIMEOUT)
            run.approval_expires = self.clock() + timeout
            self._line(run, decision.reason)
            self.audit.record(who, "deploy", target, "awaiting approval", why=reason)
        elif body.get("approve"):
            run.approved_by.append(who)
        self._spawn(run, lock, self._deploy(run, release))
        return True, run.to_json()

    async def approve(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """The second approval of a deploy awaiting one."""
        run = self.runs.get(str(body.get("id")))
        if run is None or run.state != "awaiting approval":
            waiting = [r.id for r in self.runs.values() if r.state == "awaiting approval"]
            listed = ", ".join(waiting) or "none"
            return False, {
                "error": f"no deploy {body.get('id')!r} is awaiting approval; awaiting: {listed}"
            }
        decision = second_approval(self.stack.environment(self.env), run.who, who)
        target = f"{self.stack.name}/{self.env}/{run.service} {run.version}"
        if not decision.allowed:
            self.audit.record(who, "approve", f"{target} ({run.id})", f"refused: {decision.reason}")
            return False, {"error": decision.reason}
        self.audit.record(who, "approve", f"{target} ({run.id})", "ok")
        run.approved_by.append(who)
        run.state = "approved"
        self._line(run, f"approved by {who}")
        run.wake.set()
        return True, run.to_json()

    def control(self, service: str, what: str, who: str, why: str = "") -> tuple[bool, str]:
        """ABORT, PAUSE or RESUME the rollout of `service` (rules and the CLI)."""
        run = self.active.get(service)
        if run is None or run.kind != "deploy" or run.state in TERMINAL or run.promoted:
            return False, f"no rollout of {service} is in progress"
        by = f"{who}: {why}" if why else who
        if what == "abort":
            run.abort_reason = f"aborted by {by}"
        elif what == "pause":
            run.paused_by = by
            self._line(run, f"paused by {by}")
            self._notify(run, "pause", f"rollout of {run.version} paused by {by}")
        elif what == "resume":
            if run.paused_by is None:
                return False, f"the rollout of {service} is not paused"
            run.paused_by = None
            self._line(run, f"resumed by {by}")
        else:
            return False, f"unknown control {what!r}; abort, pause or resume"
        run.wake.set()
        target = f"{self.stack.name}/{self.env}/{service} {run.version}"
        self.audit.record(who, f"rollout {what}", target, "ok", why=why)
        return True, f"{what} of the rollout of {run.version} ({run.id}) asked for"

    async def rollback(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """Roll a service back (the CLI and the ROLLBACK action): traffic first."""
        name = body.get("service")
        if not isinstance(name, str) or name not in self.supervisor.services:
            known = ", ".join(self.supervisor.services)
            return False, {"error": f"unknown service {name!r}; services: {known}"}
        reason = str(body.get("reason") or "")
        busy = await self._preempt(name, body, who, reason)
        if busy is not None:
            return busy
        live = self._live(name)
        target = f"{self.stack.name}/{self.env}/{name}"
        if live is None:
            return self._refuse(
                who, "rollback", target, f"{name} has no live release in {self.env}: nothing to "
                "roll back (a rollback goes back from a deployed release)"
            )  # fmt: skip
        try:
            goal = self._target(name, live, body.get("to"))
        except ReleaseError as exc:
            return self._refuse(who, "rollback", target, str(exc))
        target = f"{target} {goal.version}"
        if not body.get("rule"):
            approve = bool(body.get("approve"))
            decision = first_approval(self.stack.environment(self.env), who, approve)
            # An approver rolls back alone even where deploys need two people; a request
            # from someone else (waiting, without --approve) is not enough.
            if not decision.allowed and not (decision.waiting and approve):
                reason = decision.reason
                if decision.waiting:
                    environment = self.stack.environment(self.env)
                    reason = (
                        f"{self.env} requires approval: a rollback needs --approve from one of "
                        f"its approvers ({', '.join(environment.approvers)})"
                    )
                return self._refuse(who, "rollback", target, reason)
        lock = ServiceLock(self.state_dir, self.env, name, "rollback", who, goal.version, reason)
        try:
            await lock.acquire_async(float(body.get("lock_wait") or 0.0))
        except Locked as exc:
            return self._refuse(who, "rollback", target, str(exc))
        if self.stopping:
            lock.release()
            return self._refuse(who, "rollback", target, STOPPING)
        forced = ""
        try:
            refusal = await self._schema_refusal(goal, live)
        except _Stop as exc:  # the revision cannot be read: unsafe unless forced
            refusal = str(exc)
            if not body.get("force"):
                lock.release()
                return self._refuse(who, "rollback", target, f"{exc}; --force skips the check")
        if refusal is not None and not body.get("force"):
            lock.release()
            return self._refuse(who, "rollback", target, refusal)
        if refusal is not None:
            forced = f"forced across the schema check: {refusal}"
        run = self._new_run("rollback", name, goal.version, who, reason)
        run.from_version = live.version
        if forced:
            self._line(run, forced)
            self.audit.record(who, "rollback force", target, "ok", why=forced)
        self._spawn(run, lock, self._rollback(run, goal, live))
        return True, run.to_json()

    async def _preempt(
        self, name: str, body: dict[str, Any], who: str, reason: str
    ) -> tuple[bool, dict[str, Any]] | None:
        """A deploy or rollback of `name` in progress: a rollout is aborted (the rollback
        asks for it, traffic first), a finishing one waited for; None when none is left."""
        active = self.active.get(name)
        if active is not None and active.promoted:
            # Promoted, its old instances draining: a moment, and then it is done.
            wait = RULE_LOCK_WAIT if body.get("rule") else float(body.get("lock_wait") or 0.0)
            deadline = time.monotonic() + wait
            while self.active.get(name) is active and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            active = self.active.get(name)
        if active is not None and active.kind == "deploy" and not active.promoted:
            if active.state == "awaiting approval":
                return False, {"error": f"the deploy {active.id} of {name} has not started"}
            # A rollback pre-empts a rollout: the stable release still runs, at full size.
            active.abort_reason = f"rollback asked for by {who}" + (f": {reason}" if reason else "")
            active.wake.set()
            deadline = time.monotonic() + 30
            while active.state not in TERMINAL and active.restored_at is None:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            return True, active.to_json()
        if active is not None:
            return False, {"error": f"{active.kind} {active.id} of {name} is in progress"}
        return None

    def status(self, deploy_id: str) -> dict[str, Any] | None:
        run = self.runs.get(deploy_id)
        return run.to_json() if run is not None else read_run(self.state_dir, deploy_id)

    # --- a deploy ---------------------------------------------------------------------

    async def _deploy(self, run: DeployRun, release: Release) -> None:
        if run.state == "awaiting approval":
            deadline = run.approval_expires or self.clock()
            while run.state == "awaiting approval":
                left = deadline - self.clock()
                if left <= 0:
                    self._expire(run)
                    return
                await self._wait(run, left)
                if run.abort_reason is not None:  # nothing started: nothing to move back
                    self._finish(run, "aborted", f"{run.abort_reason} before it started")
                    return
        spec = service_from_config(release.config)
        run.release = release
        run.steps = spec.rollout.steps
        self._event(events.DEPLOY_START, run, release)
        run.outcome_recorded = False
        self._line(run, f"deploy of {run.version} started by {run.who}")
        self._notify(run, "start", f"deploy of {run.service} {run.version} started")
        schema = await self._migrate(run, spec, release)
        if schema is not None:
            release = self.releases.mark(run.service, run.version, release.status, schema=schema)
        if self._canary_possible(spec):
            await self._rollout(run, spec, release)
        else:
            await self._replace(run, spec, release)

    async def _migrate(self, run: DeployRun, spec: Service, release: Release) -> str | None:
        """`migrate`, then `schema_version`: the revision the release runs against."""
        if spec.migrate and release.details.get("migrated_at") is not None:
            self._line(run, "migrate: already ran for this release")
        elif spec.migrate:
            run.state = "migrating"
            self._line(run, f"migrate: {spec.migrate}")
            ok, output = await self._command(spec, "migrate", spec.migrate, release)
            if not ok:
                why = (
                    f"the migration failed: {output}; no instance of {run.version} took "
                    "traffic (the database may be partly migrated: check it before retrying)"
                )
                self._fail(run, release, why)
                raise _Stop(why)
            self._line(run, "migrate: done")
            self.releases.mark(run.service, run.version, release.status, migrated_at=self.clock())
        if not spec.schema_version:
            return None
        ok, output = await self._command(spec, "schema_version", spec.schema_version, release)
        if not ok:
            why = f"schema_version failed: {output}"
            self._fail(run, release, why)
            raise _Stop(why)
        revision = read_revision(output)
        self._line(run, f"schema revision: {revision}")
        return revision

    async def _rollout(self, run: DeployRun, spec: Service, release: Release) -> None:
        name = run.service
        full = max(1, len(self.supervisor.instances[name]))
        for index, share in enumerate(spec.rollout.steps):
            run.step = index + 1
            count = min(full, max(1, math.ceil(full * share / 100)))
            if len(self.supervisor.canaries[name]) < count:
                fresh = await self._start_canaries(run, spec, release, count)
                if index > 0 and spec.warmup.slow_start:
                    self._ramp(run, fresh, spec.warmup.slow_start)
            if index == 0 and spec.warmup.slow_start:
                await self._ramp_share(run, share, spec.warmup.slow_start)
            await self._shift(run, share)
            self._line(run, f"step {run.step}/{len(run.steps)}: {share:g}% of traffic")
            await self._judge(run, spec, release, spec.rollout.pause, final=False)
        run.state = "baking"
        self._line(run, f"baking for {spec.rollout.bake:g}s; the old instances stay running")
        await self._judge(run, spec, release, spec.rollout.bake, final=True)
        await self._promote(run, spec, release)

    async def _start_canaries(
        self, run: DeployRun, spec: Service, release: Release, count: int
    ) -> list[Instance]:
        run.state = "starting canary"
        self._save(run)
        try:
            fresh = await self.supervisor.start_canaries(
                spec, count, (release.version, release.path), READY_TIMEOUT
            )
        except StartFailed as exc:
            await self._abort(run, spec, release, f"the canary did not start: {exc}", None)
            raise _Stop(str(exc)) from None
        run.state = "warming up"
        self._save(run)
        for instance in fresh:
            problem = await self._warm_up(run, spec, instance)
            if problem is not None:
                await self._abort(run, spec, release, problem, None)
                raise _Stop(problem)
        await self._admit(fresh)
        return fresh

    async def _warm_up(self, run: DeployRun, spec: Service, instance: Instance) -> str | None:
        """Synthetic requests straight to the instance until its p95 is under max_p95;
        the problem, if it does not get there within the warm-up timeout."""
        warmup = spec.warmup
        if warmup.requests <= 0:
            return None
        limit = warmup.max_p95
        probe = Probe(ProbeKind.HTTP, warmup.path, timeout=max(2.0, 4 * (limit or 1.0)))
        deadline = time.monotonic() + warmup.timeout
        rounds = 0
        while True:
            if run.abort_reason is not None:
                return run.abort_reason
            rounds += 1
            latencies, failed = [], 0
            for _ in range(warmup.requests):
                started = time.monotonic()
                result = await run_probe(probe, instance.port, str(instance.service.source))
                latencies.append(time.monotonic() - started)
                failed += not result.ok
            latencies.sort()
            p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]
            shown = f"p95 {p95 * 1000:.0f}ms over {len(latencies)} requests"
            if failed:
                shown += f", {failed} failed"
            if not failed and (limit is None or p95 <= limit):
                self._line(run, f"{instance.name} warm after {rounds} round(s): {shown}")
                return None
            self._line(run, f"{instance.name} warming up: {shown}")
            if time.monotonic() >= deadline:
                bound = f" (max_p95 {limit * 1000:.0f}ms)" if limit is not None else ""
                return (
                    f"{instance.name} of {run.version} was not warm after "
                    f"{warmup.timeout:g}s: {shown}{bound}; it took no traffic"
                )

    async def _admit(self, instances: list[Instance]) -> None:
        """Warm: the instances may take traffic (their track's share, their weight)."""
        for instance in instances:
            instance.held = False
        await self.traffic.sync()

    def _ramp(self, run: DeployRun, instances: list[Instance], seconds: float) -> None:
        async def ramp() -> None:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                for instance in instances:
                    instance.weight = max(1, round(100 * elapsed / seconds))
                self.traffic.changed()
                await asyncio.sleep(RAMP_EVERY)
            for instance in instances:
                instance.weight = 100
            self.traffic.changed()

        task = asyncio.create_task(ramp())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ramp_share(self, run: DeployRun, share: float, seconds: float) -> None:
        """slow_start on the first step: the canary's share grows from nothing to `share`."""
        for instance in self.supervisor.canaries[run.service]:
            instance.weight = 100
        run.state = "slow start"
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            if run.abort_reason is not None:
                return
            await self._shift(run, max(0.1, share * elapsed / seconds))
            await asyncio.sleep(RAMP_EVERY)

    async def _shift(self, run: DeployRun, share: float) -> None:
        await self.traffic.set_canary(run.service, share)
        run.weight = share
        self._save(run)

    async def _judge(
        self, run: DeployRun, spec: Service, release: Release, length: float, final: bool
    ) -> None:
        """Judge the current step every `interval` until it has lasted `length` and
        passed; abort (raising _Stop) on a failure, a crash loop or an abort request."""
        rollout = spec.rollout
        name = run.service
        before = await self.traffic.track_counters(name)
        started = time.monotonic()
        run.step_ends = self.clock() + length
        if not final:
            run.state = "step"
        self._save(run)
        notified = False
        end = started + length
        due = started + min(rollout.interval, length)
        while True:
            await self._wait(run, max(0.0, due - time.monotonic()))
            stop = run.abort_reason or self._crash_looping(name)
            if stop is not None:
                await self._abort(run, spec, release, stop, run.verdict)
                raise _Stop(stop)
            if time.monotonic() < due - 0.01:
                continue  # woken by a pause or a resume: judged when due
            elapsed = time.monotonic() - started
            due += rollout.interval
            if due > end > time.monotonic():
                due = end  # the step's end is always judged
            verdict = await self._verdict(run, spec, before, elapsed)
            if verdict.outcome == "fail":
                run.detected_at = self.clock()
                failing = [c for c in verdict.checks if c.passed is False]
                why = "analysis failed: " + "; ".join(f"{c.name}: {c.value}" for c in failing)
                await self._abort(run, spec, release, why, run.verdict)
                raise _Stop(why)
            if run.paused_by is not None:
                run.state = "paused"
                self._save(run)
                continue
            if elapsed < length - 0.01:
                continue
            if verdict.outcome == "pass":
                self._event(
                    events.ROLLOUT_STEP,
                    run,
                    release,
                    weight=run.weight,
                    step=run.step,
                    verdict="pass",
                    checks=[c.to_json() for c in verdict.checks],
                )
                self._notify(run, "step", f"step {run.step} ({run.weight:g}%) passed")
                return
            if elapsed >= 3 * length and not notified:
                notified = True
                self._pause_for_data(run, verdict, 3 * length, rollout.min_requests)
            if not final:
                run.state = "paused" if run.paused_by else "waiting for data"
            self._save(run)

    def _pause_for_data(self, run: DeployRun, verdict: Verdict, waited: float, needed: int) -> None:
        """Too few requests for too long: paused, notified once; no data is no pass."""
        run.paused_by = (
            f"analysis: too few requests after {waited:g}s ({verdict.canary_requests} of {needed})"
        )
        run.state = "paused"
        self._line(run, f"paused: {run.paused_by}; resume it when traffic comes")
        self._notify(run, "pause", f"rollout of {run.version} paused: {run.paused_by}")
        target = f"{self.stack.name}/{self.env}/{run.service} {run.version}"
        self.audit.record("agent", "rollout pause", target, "ok", why=run.paused_by)

    async def _verdict(
        self, run: DeployRun, spec: Service, before: dict[str, Counters], seconds: float
    ) -> Verdict:
        now = await self.traffic.track_counters(run.service)
        canary = now["canary"].minus(before["canary"])
        stable = now["stable"].minus(before["stable"])
        try:
            verdict = analyse(
                canary,
                stable,
                spec.rollout.analysis,
                spec.rollout.min_requests,
                seconds=max(seconds, 0.001),
            )
        except AnalysisError as exc:  # `check` refuses these; a release made before that
            raise _Stop(str(exc)) from None
        run.verdict = verdict.to_json()
        summary = ", ".join(
            f"{c.name} {c.value}" for c in verdict.checks if c.counts and c.passed is not None
        )
        # No measured check: say how many requests there were to judge.
        summary = summary or f"{verdict.canary_requests} canary requests"
        self._line(run, f"step {run.step} at {run.weight:g}%: {verdict.outcome} ({summary})")
        return verdict

    def _crash_looping(self, name: str) -> str | None:
        for instance in self.supervisor.canaries[name]:
            if instance.life.state is State.CRASHLOOP:
                return f"canary {instance.name} is crash looping: {instance.life.reason}"
        return None

    async def _promote(self, run: DeployRun, spec: Service, release: Release) -> None:
        name = run.service
        run.state = "promoting"
        async with self.supervisor.locked(name), self.traffic.batch():
            self.traffic.canary[name] = 0
            old = self.supervisor.promote(spec, (release.version, release.path))
        run.promoted = True
        run.weight = 100.0
        self._went_live(run, release, completed=True)
        self._event(events.ROLLOUT_COMPLETE, run, release)
        self._notify(run, "promote", f"{run.service} {run.version} promoted")
        self._finish(run, "complete", None)
        self._line(run, f"promoted; stopping {len(old)} old instance(s)")
        await self.supervisor.retire(old)

    async def _replace(self, run: DeployRun, spec: Service, release: Release) -> None:
        run.state = "replacing"
        self._line(run, "no canary for this service: replacing instances one at a time")
        try:
            await self.supervisor.replace_release(
                spec, (release.version, release.path), READY_TIMEOUT
            )
        except StartFailed as exc:
            why = f"{exc}; every instance is back on {run.from_version}"
            run.detected_at = run.restored_at = self.clock()
            self._event(
                events.ROLLOUT_ABORT, run, release, result="ok", why=why,
                detected_at=run.detected_at, restored_at=run.restored_at,
            )  # fmt: skip
            self._fail(run, release, why, state="aborted")
            raise _Stop(why) from None
        run.promoted = True
        self._went_live(run, release, completed=True)
        self._event(events.ROLLOUT_COMPLETE, run, release)
        self._notify(run, "promote", f"{run.service} {run.version} deployed")
        self._finish(run, "complete", None)

    async def _abort(
        self,
        run: DeployRun,
        spec: Service,
        release: Release,
        why: str,
        verdict: dict[str, Any] | None,
    ) -> None:
        """Traffic back on stable first, then the record, then (after the bake time) the
        canaries drain and stop."""
        name = run.service
        run.state = "aborting"
        if run.detected_at is None:
            run.detected_at = self.clock()
        try:
            await self.traffic.set_canary(name, 0)
        except Exception as exc:  # the canaries stop below, and drain on the way
            self._line(run, f"the router did not take the change: {exc}")
        run.restored_at = self.clock()
        run.weight = 0.0
        self._line(run, f"aborted: {why}; all traffic is back on {run.from_version}")
        checks = (verdict or {}).get("checks", [])
        self._event(
            events.ROLLOUT_ABORT, run, release, result="ok", why=why,
            detected_at=run.detected_at, restored_at=run.restored_at, checks=checks,
        )  # fmt: skip
        self._fail(run, release, why, state="aborted", quiet=True, checks=checks)
        self._notify(run, "abort", f"rollout of {run.service} {run.version} aborted: {why}")
        delay = spec.rollout.bake
        self._line(run, f"stopping the canary in {delay:g}s")
        await asyncio.sleep(delay)
        await self.supervisor.stop_canaries(name)

    # --- a rollback -------------------------------------------------------------------

    async def _rollback(self, run: DeployRun, goal: Release, live: Release) -> None:
        spec = service_from_config(goal.config)
        self._event(events.ROLLBACK, run, goal, from_version=live.version, why=run.reason)
        self._notify(run, "rollback", f"rolling {run.service} back from {live.version}")
        run.detected_at = self.clock()
        name = run.service
        if not self._canary_possible(spec):
            run.state = "replacing"
            try:
                await self.supervisor.replace_release(
                    spec, (goal.version, goal.path), READY_TIMEOUT
                )
            except StartFailed as exc:
                why = f"{goal.version} did not start: {exc}; {live.version} still runs"
                self._finish(run, "failed", why)
                return
            run.restored_at = self.clock()
            self._rolled_back(run, goal, live)
            return
        count = max(1, len(self.supervisor.instances[name]))
        run.state = "starting"
        try:
            fresh = await self.supervisor.start_canaries(
                spec, count, (goal.version, goal.path), READY_TIMEOUT
            )
        except StartFailed as exc:
            why = f"{goal.version} did not start: {exc}; {live.version} still takes the traffic"
            self._finish(run, "failed", why)
            return
        run.state = "warming up"
        for instance in fresh:
            problem = await self._warm_up(run, spec, instance)
            if problem is not None:
                await self.supervisor.stop_canaries(name)
                self._finish(run, "failed", f"{problem}; {live.version} still takes the traffic")
                return
        await self._admit(fresh)
        async with self.supervisor.locked(name), self.traffic.batch():
            self.traffic.canary[name] = 0
            old = self.supervisor.promote(spec, (goal.version, goal.path))
        run.restored_at = self.clock()
        run.weight = 100.0
        self._rolled_back(run, goal, live)
        await self.supervisor.retire(old)

    def _rolled_back(self, run: DeployRun, goal: Release, live: Release) -> None:
        run.promoted = True
        now = self.clock()
        self.releases.mark(
            run.service, live.version, ReleaseStatus.ROLLED_BACK,
            rolled_back_to=goal.version, rolled_back_at=now,
        )  # fmt: skip
        self._went_live(run, goal, completed=False, rolled_back_from=live.version)
        self.rolled_back_from[run.service] = live.version
        self._event(
            events.ROLLBACK_COMPLETE, run, goal, from_version=live.version,
            detected_at=run.detected_at, restored_at=run.restored_at,
        )  # fmt: skip
        self._line(run, f"all traffic on {goal.version}; {live.version} drains and stops")
        self._notify(run, "rollback", f"{run.service} rolled back to {goal.version}")
        self._finish(run, "rolled back", None)

    def _target(self, name: str, live: Release, to: object) -> Release:
        """The release a rollback goes to: a version, `previous` (live before this one)
        or `previous_stable` (the default: the newest release that completed a rollout
        and was not rolled back from)."""
        others = [r for r in self.releases.list(name) if r.version != live.version]
        if isinstance(to, str) and to not in ("previous", "previous_stable"):
            return self.releases.get(name, to)
        if to == "previous":
            candidates = [r for r in others if r.live_at is not None]
        else:
            candidates = [
                r
                for r in others
                if r.details.get("completed_at") is not None
                and r.status is not ReleaseStatus.ROLLED_BACK
            ]
        if not candidates:
            kept = ", ".join(f"{r.version} ({r.status})" for r in others) or "none"
            raise ReleaseError(
                f"no release of {name} to roll back to: none before {live.version} "
                f"{'was live' if to == 'previous' else 'completed a rollout'} (kept: {kept}); "
                "name one with --to",
                service=name,
            )
        return max(candidates, key=lambda r: r.live_at or r.created)

    async def _schema_refusal(self, goal: Release, live: Release) -> str | None:
        spec = service_from_config(live.config)
        command = spec.schema_version or service_from_config(goal.config).schema_version
        if not command:
            return None
        ok, output = await self._command(spec, "schema_version", command, live)
        if not ok:
            raise _Stop(f"cannot read the schema revision ({command}): {output}")
        current = read_revision(output)
        return rollback_refusal(goal, current, self.releases.list(goal.service), live)

    # --- plumbing ---------------------------------------------------------------------

    def _canary_possible(self, spec: Service) -> bool:
        return bool(spec.routes) and spec.port is None and not spec.stateful

    async def _command(
        self, spec: Service, what: str, command: str, release: Release
    ) -> tuple[bool, str]:
        """Run migrate or schema_version in the release's folder with the service's
        environment and secrets (delivered as to an instance, its files removed after);
        (ok, its output or what went wrong), secret values masked."""
        env = {
            **self.supervisor.base_env,
            **spec.env,
            "SERVICE": spec.name,
            "RELEASE": release.version,
            "ENV": self.env,
            "DATA_DIR": str((self.state_dir / "data" / spec.name).absolute()),
        }
        (self.state_dir / "data" / spec.name).mkdir(parents=True, exist_ok=True)
        holder = _Command(spec, f"{spec.name}/{what}", f"{spec.name}-{what}-{secrets.token_hex(4)}")
        deliver, forget = self.supervisor.secrets, self.supervisor.after_stop
        try:
            if deliver is not None and spec.secrets:
                try:
                    env.update(await deliver(holder))
                except UserError as exc:  # names the reference, never a value
                    return False, str(exc)
            text = f"/bin/sh -c {shlex.quote(command)}" if spec.shell else command
            result = await run_command(text, env, release.path, COMMAND_TIMEOUT)
        finally:
            if forget is not None:
                forget(holder)
        mask = self.supervisor.redactor or (lambda line: line)
        output = mask(result.output.strip())
        if result.error:
            return False, mask(result.error)
        if result.timed_out:
            return False, f"timed out after {COMMAND_TIMEOUT:g}s: {output[-500:]}"
        if result.exit_code != 0:
            return False, f"exit {result.exit_code}: {output[-500:]}"
        return True, output

    def _live(self, name: str) -> Release | None:
        return next((r for r in self.releases.list(name) if r.status is ReleaseStatus.LIVE), None)

    def _stable_version(self, name: str) -> str:
        release = self.supervisor.releases.get(name)
        return release[0] if release is not None else self.supervisor.release

    def _went_live(self, run: DeployRun, release: Release, completed: bool, **details: Any) -> None:
        now = self.clock()
        for other in self.releases.list(run.service):
            if other.status is ReleaseStatus.LIVE and other.version != release.version:
                self.releases.mark(run.service, other.version, ReleaseStatus.SUPERSEDED)
        extra: dict[str, Any] = {"deploy_id": run.id, **details}
        if completed:
            extra["completed_at"] = now
        self.releases.mark(run.service, release.version, ReleaseStatus.LIVE, **extra)
        if not details.get("rolled_back_from"):
            self.rolled_back_from.pop(run.service, None)

    def _fail(
        self,
        run: DeployRun,
        release: Release,
        why: str,
        state: str = "failed",
        quiet: bool = False,
        **details: Any,
    ) -> None:
        self.releases.mark(
            run.service, release.version, ReleaseStatus.FAILED, failed_at=self.clock(),
            failed_reason=why, **details,
        )  # fmt: skip
        if not run.outcome_recorded:  # it started: DORA counts it as a failed deployment
            now = self.clock()
            self._event(
                events.ROLLOUT_ABORT, run, release, why=why,
                detected_at=run.detected_at or now, restored_at=run.restored_at or now,
            )  # fmt: skip
        self._finish(run, state, why, quiet)

    def _refuse(self, who: str, what: str, target: str, why: str) -> tuple[bool, dict[str, Any]]:
        self.audit.record(who, what, target, f"refused: {why}")
        return False, {"error": why}

    def _new_run(self, kind: str, name: str, version: str, who: str, reason: str) -> DeployRun:
        run = DeployRun(
            id=f"{kind[0]}{secrets.token_hex(4)}",
            kind=kind,
            service=name,
            env=self.env,
            version=version,
            from_version=None,
            who=who,
            reason=reason,
            created=self.clock(),
        )
        self.runs[run.id] = run
        self.active[name] = run
        return run

    def _spawn(self, run: DeployRun, lock: ServiceLock, work: Any) -> None:
        async def guarded() -> None:
            try:
                await work
            except _Stop:
                pass
            except asyncio.CancelledError:
                if run.state == "awaiting approval":
                    # Nothing started: the next agent takes the request up again.
                    self._line(run, "the agent stopped: the next one keeps awaiting approval")
                else:
                    self._end_badly(run, "the agent stopped during the " + run.kind)
                raise
            except Exception as exc:  # recorded, never lost
                self._end_badly(run, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                lock.release()
                if self.active.get(run.service) is run:
                    del self.active[run.service]
                if run.state not in TERMINAL and run.state != "awaiting approval":
                    self._finish(run, "failed", run.error or "ended without an outcome")
                self._save(run)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._save(run)

    def _end_badly(self, run: DeployRun, why: str) -> None:
        if run.release is not None and not run.promoted and run.state not in TERMINAL:
            with contextlib.suppress(ReleaseError, OSError):
                self._fail(run, run.release, why)
        self._finish(run, "failed", why)

    async def _wait(self, run: DeployRun, seconds: float) -> None:
        run.wake.clear()
        waiter = asyncio.ensure_future(run.wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=max(0.0, seconds))
        finally:
            waiter.cancel()

    def _finish(self, run: DeployRun, state: str, error: str | None, quiet: bool = False) -> None:
        if run.state in TERMINAL:
            return
        run.state, run.error, run.finished = state, error, self.clock()
        if quiet:
            self._save(run)
        elif error:
            self._line(run, f"{state}: {error}")
        else:
            self._line(run, state)
        self._save(run)

    def _line(self, run: DeployRun, text: str) -> None:
        run.lines.append((self.clock(), text))
        del run.lines[:-MAX_LINES]
        self.say(f"{run.service} {run.kind} {run.version}: {text}")
        self._save(run)

    def _save(self, run: DeployRun) -> None:
        folder = self.state_dir / "deploys"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{run.id}.json"
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(run.to_json(), indent=2))
        temporary.replace(path)

    def _event(
        self, what: str, run: DeployRun, release: Release, result: str = "ok", why: str = "",
        **details: Any,
    ) -> None:  # fmt: skip
        if what in (events.ROLLOUT_COMPLETE, events.ROLLOUT_ABORT):
            run.outcome_recorded = True
        events.deploy_event(
            self.audit, what, who=run.who, stack=self.stack.name, env=self.env,
            service=run.service, version=release.version, result=result,
            why=why or run.reason, commit=release.commit, commit_time=release.commit_time,
            deploy_id=run.id, **details,
        )  # fmt: skip

    def _notify(self, run: DeployRun, what: str, message: str) -> None:
        self.notify(
            {
                "stack": self.stack.name,
                "env": self.env,
                "service": run.service,
                "deploy": run.id,
                "event": what,
                "version": run.version,
                "message": message,
                "time": self.clock(),
            }
        )

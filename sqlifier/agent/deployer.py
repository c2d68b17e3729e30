"""Deploys and rollbacks, asked of the agent (it reaches the instances and the router
through the platform seam).

This module takes the requests — deploy, approve, pause / resume / abort, rollback,
status — and checks them: the service and the release exist, who may approve, the
service's lock (one deploy or rollback per service at a time), the schema check of a
rollback. Each accepted request becomes a run (`deploy_record.DeployRun`): a pure rollout
machine (`delivery.rollout`, whose docstring tells the flow, from approval to promotion,
abort and rollback) and a task in the agent that carries its commands out
(`executor.py`) until it has ended and its lock is released.

Every deploy has an id and a record in `.sqlifier/<env>/deploys/<id>.json`, rewritten on
every change, which `sqlifier deploy status ID` reads. An agent that starts takes up again
the runs a previous one left when it died (`restarts.py`): a rollout goes on at its step
with its canaries adopted, or pauses with all traffic on stable where it cannot; a deploy
awaiting approval waits on (`load_live`, then `resume_requests`).

A new deploy of a service whose last run has ended but still cleans up (its lock held) has
that clean-up done at once (`CleanUpNow`); a request waiting for a lock is withdrawn when
its client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sqlifier.agent import restarts
from sqlifier.agent.deploy_record import APPROVAL_TIMEOUT, TERMINAL_STATES, DeployRun
from sqlifier.agent.executor import Executor, wait_for_event
from sqlifier.agent.files import read_run
from sqlifier.delivery.approvals import first_approval, second_approval
from sqlifier.delivery.budget import Budget, budget_gate, read_budget, slowed
from sqlifier.delivery.locks import Locked, ServiceLock
from sqlifier.delivery.releases import (
    Release,
    ReleaseError,
    Releases,
    ReleaseStatus,
    follows_source,
    service_from_config,
)
from sqlifier.delivery.rollout import Phase, Rollback, Rollout
from sqlifier.delivery.rollout.deploy import BEFORE_CANARY
from sqlifier.delivery.rollout.messages import (
    Abort,
    Approved,
    CleanUpNow,
    Pause,
    Readopted,
    Resume,
)
from sqlifier.delivery.schema import read_revision, rollback_refusal
from sqlifier.errors import UserError
from sqlifier.platform import CANARY, Platform, ReleaseRef
from sqlifier.runtime import http
from sqlifier.stack.model import Service, Stack
from sqlifier.store.audit import AuditLog

__all__ = ["TERMINAL", "DeployRun", "Deployer"]

RULE_LOCK_WAIT = 60.0  # a rule's rollback waits this long for a deploy finishing
PREEMPT_WAIT = 30.0  # a rollback waits this long for the rollout's traffic to be back
WITHDRAWN = "its client went away while it waited for the lock: nothing was done"
CLEANUP_WAIT = 30.0  # a new deploy waits this long for an ended one's clean-up
STOPPING = "the agent is stopping (sqlifier down): nothing new starts; start the stack again"
DOWN = "the stack was stopped (sqlifier down) during the rollout"
TERMINAL = TERMINAL_STATES


class _Unreadable(Exception):
    """The schema revision cannot be read; the message says why."""


class _Refused(Exception):
    """A request is refused, with nothing changed; the message says why."""


class _Withdrawn(_Refused):
    """The client went away while its request waited: nothing is done (audited)."""


class Deployer:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        platform: Platform,
        audit: AuditLog,
        say: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.env = env
        self.state_dir = state_dir
        self.platform = platform
        self.audit = audit
        self.say = say
        self.clock = clock
        self.releases = Releases(state_dir, env, stack.keep_releases)
        self.runs: dict[str, DeployRun] = {}
        self.active: dict[str, DeployRun] = {}  # service -> its deploy or rollback
        self.notify: Callable[[dict[str, Any]], None] = lambda _: None
        # A service's error budget: from the SLO history until the automation measures it.
        self.budget: Callable[[str], Budget | None] = lambda name: read_budget(
            stack, env, state_dir, name, self.clock()
        )
        self.executor = Executor(
            stack, env, state_dir, platform, self.releases, audit, say, clock,
            self._notify,
        )  # fmt: skip
        # service -> the release its live one was rolled back from (ROLLBACK once per release)
        self.rolled_back_from = self.executor.rolled_back_from
        self._tasks: set[asyncio.Task[None]] = set()
        # Deploys a previous agent left awaiting approval, for `resume_requests`.
        self._requests: list[dict[str, Any]] = []
        # Runs a previous agent was carrying out when it died, for `resume_requests`.
        self._resumed: list[DeployRun] = []
        self.stopping = False

    def _notify(self, message: dict[str, Any]) -> None:
        self.notify(message)  # set once the notifier exists (the agent's automation)

    # --- at start ---------------------------------------------------------------------

    def load_live(self) -> None:
        """A service with a live release runs it — its code and the config it was made
        with — from the start; the others run from their `source`."""
        records = restarts.close_interrupted(
            self.state_dir, self.releases, self.audit, self.stack.name, self.env, self.clock
        )
        self._requests = [r for r in records if r.get("state") == "awaiting approval"]
        taken = [r for r in records if r.get("state") != "awaiting approval"]
        for name in list(self.platform.services()):
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
            # A release `up` recorded runs from the source it was made of (section 11).
            path = spec.source if follows_source(live) else live.path
            self.platform.set_stable(spec, ReleaseRef(live.version, path))
            if (origin := live.details.get("rolled_back_from")) is not None:
                self.rolled_back_from[name] = str(origin)
        for record in taken:
            self._readopt(record)

    def _readopt(self, record: dict[str, Any]) -> None:
        """A run a previous agent was carrying out when it died: its canaries are adopted
        as the stack starts (`resume_requests` takes the run up), or it is closed failed
        when it cannot go on at all (its release or its service is gone)."""
        found = restarts.readopt(record, self.releases, self.platform.services())
        if isinstance(found, str):
            why = f"it cannot go on after the agent restarted: {found}"
            restarts.close_record(self.state_dir, record, "failed", why, self.clock())
            self.say(f"{record.get('kind')} {record.get('id')}: {why}")
            return
        run = found
        if run.kind == "deploy" and run.phase not in BEFORE_CANARY:
            ref = ReleaseRef(run.release.version, run.release.path)
            self.platform.expect_canaries(run.machine.spec, ref, run.machine.weight)
        self._resumed.append(run)

    async def migrate_started(self) -> str | None:
        """Before the stack starts: each release `up` recorded gets, once, what a deploy
        gives its release — `migrate`, then its `schema_version` recorded — so a rollback
        to it knows the schema it ran against. The first failure, or None."""
        for name, spec in self.platform.services().items():
            live = self._live(name)
            if live is None or not follows_source(live) or "schema" in live.details:
                continue
            for what in ("migrate", "schema_version"):
                command = getattr(spec, what)
                if not command or (what == "migrate" and "migrated_at" in live.details):
                    continue
                self.say(f"{name} {what} of release {live.version}: {command}")
                ok, output = await self.executor.run_task(spec, live, what, command)
                if not ok:
                    return (
                        f"{name}: {what} of release {live.version} failed: {output}; nothing "
                        "started (the database may be partly migrated: check it, fix the "
                        "command, and run sqlifier up again)"
                    )
                key, value = (
                    ("migrated_at", self.clock()) if what == "migrate" else
                    ("schema", read_revision(output))
                )  # fmt: skip
                live = self.releases.mark(name, live.version, live.status, **{key: value})
        return None

    def resume_requests(self) -> None:
        """Deploys a previous agent left awaiting approval wait on, with their lock taken
        again, until they are approved or expire as they would have."""
        self._take_up_again()
        requests, self._requests = self._requests, []
        target = f"{self.stack.name}/{self.env}"
        for record in requests:
            found = restarts.reopen(
                record, self.releases, self.platform.services(), self.state_dir, target,
                self.audit, self.clock(), self.say,
            )  # fmt: skip
            if found is None:
                continue
            run, why = found
            self.runs[run.id] = run
            if why:
                self.executor.finish(run, Phase.FAILED, why)
            elif run.lock is None:
                self.executor.begin(run)  # it expires, audited
            else:
                self.active[run.service] = run
                self.executor.begin(run)  # "the agent restarted: still awaiting approval"
                self.spawn(run)

    def _take_up_again(self) -> None:
        """The runs a previous agent was carrying out go on, their locks taken back, the
        stack started with their canaries adopted (`load_live`)."""
        resumed, self._resumed = self._resumed, []
        for run in resumed:
            self.runs[run.id] = run
            self.active[run.service] = run
            lock = ServiceLock(
                self.state_dir, self.env, run.service, run.kind, run.who, run.version,
                run.reason,
            )  # fmt: skip
            lost = ""
            try:
                restarts.take_back(lock, self.state_dir, self.env, run.service, self.audit)
                run.lock = lock
            except UserError as exc:
                lost = f"its lock could not be taken back after the agent restarted: {exc}"
            canaries = self.platform.instances(run.service, CANARY)
            names = tuple(i.name for i in canaries if i.running and not i.held)
            self.executor.feed(run, Readopted(names))
            if lost:
                self.executor.feed(run, Abort(lost))
            self.spawn(run)

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
        if not isinstance(name, str) or name not in self.platform.services():
            known = ", ".join(self.platform.services())
            return False, {"error": f"unknown service {name!r}; services: {known}"}
        if not isinstance(version, str):
            return False, {"error": "deploy needs the version of a release"}
        reason = str(body.get("reason") or "")
        target = f"{self.stack.name}/{self.env}/{name} {version}"
        environment = self.stack.environment(self.env)
        try:
            release, spec = self._deployable(name, version)
            budget = self.budget(name)
            gate = budget_gate(
                budget, environment, who, bool(body.get("approve")), bool(body.get("fix"))
            )
            if gate is not None and not gate.allowed:
                raise _Refused(gate.reason)
            spec = slowed(spec, budget)
            decision = first_approval(environment, who, bool(body.get("approve")))
            if not decision.allowed and not decision.waiting:
                raise _Refused(decision.reason)
            await self._clean_up_ended(name)
            lock = await self._lock(name, "deploy", who, version, reason, body)
        except _Refused as exc:
            return self._refuse(who, "deploy", target, str(exc))
        timeout = float(body.get("approval_timeout") or APPROVAL_TIMEOUT)
        machine = Rollout(
            name, version, self.platform.stable_release(name), who, spec,
            migrated=release.details.get("migrated_at") is not None,
            awaiting=decision.reason if decision.waiting else None,
            expires=self.clock() + timeout if decision.waiting else None,
            approved_by=(who,) if body.get("approve") and not decision.waiting else (),
        )  # fmt: skip
        run = self._new_run(machine, release, who, reason, lock)
        self.executor.begin(run)
        if budget is not None:
            why = gate.reason if gate is not None else budget.text()
            self.audit.record(who, "deploy budget", target, f"ok: {why}", details=budget.to_json())
        if decision.waiting:
            self.audit.record(who, "deploy", target, "awaiting approval", why=reason)
        self.spawn(run)
        return True, run.to_json()

    async def _clean_up_ended(self, name: str) -> None:
        """A deploy of `name` that has ended (aborted, complete) may still clean up, its
        lock held: an aborted rollout's canaries wait out the bake, a promotion's old
        instances drain. A new deploy does not wait for that: the clean-up is done now,
        and the lock is free once it is (within CLEANUP_WAIT)."""
        active = self.active.get(name)
        if active is None or not active.phase.terminal:
            return
        self.executor.feed(active, CleanUpNow())
        await wait_for_event(active.ended, CLEANUP_WAIT)

    def _deployable(self, name: str, version: str) -> tuple[Release, Service]:
        """The release to deploy and the config it was made with; _Refused if none."""
        try:
            release = self.releases.get(name, version)
            spec = service_from_config(release.config)
        except ReleaseError as exc:
            raise _Refused(str(exc)) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise _Refused(f"its config is unreadable ({exc})") from None
        if release.status is ReleaseStatus.LIVE:
            raise _Refused(f"{version} is already live for {name} in {self.env}")
        return release, spec

    async def _lock(
        self, name: str, what: str, who: str, version: str, reason: str, body: dict[str, Any]
    ) -> ServiceLock:
        """The service's lock, waited for up to the request's `lock_wait` (audited as it
        begins); _Refused, or _Withdrawn when the client goes away while it waits."""
        lock = ServiceLock(self.state_dir, self.env, name, what, who, version, reason)
        wait = float(body.get("lock_wait") or 0.0)
        try:
            lock.acquire()
        except Locked as exc:
            if wait <= 0 or exc.info.stale:
                raise _Refused(str(exc)) from None
            target = f"{self.stack.name}/{self.env}/{name} {version}"
            self.audit.record(who, what, target, f"waiting up to {wait:g}s: {exc}", why=reason)
            await self._wait_for(lock, wait)
        if self.stopping:
            lock.release()
            raise _Refused(STOPPING)
        return lock

    async def _wait_for(self, lock: ServiceLock, wait: float) -> None:
        """Until `lock` is taken, within `wait` seconds, unless the client goes away."""
        waiting = asyncio.ensure_future(lock.acquire_async(wait))
        gone = http.client_gone()
        if gone is not None:
            watcher = asyncio.ensure_future(gone.wait())
            await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
            watcher.cancel()
            if gone.is_set():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Locked):
                    await waiting
                lock.release()  # taken in the same moment: let go
                raise _Withdrawn(WITHDRAWN)
        try:
            await waiting
        except Locked as exc:
            raise _Refused(str(exc)) from None

    async def approve(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """The second approval of a deploy awaiting one."""
        run = self.runs.get(str(body.get("id")))
        if run is None or run.phase is not Phase.AWAITING_APPROVAL:
            waiting = [r.id for r in self.runs.values() if r.phase is Phase.AWAITING_APPROVAL]
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
        self.executor.feed(run, Approved(who))
        return True, run.to_json()

    def control(self, service: str, what: str, who: str, why: str = "") -> tuple[bool, str]:
        """ABORT, PAUSE or RESUME the rollout of `service` (rules and the CLI)."""
        run = self.active.get(service)
        if run is None or run.kind != "deploy" or run.phase.terminal or run.machine.promoted:
            return False, f"no rollout of {service} is in progress"
        by = f"{who}: {why}" if why else who
        if what == "abort":
            self.executor.feed(run, Abort(f"aborted by {by}"))
        elif what == "pause":
            self.executor.feed(run, Pause(by))
        elif what == "resume":
            if run.machine.paused_by is None:
                return False, f"the rollout of {service} is not paused"
            self.executor.feed(run, Resume(by))
        else:
            return False, f"unknown control {what!r}; abort, pause or resume"
        target = f"{self.stack.name}/{self.env}/{service} {run.version}"
        self.audit.record(who, f"rollout {what}", target, "ok", why=why)
        return True, f"{what} of the rollout of {run.version} ({run.id}) asked for"

    async def rollback(self, body: dict[str, Any], who: str) -> tuple[bool, dict[str, Any]]:
        """Roll a service back (the CLI and the ROLLBACK action): traffic first."""
        name = body.get("service")
        if not isinstance(name, str) or name not in self.platform.services():
            known = ", ".join(self.platform.services())
            return False, {"error": f"unknown service {name!r}; services: {known}"}
        reason = str(body.get("reason") or "")
        busy = await self._preempt(name, body, who, reason)
        if busy is not None:
            return busy
        target = f"{self.stack.name}/{self.env}/{name}"
        try:
            live, goal = self._rollback_releases(name, body.get("to"))
            target = f"{target} {goal.version}"
            if not body.get("rule") and (refused := self._rollback_refusal(body, who)):
                raise _Refused(refused)
            lock = await self._lock(name, "rollback", who, goal.version, reason, body)
            forced = await self._schema_check(goal, live, lock, bool(body.get("force")))
        except _Refused as exc:
            return self._refuse(who, "rollback", target, str(exc))
        machine = Rollback(name, goal.version, live.version, service_from_config(goal.config))
        run = self._new_run(machine, goal, who, reason, lock)
        if forced:
            self.executor.line(run, forced)
            self.audit.record(who, "rollback force", target, "ok", why=forced)
        self.executor.begin(run)
        self.spawn(run)
        return True, run.to_json()

    def _rollback_releases(self, name: str, to: object) -> tuple[Release, Release]:
        """The live release and the one to go back to; _Refused."""
        live = self._live(name)
        if live is None:
            raise _Refused(
                f"{name} has no live release in {self.env}: nothing to roll back (a rollback "
                "goes back from a deployed release)"
            )
        try:
            return live, self._target(name, live, to)
        except ReleaseError as exc:
            raise _Refused(str(exc)) from None

    async def _schema_check(
        self, goal: Release, live: Release, lock: ServiceLock, force: bool
    ) -> str:
        """The schema check (the lock released when it refuses): "" when it passed, what
        was forced across when `force`."""
        try:
            refusal = await self._schema_refusal(goal, live)
        except _Unreadable as exc:  # the revision cannot be read: unsafe unless forced
            refusal = str(exc)
            if not force:
                lock.release()
                raise _Refused(f"{exc}; --force skips the check") from None
        if refusal is None:
            return ""
        if not force:
            lock.release()
            raise _Refused(refusal)
        return f"forced across the schema check: {refusal}"

    def _rollback_refusal(self, body: dict[str, Any], who: str) -> str | None:
        """Why `who` may not roll back here (not asked by a rule), or None."""
        approve = bool(body.get("approve"))
        decision = first_approval(self.stack.environment(self.env), who, approve)
        # An approver rolls back alone even where deploys need two people; a request
        # from someone else (waiting, without --approve) is not enough.
        if decision.allowed or (decision.waiting and approve):
            return None
        if decision.waiting:
            environment = self.stack.environment(self.env)
            return (
                f"{self.env} requires approval: a rollback needs --approve from one of "
                f"its approvers ({', '.join(environment.approvers)})"
            )
        return decision.reason

    async def _preempt(
        self, name: str, body: dict[str, Any], who: str, reason: str
    ) -> tuple[bool, dict[str, Any]] | None:
        """A deploy or rollback of `name` in progress: a rollout is aborted (the rollback
        asks for it, traffic first), a finishing one waited for; None when none is left."""
        active = self.active.get(name)
        if active is not None and active.machine.promoted:
            # Promoted, its old instances draining: a moment, and then it is done.
            wait = RULE_LOCK_WAIT if body.get("rule") else float(body.get("lock_wait") or 0.0)
            await wait_for_event(active.ended, wait)
            active = self.active.get(name)
        if active is not None and active.kind == "deploy" and not active.machine.promoted:
            if active.phase is Phase.AWAITING_APPROVAL:
                return False, {"error": f"the deploy {active.id} of {name} has not started"}
            if active.phase in (Phase.PROMOTING, Phase.REPLACING):
                # Too late for an abort: the new release is taking all the traffic. Its
                # end is waited for, and the rollback goes back from it.
                await wait_for_event(active.ended, PREEMPT_WAIT)
                if (still := self.active.get(name)) is None:
                    return None
                return False, {"error": f"{still.kind} {still.id} of {name} is {still.state}"}
            # A rollback pre-empts a rollout: the stable release still runs, at full size.
            asked = f"rollback asked for by {who}" + (f": {reason}" if reason else "")
            self.executor.feed(active, Abort(asked))
            await self._traffic_back(active, self.clock() + PREEMPT_WAIT)
            return True, active.to_json()
        if active is not None:
            return False, {"error": f"{active.kind} {active.id} of {name} is in progress"}
        return None

    async def _traffic_back(self, run: DeployRun, deadline: float) -> None:
        """Until the aborted rollout's traffic is back on stable, or `deadline`."""
        while not run.phase.terminal and run.machine.restored_at is None:
            left = deadline - self.clock()
            if left <= 0:
                return
            run.progress.clear()
            await wait_for_event(run.progress, left)

    def status(self, deploy_id: str) -> dict[str, Any] | None:
        run = self.runs.get(deploy_id)
        return run.to_json() if run is not None else read_run(self.state_dir, deploy_id)

    # --- releases ---------------------------------------------------------------------

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
        ok, output = await self.executor.run_task(spec, live, "schema_version", command)
        if not ok:
            raise _Unreadable(f"cannot read the schema revision ({command}): {output}")
        current = read_revision(output)
        return rollback_refusal(goal, current, self.releases.list(goal.service), live)

    def _live(self, name: str) -> Release | None:
        return next((r for r in self.releases.list(name) if r.status is ReleaseStatus.LIVE), None)

    # --- runs -------------------------------------------------------------------------

    def _refuse(self, who: str, what: str, target: str, why: str) -> tuple[bool, dict[str, Any]]:
        outcome = "withdrawn" if why == WITHDRAWN else "refused"
        self.audit.record(who, what, target, f"{outcome}: {why}")
        return False, {"error": why}

    def _new_run(
        self,
        machine: Rollout | Rollback,
        release: Release,
        who: str,
        reason: str,
        lock: ServiceLock | None,
    ) -> DeployRun:
        run = DeployRun(
            id=f"{machine.kind[0]}{secrets.token_hex(4)}",
            service=machine.service,
            env=self.env,
            who=who,
            reason=reason,
            created=self.clock(),
            machine=machine,
            release=release,
            lock=lock,
        )
        self.runs[run.id] = run
        self.active[run.service] = run
        return run

    def spawn(self, run: DeployRun) -> None:
        """The run's task: its commands carried out until it ends, then its lock released."""
        self._start_task(self._guarded(run))
        self.executor.save(run)

    @staticmethod
    def _undecided(run: DeployRun) -> bool:
        """A rollout whose outcome nothing has decided yet: neither promoted nor being
        aborted (those keep their outcome when the agent stops)."""
        machine = run.machine
        return (
            run.kind == "deploy"
            and isinstance(machine, Rollout)
            and not machine.promoted
            and not run.phase.terminal
            and run.phase is not Phase.ABORTING
        )

    def _stopped_by_down(self, run: DeployRun) -> None:
        """The stack stops (`down`) while the rollout runs: the user's choice, not a
        failure of the release. The rollout ends aborted — its canaries stop with the
        stack, and the next `up` runs the stable release — and the release stays as it
        was, free to be deployed again. Audited outside the deploy events' vocabulary,
        so DORA counts it neither as a deployment nor as a failed one."""
        self.executor.finish(run, Phase.ABORTED, DOWN)
        target = f"{self.stack.name}/{self.env}/{run.service} {run.version}"
        self.audit.record("agent", "deploy", target, "aborted", why=DOWN, service=run.service)

    def _start_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, run: DeployRun) -> None:
        executor = self.executor
        try:
            await executor.drive(run)
        except asyncio.CancelledError:
            if run.phase is Phase.AWAITING_APPROVAL:
                # Nothing started: the next agent takes the request up again.
                executor.line(run, "the agent stopped: the next one keeps awaiting approval")
            elif self.stopping and self._undecided(run):
                self._stopped_by_down(run)
            else:
                executor.interrupt(run, "the agent stopped during the " + run.kind)
            raise
        except Exception as exc:  # recorded, never lost
            with contextlib.suppress(ReleaseError, OSError):
                executor.interrupt(run, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if run.lock is not None:
                run.lock.release()
            if self.active.get(run.service) is run:
                del self.active[run.service]
            if not run.phase.terminal and run.phase is not Phase.AWAITING_APPROVAL:
                executor.finish(run, Phase.FAILED, run.machine.error or "ended without an outcome")
            executor.save(run)
            run.ended.set()

"""What an agent that starts does with the deploys a previous agent left unfinished.

A run that had started ends here, failed: its canaries are not adopted (the new agent
stops them), and a release it was rolling out is marked failed with a ROLLOUT_ABORT event,
so that DORA counts it. A deploy still awaiting approval had started nothing: it is kept,
and the deployer takes it up again (`Deployer.resume_requests`), its lock taken back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlifier.agent.deploy_record import DeployRun
from sqlifier.agent.files import read_run
from sqlifier.delivery import events
from sqlifier.delivery.locks import Locked, ServiceLock, force_release
from sqlifier.delivery.releases import ReleaseError, Releases, ReleaseStatus
from sqlifier.delivery.rollout import Phase
from sqlifier.errors import UserError
from sqlifier.store.audit import AuditLog

if TYPE_CHECKING:
    from sqlifier.agent.deployer import Deployer

__all__ = ["close_interrupted", "close_record", "resume", "take_back"]

EXPIRED = "no approver approved it in time"  # as a deploy awaiting approval expires


def close_interrupted(
    state_dir: Path,
    releases: Releases,
    audit: AuditLog,
    stack: str,
    env: str,
    clock: Callable[[], float],
) -> list[dict[str, Any]]:
    """Close the runs a previous agent was carrying out; the records of the deploys it left
    awaiting approval."""
    waiting = []
    for path in sorted((state_dir / "deploys").glob("*.json")):
        record = read_run(state_dir, path.stem)
        if record is None or record.get("done"):
            continue
        if record.get("kind") == "deploy" and record.get("state") == "awaiting approval":
            waiting.append(record)  # nothing started: it can wait on
            continue
        why = f"interrupted: the agent stopped during this {record.get('kind', 'deploy')}"
        close_record(state_dir, record, "failed", why, clock())
        if record.get("kind") != "deploy":
            continue
        with contextlib.suppress(ReleaseError, KeyError, TypeError):
            release = releases.get(str(record["service"]), str(record["version"]))
            if release.status is ReleaseStatus.BUILT:
                releases.mark(
                    release.service, release.version, ReleaseStatus.FAILED,
                    failed_at=clock(), failed_reason=why,
                )  # fmt: skip
                events.deploy_event(
                    audit, events.ROLLOUT_ABORT, who="agent", stack=stack, env=env,
                    service=release.service, version=release.version, why=why,
                    commit=release.commit, commit_time=release.commit_time,
                    deploy_id=str(record["id"]),
                )  # fmt: skip
    return waiting


def close_record(state_dir: Path, record: dict[str, Any], state: str, why: str, now: float) -> None:
    """End a run the agent does not carry out, in its record."""
    record.update(state=state, done=True, error=why, finished=now)
    record.setdefault("lines", []).append([now, f"{state}: {why}"])
    with contextlib.suppress(OSError):
        path = state_dir / "deploys" / f"{record['id']}.json"
        path.write_text(json.dumps(record, indent=2))


def take_back(lock: ServiceLock, state_dir: Path, env: str, service: str, audit: AuditLog) -> None:
    """Take a deploy's lock again. A previous agent that was killed left it held by its
    dead process: that stale lock, for this same deploy, is broken (audited) first."""
    try:
        lock.acquire()
    except Locked as exc:
        info = exc.info
        if not (info.stale and info.user == lock.user and info.version == lock.version):
            raise
        force_release(state_dir, env, service, "agent", audit)
        lock.acquire()


def resume(deployer: Deployer, record: dict[str, Any]) -> None:
    """A deploy a previous agent left awaiting approval waits on, its lock taken back;
    it expires, or fails when it cannot wait on (its release or service gone)."""
    now = deployer.clock()
    try:
        release = deployer.releases.get(str(record["service"]), str(record["version"]))
        run = DeployRun.awaiting(record, release)
    except ReleaseError as exc:  # no run without its release: closed in its record
        expires = float(record.get("approval_expires") or 0.0) or None
        if expires is not None and expires <= now:
            close_record(deployer.state_dir, record, "expired", EXPIRED, now)
            target = f"{deployer.stack.name}/{deployer.env}/{record['service']} {record['version']}"
            reason = str(record.get("reason") or "")
            deployer.audit.record("agent", "deploy", target, "expired", why=reason)
        else:
            why = f"it cannot wait on after the agent restarted: {exc}"
            close_record(deployer.state_dir, record, "failed", why, now)
        return
    except (KeyError, TypeError, ValueError) as exc:
        deployer.say(f"deploy {record.get('id')}: its record is unreadable ({exc})")
        return
    deployer.runs[run.id] = run
    if (run.machine.approval_expires or 0.0) <= now:
        deployer.executor.begin(run)  # it expires, audited
        return
    lock = ServiceLock(
        deployer.state_dir, deployer.env, run.service, "deploy", run.who, run.version, run.reason
    )
    try:
        if run.service not in deployer.platform.services():
            why = f"{run.service} is no longer in the stack file"
        elif release.status is ReleaseStatus.LIVE:
            why = f"{run.version} is already live for {run.service}"
        else:
            why = ""
            take_back(lock, deployer.state_dir, deployer.env, run.service, deployer.audit)
    except UserError as exc:  # a lock
        why = str(exc)
    if why:
        why = f"it cannot wait on after the agent restarted: {why}"
        deployer.executor.finish(run, Phase.FAILED, why)
        return
    run.lock = lock
    deployer.active[run.service] = run
    deployer.executor.begin(run)  # "the agent restarted: still awaiting approval"
    deployer.spawn(run)

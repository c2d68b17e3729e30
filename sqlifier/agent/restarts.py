"""What an agent that starts does with the deploys a previous agent left unfinished.

A run that had started ends here, failed: its canaries are not adopted (the new agent
stops them), and a release it was rolling out is marked failed with a ROLLOUT_ABORT event,
so that DORA counts it. A deploy still awaiting approval had started nothing: it is kept,
and the deployer takes it up again (`reopen`, then `Deployer.resume_requests`), its lock
taken back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from sqlifier.agent.deploy_record import DeployRun
from sqlifier.agent.files import read_run
from sqlifier.delivery import events
from sqlifier.delivery.locks import Locked, ServiceLock, force_release
from sqlifier.delivery.releases import ReleaseError, Releases, ReleaseStatus
from sqlifier.errors import UserError
from sqlifier.store.audit import AuditLog

__all__ = ["close_interrupted", "close_record", "reopen", "take_back"]

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


def reopen(
    record: dict[str, Any],
    releases: Releases,
    services: Collection[str],
    state_dir: Path,
    target: str,
    audit: AuditLog,
    now: float,
    say: Callable[[str], None],
) -> tuple[DeployRun, str] | None:
    """The run of a deploy a previous agent left awaiting approval, and why it cannot wait
    on ("" when it can: its lock taken back, or it expires now and holds none); None when
    there is no run to make (closed in its record, or unreadable). `target` is
    "stack/env"."""
    env = target.split("/", 1)[1]
    try:
        release = releases.get(str(record["service"]), str(record["version"]))
        run = DeployRun.awaiting(record, release)
    except ReleaseError as exc:  # no run without its release: closed in its record
        expires = float(record.get("approval_expires") or 0.0) or None
        if expires is not None and expires <= now:
            close_record(state_dir, record, "expired", EXPIRED, now)
            what = f"{target}/{record['service']} {record['version']}"
            audit.record("agent", "deploy", what, "expired", why=str(record.get("reason") or ""))
        else:
            why = f"it cannot wait on after the agent restarted: {exc}"
            close_record(state_dir, record, "failed", why, now)
        return None
    except (KeyError, TypeError, ValueError) as exc:
        say(f"deploy {record.get('id')}: its record is unreadable ({exc})")
        return None
    if (run.machine.approval_expires or 0.0) <= now:
        return run, ""  # it expires, audited, as it begins
    lock = ServiceLock(state_dir, env, run.service, "deploy", run.who, run.version, run.reason)
    try:
        if run.service not in services:
            why = f"{run.service} is no longer in the stack file"
        elif release.status is ReleaseStatus.LIVE:
            why = f"{run.version} is already live for {run.service}"
        else:
            why = ""
            take_back(lock, state_dir, env, run.service, audit)
            run.lock = lock
    except UserError as exc:  # a lock
        why = str(exc)
    return run, why and f"it cannot wait on after the agent restarted: {why}"

"""What an agent that starts does with the deploys a previous agent left unfinished.

An agent that dies (killed, a crash) ends no run by itself: the next agent takes each run
up again where it was (`Deployer.load_live` and `resume_requests`).

- A deploy awaiting approval had started nothing: it waits on (`reopen`), its lock taken
  back.
- A rollout goes on at its step (`readopt`): its canaries are adopted as the stack starts,
  the router keeps their share, and the machine is told `Readopted` (judging starts again
  from there). Where it cannot go on as it was — its canaries are gone, a migration or a
  replacement was cut off — the machine moves all traffic to stable first and pauses for
  `rollout resume` or `rollout abort`.
- A rollback starts again (the live release still takes the traffic).
- A run whose outcome was reached but not written (promoted, rolled back: its release is
  live) is closed with that outcome; one that was aborting is closed aborted (its canaries
  are not adopted, so all traffic is on stable).

A run that had ended still holds its lock while it cleans up (an aborted rollout's canaries
stopping after the bake, a promotion's old instances draining): killed then, the agent
left the lock stale; that lock, of that same run, is released here.
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
from sqlifier.delivery.locks import Locked, ServiceLock, force_release, read_lock
from sqlifier.delivery.releases import ReleaseError, Releases, ReleaseStatus
from sqlifier.errors import UserError
from sqlifier.store.audit import AuditLog

__all__ = ["close_interrupted", "close_record", "readopt", "reopen", "take_back"]

EXPIRED = "no approver approved it in time"  # as a deploy awaiting approval expires


def close_interrupted(
    state_dir: Path,
    releases: Releases,
    audit: AuditLog,
    stack: str,
    env: str,
    clock: Callable[[], float],
) -> list[dict[str, Any]]:
    """The records of the runs a previous agent left unfinished that the next one takes up
    again (awaiting approval, or under way); the others closed with their outcome."""
    again = []
    for path in sorted((state_dir / "deploys").glob("*.json")):
        record = read_run(state_dir, path.stem)
        if record is None:
            continue
        if record.get("done"):
            _release_left_lock(state_dir, env, record, audit)
            continue
        if _close_reached(state_dir, releases, audit, stack, env, record, clock()):
            continue
        again.append(record)
    return again


def _close_reached(
    state_dir: Path,
    releases: Releases,
    audit: AuditLog,
    stack: str,
    env: str,
    record: dict[str, Any],
    now: float,
) -> bool:
    """Close a run whose outcome was reached before the agent died (True); False for one
    to take up again."""
    state, kind = record.get("state"), record.get("kind")
    try:
        release = releases.get(str(record["service"]), str(record["version"]))
    except (ReleaseError, KeyError, TypeError):
        return False  # reopen / readopt say why it cannot go on
    if release.status is ReleaseStatus.LIVE and state != "awaiting approval":
        outcome = "complete" if kind == "deploy" else "rolled back"
        record.update(state=outcome, done=True, succeeded=True, finished=now, weight=100.0)
        _write(state_dir, record, f"{outcome}: the agent restarted after it was live")
        _release_left_lock(state_dir, env, record, audit)
        return True
    if kind != "deploy" or state != "aborting":
        return False
    why = str(record.get("error") or "aborted")
    why = f"{why}; the agent restarted while moving traffic back: all traffic is on stable"
    close_record(state_dir, record, "aborted", why, now)
    _release_left_lock(state_dir, env, record, audit)
    if release.status is ReleaseStatus.BUILT:
        releases.mark(
            release.service, release.version, ReleaseStatus.FAILED,
            failed_at=now, failed_reason=why,
        )  # fmt: skip
        events.deploy_event(
            audit, events.ROLLOUT_ABORT, who="agent", stack=stack, env=env,
            service=release.service, version=release.version, why=why,
            commit=release.commit, commit_time=release.commit_time,
            deploy_id=str(record["id"]),
        )  # fmt: skip
    return True


def _release_left_lock(state_dir: Path, env: str, record: dict[str, Any], audit: AuditLog) -> None:
    """The stale lock a killed agent left held for this run, which had ended: released."""
    with contextlib.suppress(KeyError, TypeError, ValueError, OSError, UserError):
        service = str(record["service"])
        info = read_lock(state_dir, env, service)
        if info is None or not info.stale:
            return
        if (info.user, info.version, info.what) == (
            str(record["who"]),
            str(record["version"]),
            str(record["kind"]),
        ):
            force_release(state_dir, env, service, "agent", audit)


def _write(state_dir: Path, record: dict[str, Any], line: str) -> None:
    record.setdefault("lines", []).append([record.get("finished"), line])
    with contextlib.suppress(OSError):
        path = state_dir / "deploys" / f"{record['id']}.json"
        path.write_text(json.dumps(record, indent=2))


def close_record(state_dir: Path, record: dict[str, Any], state: str, why: str, now: float) -> None:
    """End a run the agent does not carry out, in its record."""
    record.update(state=state, done=True, error=why, finished=now)
    _write(state_dir, record, f"{state}: {why}")


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


def readopt(
    record: dict[str, Any], releases: Releases, services: Collection[str]
) -> DeployRun | str:
    """The run of a deploy or rollback a previous agent was carrying out when it died,
    restored from its record, for `Readopted`; or why it cannot be (then the record is
    closed failed by the caller: the release or the service is gone, or the record
    cannot be read)."""
    try:
        service, version = str(record["service"]), str(record["version"])
        if service not in services:
            return f"{service} is no longer in the stack file"
        release = releases.get(service, version)
        return DeployRun.resumed(record, release)
    except ReleaseError as exc:
        return str(exc)
    except (KeyError, TypeError, ValueError) as exc:
        return f"its record is unreadable ({type(exc).__name__}: {exc})"

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
from typing import Any

from sqlifier.agent.files import read_run
from sqlifier.delivery import events
from sqlifier.delivery.locks import Locked, ServiceLock, force_release
from sqlifier.delivery.releases import ReleaseError, Releases, ReleaseStatus
from sqlifier.store.audit import AuditLog

__all__ = ["close_interrupted", "close_record", "take_back"]


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

"""Deploy events: what deploys and rollbacks write to the audit log, and reading it back.

The audit log is the record DORA figures are computed from (`dora.py`), so deploys write
their steps in one vocabulary. Every event is an audit entry with

- `what`: one of the constants below;
- `target`: `"<stack>/<env>/<service> <version>"`, `service`: the service;
- `result`: `"ok"` when the step was carried out (`"ok: ..."` is read the same), else
  `"failed: ..."` or `"refused: ..."`; the reason for an abort or a rollback goes in `why`;
- `details` (JSON): `version`, `commit` and `commit_time` (the release's git commit and
  its committer time, Unix seconds; null for a release made from a plain folder),
  `deploy_id` (the same on every event of one deploy or rollback), and the step's own fields.

The steps, in order:

    DEPLOY_START       a deploy of `version` begins (after plan and approval)
    ROLLOUT_STEP       a canary step was judged; fields such as `weight`, `verdict`
    ROLLOUT_COMPLETE   all traffic is on `version`: the deployment succeeded
    ROLLOUT_ABORT      the rollout stopped and traffic went back to the stable release;
                       `detected_at`: when the first failing signal was seen,
                       `restored_at`: when traffic was back on stable (both Unix seconds;
                       the abort's own time stands in for either when absent)
    ROLLBACK           a rollback begins: `version` is the release being restored,
                       `from_version` the release rolled back from
    ROLLBACK_COMPLETE  traffic is back on `version` (same `deploy_id` as its ROLLBACK)

Each deploy ends with exactly one ROLLOUT_COMPLETE or one ROLLOUT_ABORT.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlifier.store.audit import AuditEntry, AuditLog

__all__ = [
    "DEPLOY_EVENTS",
    "DEPLOY_START",
    "ROLLBACK",
    "ROLLBACK_COMPLETE",
    "ROLLOUT_ABORT",
    "ROLLOUT_COMPLETE",
    "ROLLOUT_STEP",
    "DeployEvent",
    "deploy_event",
    "read_events",
]

DEPLOY_START = "deploy start"
ROLLOUT_STEP = "rollout step"
ROLLOUT_COMPLETE = "rollout complete"
ROLLOUT_ABORT = "rollout abort"
ROLLBACK = "rollback"
ROLLBACK_COMPLETE = "rollback complete"
DEPLOY_EVENTS = frozenset(
    {DEPLOY_START, ROLLOUT_STEP, ROLLOUT_COMPLETE, ROLLOUT_ABORT, ROLLBACK, ROLLBACK_COMPLETE}
)

_TARGET = re.compile(r"([^/\s]+)/([^/\s]+)/([^/\s]+) (\S+)\Z")


@dataclass(frozen=True, slots=True)
class DeployEvent:
    """A deploy event read from the audit log; a field its details lack or hold in the
    wrong type is None."""

    id: int  # the audit entry's
    at: float
    what: str
    who: str
    stack: str
    env: str
    service: str
    version: str
    result: str
    why: str
    commit: str | None
    commit_time: float | None
    deploy_id: str | None
    from_version: str | None  # ROLLBACK: the release rolled back from
    detected_at: float | None  # ROLLOUT_ABORT: the first failing signal
    restored_at: float | None  # ROLLOUT_ABORT: traffic back on the stable release
    details: Mapping[str, Any]  # all of them, as recorded

    @property
    def ok(self) -> bool:
        """Was the step carried out?"""
        return self.result == "ok" or self.result.startswith("ok:")


def deploy_event(
    audit: AuditLog,
    what: str,
    *,
    who: str,
    stack: str,
    env: str,
    service: str,
    version: str,
    result: str = "ok",
    why: str = "",
    commit: str | None = None,
    commit_time: float | None = None,
    deploy_id: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Record one step of a deploy or rollback; ValueError for a `what` not in the vocabulary."""
    if what not in DEPLOY_EVENTS:
        known = ", ".join(sorted(DEPLOY_EVENTS))
        raise ValueError(f"{what!r} is not a deploy event (one of: {known})")
    fields = {
        "version": version,
        "commit": commit,
        "commit_time": commit_time,
        "deploy_id": deploy_id,
        **details,
    }
    target = f"{stack}/{env}/{service} {version}"
    return audit.record(who, what, target, result, why=why, details=fields, service=service)


def read_events(entries: Iterable[AuditEntry]) -> list[DeployEvent]:
    """The deploy events among `entries`, in their order; other entries are skipped."""
    events = []
    for entry in entries:
        event = _event(entry)
        if event is not None:
            events.append(event)
    return events


def _event(entry: AuditEntry) -> DeployEvent | None:
    match = _TARGET.match(entry.target)
    if entry.what not in DEPLOY_EVENTS or match is None:
        return None
    stack, env, service, version = match.groups()
    # Details are JSON written by any version of sqlifier (or by hand): trust no shape.
    details: Mapping[str, Any] = entry.details if isinstance(entry.details, Mapping) else {}
    return DeployEvent(
        id=entry.id,
        at=entry.at,
        what=entry.what,
        who=entry.who,
        stack=stack,
        env=env,
        service=service,
        version=version,
        result=entry.result,
        why=entry.why,
        commit=_text(details.get("commit")),
        commit_time=_time(details.get("commit_time")),
        deploy_id=_text(details.get("deploy_id")),
        from_version=_text(details.get("from_version")),
        detected_at=_time(details.get("detected_at")),
        restored_at=_time(details.get("restored_at")),
        details=details,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> float | None:
    # bool is an int; NaN and infinity are stored as text by the audit log.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None

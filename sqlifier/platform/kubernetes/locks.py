"""Locks per service and environment on a cluster: one coordination.k8s.io/v1 Lease each.

The same lock as locally (delivery/locks.py), kept by the API server instead of a file:
never global, one per service of an environment, saying who holds it, since when and why.
The Lease `sqlifier-lock-<service>` in the environment's namespace holds

    spec.holderIdentity        "alice@host/4242-1f2e3d4c": this acquisition, unique
    spec.acquireTime           since when (`since`)
    spec.renewTime             the holder's last sign of life
    spec.leaseDurationSeconds  how long after renewTime the lock still counts (15 s)
    annotations sqlifier.dev/  user, what, version, reason, host, pid: as a local lock's record

Taking it is optimistic: create the Lease (409 AlreadyExists: someone was first), or
replace an expired one with the resourceVersion it was read at (409 Conflict: someone
else replaced it first). Exactly one of two racing processes wins, and the loser is told
who won. The holder renews it every `RENEW_EVERY` seconds while it works; a holder that
dies stops renewing, and `LOCK_SECONDS` after its last renewal the lock is **stale**.

Where this departs from a local lock, and why: a stale Lease is taken over by the next
acquire (the loser of the old holder's death is told whom it replaced), where a stale
local lock waits for `sqlifier lock release --force`. On a cluster the next holder is
usually the other agent, which must continue a deploy its dead peer was carrying out;
locally a stale lock means a deploy died half-way on one machine and someone should look.

The Leases carry the stack's and environment's labels but not `app.kubernetes.io/managed-
by`, so `up`'s prune and `down` (which remove only what holds it) leave them alone.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlifier.delivery.locks import Locked, LockInfo
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster, Resource
from sqlifier.platform.kubernetes.errors import ClusterError

if TYPE_CHECKING:
    from sqlifier.stack.model import Stack

__all__ = [
    "LOCK_SECONDS",
    "RENEW_EVERY",
    "LeaseLock",
    "LockLost",
    "break_lock",
    "describe",
    "environment_locks",
    "force_release",
    "held_locks",
    "lease_resource",
    "micro_time",
    "open_environment",
    "parse_time",
    "read_lock",
    "record_labels",
]

LOCK_SECONDS = 15  # a lock not renewed for this long is stale (and taken over)
RENEW_EVERY = 5.0  # how often its holder renews it: three chances before it goes stale
PREFIX = "sqlifier-lock-"
ANNOTATION = "sqlifier.dev/"
LABEL_RECORD = "sqlifier.dev/record"  # what a record object is: lock, leader, state, audit
_HOST = socket.gethostname()


def lease_resource(cluster: Cluster) -> Resource:
    return cluster.resource("coordination.k8s.io/v1", "Lease")


def record_labels(stack: str, env: str, record: str) -> dict[str, str]:
    """The labels of sqlifier's records in the cluster (locks, leader, state, audit):
    the stack's and environment's, never `managed-by`, which `up` prunes and `down`
    removes."""
    return {
        "app.kubernetes.io/part-of": stack,
        "sqlifier.dev/stack": stack,
        "sqlifier.dev/env": env,
        LABEL_RECORD: record,
    }


def micro_time(t: float) -> str:
    """A time as the API's MicroTime: 2026-12-07T16:03:21.123456Z."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: object) -> float | None:
    """A MicroTime (or an RFC 3339 time) as seconds; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class LockLost(UserError):
    """A lock this process held was taken by someone else (it expired, or was broken by
    `lock release --force`): whatever it protected must stop."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """A Lease as read: its record, when it expires, and what replacing it needs."""

    info: LockInfo
    holder: str
    expires: float
    resource_version: str
    uid: str
    transitions: int
    lease: dict[str, Any]


class LeaseLock:
    """The lock of one service in one environment, held as a Lease.

    `acquire()` takes it (a stale one included: the record it replaced is returned) or
    raises Locked naming its holder; `renew()` while working; `release()` when done.
    """

    def __init__(
        self,
        cluster: Cluster,
        stack: str,
        env: str,
        service: str,
        what: str,
        user: str,
        version: str | None = None,
        reason: str = "",
        *,
        duration: int = LOCK_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.env = env
        self.service = service
        self.what = what
        self.user = user
        self.version = version
        self.reason = reason
        self.duration = duration
        self.clock = clock
        self.name = lease_name(service)
        self.identity = f"{user}@{_HOST}/{os.getpid()}-{secrets.token_hex(4)}"
        self.info: LockInfo | None = None  # our record, while held
        self._version = ""  # the Lease's resourceVersion after our last write

    def acquire(self) -> LockInfo | None:
        """Take the lock: None when it was free, the stale record replaced when it was
        stale. Locked (naming the holder) when someone holds it; exactly one of two
        processes racing for it wins."""
        if self.info is not None:
            raise RuntimeError(f"{self.service} in {self.env}: this lock is held already")
        now = self.clock()
        seen = _get(self.cluster, self.name, self.env, now)
        if seen is None:
            self._create(now)
            return None
        if now < seen.expires:
            raise Locked(seen.info)
        body = self._lease(now, seen.transitions + 1)
        body["metadata"]["resourceVersion"] = seen.resource_version
        self._put(body, lost_to_someone=True)
        return replace(seen.info, stale=True)

    def renew(self) -> None:
        """Tell the cluster the holder still works; LockLost when the Lease is not ours
        any more (it expired and was taken, or was broken by hand)."""
        if self.info is None:
            raise RuntimeError(f"{self.service} in {self.env}: this lock is not held")
        now = self.clock()
        seen = _get(self.cluster, self.name, self.env, now)
        if seen is None or seen.holder != self.identity:
            self.info = None
            raise LockLost(self._lost(seen))
        body = seen.lease
        body["spec"]["renewTime"] = micro_time(now)
        try:
            self._version = _replace(self.cluster, self.name, body)["metadata"]["resourceVersion"]
        except ClusterError as e:
            if e.status != 409:
                raise
            self.info = None
            raise LockLost(self._lost(_get(self.cluster, self.name, self.env, now))) from None

    def release(self) -> None:
        """Let go of the lock: delete the Lease if it is still ours (after a forced release
        it may be someone else's by now). Nothing when not held."""
        if self.info is None:
            return
        self.info = None
        seen = _get(self.cluster, self.name, self.env, self.clock())
        if seen is None or seen.holder != self.identity:
            return
        _delete(self.cluster, self.name, seen)

    def __enter__(self) -> LeaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- writing ----------------------------------------------------------------------

    def _lease(self, now: float, transitions: int) -> dict[str, Any]:
        annotations = {
            ANNOTATION + "user": self.user,
            ANNOTATION + "what": self.what,
            ANNOTATION + "reason": self.reason,
            ANNOTATION + "host": _HOST,
            ANNOTATION + "pid": str(os.getpid()),
        }
        if self.version is not None:
            annotations[ANNOTATION + "version"] = self.version
        labels = record_labels(self.stack, self.env, "lock")
        labels["sqlifier.dev/service"] = self.service
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "labels": labels, "annotations": annotations},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    def _create(self, now: float) -> None:
        resource = lease_resource(self.cluster)
        try:
            stored = self.cluster.request(
                "POST",
                resource.path(self.cluster.namespace),
                verb="create",
                what=self._what(),
                resource=resource,
                body=self._lease(now, 0),
            )
        except ClusterError as e:
            if e.status != 409:
                raise
            raise Locked(self._winner()) from None
        self._held(stored)

    def _put(self, body: dict[str, Any], *, lost_to_someone: bool) -> None:
        try:
            stored = _replace(self.cluster, self.name, body)
        except ClusterError as e:
            if e.status not in (404, 409) or not lost_to_someone:
                raise
            raise Locked(self._winner()) from None
        self._held(stored)

    def _held(self, stored: Mapping[str, Any]) -> None:
        self._version = stored["metadata"]["resourceVersion"]
        self.info = _info(stored, self.env, self.clock()).info

    def _winner(self) -> LockInfo:
        """The record of whoever won a race for the lock."""
        seen = _get(self.cluster, self.name, self.env, self.clock())
        if seen is None:  # won, then released at once: say who it was, roughly
            raise Locked(_blank(self.service, self.env, "another process", self.clock()))
        return seen.info

    def _lost(self, seen: _Seen | None) -> str:
        now = f"{seen.info.user} holds it now ({_purpose(seen.info)})" if seen else "it is free"
        return (
            f"the lock of {self.service} in {self.env} ({self._what()}) is no longer ours: "
            f"it expired or was broken by hand, and {now}; the {self.what} it protected stops"
        )

    def _what(self) -> str:
        return f"Lease {self.cluster.namespace}/{self.name}"


def lease_name(service: str) -> str:
    return PREFIX + service


def read_lock(cluster: Cluster, env: str, service: str, now: float) -> LockInfo | None:
    """Who holds the service's lock in `env` (stale or not), or None when it is free."""
    seen = _get(cluster, lease_name(service), env, now)
    return None if seen is None else seen.info


def held_locks(cluster: Cluster, stack: str, env: str, now: float) -> list[LockInfo]:
    """The locks held in `env` (stale ones included), by service name."""
    resource = lease_resource(cluster)
    selector = ",".join(f"{k}={v}" for k, v in record_labels(stack, env, "lock").items())
    answer = cluster.request(
        "GET",
        resource.path(cluster.namespace),
        verb="list",
        what=f"the locks of {stack} ({env})",
        resource=resource,
        query=[("labelSelector", selector)],
    )
    found = [_info(item, env, now).info for item in answer.get("items", [])]
    return sorted(found, key=lambda info: info.service)


def describe(info: LockInfo, env: str) -> str:
    """As a local lock describes itself, with what stale means for a Lease."""
    if not info.stale:
        return info.describe()
    live = replace(info, stale=False).describe()
    return (
        f"{live} — stale: not renewed for {LOCK_SECONDS} s, its holder has stopped; the "
        f"next deploy takes it over, or sqlifier lock release {info.service} --env {env} "
        "--force breaks it"
    )


def force_release(
    cluster: Cluster,
    env: str,
    service: str,
    now: float,
    record: Callable[[str, LockInfo | None], object],
    *,
    alive_ok: bool = False,
) -> LockInfo:
    """Break the service's lock (`sqlifier lock release S --force`); the record broken.

    `record(result, info)` audits each outcome. A lock still renewed is refused unless
    `alive_ok`: the deploy holding it goes on as if it still had it.
    """
    name = lease_name(service)
    seen = _get(cluster, name, env, now)
    if seen is None:
        record("refused: not locked", None)
        raise UserError(f"{service} in {env} is not locked")
    info = seen.info
    if not info.stale and not alive_ok:
        record(f"refused: {info.what} by {info.user}, renewed within {LOCK_SECONDS} s", info)
        raise UserError(
            f"{service} in {env} is {info.describe()}, and its holder renewed it within the "
            f"last {LOCK_SECONDS} s: let it finish or stop it; breaking a lock that is still "
            "renewed needs a second confirmation (--even-if-alive)"
        )
    try:
        _delete(cluster, name, seen)
    except ClusterError as e:
        if e.status not in (404, 409):
            raise
        record("refused: it changed while being broken", info)
        raise UserError(
            f"the lock of {service} in {env} changed while it was being broken (someone took "
            "or released it): look again with sqlifier lock list"
        ) from None
    state = "stale" if info.stale else "live"
    record(f"ok: broke the {state} lock of {info.user} ({_purpose(info)})", info)
    return info


# --- the API ------------------------------------------------------------------------------


def _raw(cluster: Cluster, name: str) -> dict[str, Any]:
    resource = lease_resource(cluster)
    answer: dict[str, Any] = cluster.request(
        "GET",
        resource.path(cluster.namespace, name),
        verb="get",
        what=f"Lease {cluster.namespace}/{name}",
        resource=resource,
    )
    return answer


def _get(cluster: Cluster, name: str, env: str, now: float) -> _Seen | None:
    try:
        lease = _raw(cluster, name)
    except ClusterError as e:
        if e.status == 404:
            return None
        raise
    return _info(lease, env, now)


def _replace(cluster: Cluster, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """PUT with the resourceVersion in `body`: 409 when someone wrote it since."""
    resource = lease_resource(cluster)
    answer: dict[str, Any] = cluster.request(
        "PUT",
        resource.path(cluster.namespace, name),
        verb="update",
        what=f"Lease {cluster.namespace}/{name}",
        resource=resource,
        body=body,
    )
    return answer


def _delete(cluster: Cluster, name: str, seen: _Seen) -> None:
    """Delete the Lease as it was read (409 when it changed since, 404 when gone)."""
    resource = lease_resource(cluster)
    cluster.request(
        "DELETE",
        resource.path(cluster.namespace, name),
        verb="delete",
        what=f"Lease {cluster.namespace}/{name}",
        resource=resource,
        body={
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": seen.uid, "resourceVersion": seen.resource_version},
        },
    )


def _info(lease: Mapping[str, Any], env: str, now: float) -> _Seen:
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    notes = meta.get("annotations") or {}
    service = (meta.get("labels") or {}).get("sqlifier.dev/service") or str(
        meta.get("name", "")
    ).removeprefix(PREFIX)
    holder = str(spec.get("holderIdentity") or "")
    since = parse_time(spec.get("acquireTime")) or 0.0
    renewed = parse_time(spec.get("renewTime")) or since
    expires = renewed + float(spec.get("leaseDurationSeconds") or LOCK_SECONDS)
    try:
        pid = int(notes.get(ANNOTATION + "pid", "0"))
    except ValueError:
        pid = 0
    info = LockInfo(
        service=service,
        env=env,
        user=notes.get(ANNOTATION + "user") or holder.partition("@")[0] or "?",
        pid=pid,
        started=since,
        since=since,
        what=notes.get(ANNOTATION + "what") or "lock",
        version=notes.get(ANNOTATION + "version"),
        reason=notes.get(ANNOTATION + "reason", ""),
        host=notes.get(ANNOTATION + "host", "?"),
        stale=now >= expires or not holder,
    )
    return _Seen(
        info,
        holder,
        expires,
        str(meta.get("resourceVersion", "")),
        str(meta.get("uid", "")),
        int(spec.get("leaseTransitions") or 0),
        dict(lease),
    )


def _blank(service: str, env: str, user: str, now: float) -> LockInfo:
    return LockInfo(service, env, user, 0, now, now, "lock", None, "", "?")


def _purpose(info: LockInfo) -> str:
    version = f" {info.version}" if info.version else ""
    reason = f": {info.reason}" if info.reason else ""
    return f"{info.what}{version}{reason}"


# --- for the CLI (`sqlifier lock list`, `lock release --force` on a cluster) ---------------


def open_environment(stack: Stack, env: str) -> Cluster:
    """A connection to the cluster of Kubernetes environment `env`, in its namespace."""
    from sqlifier.platform.kubernetes.api import connect  # noqa: PLC0415
    from sqlifier.platform.kubernetes.render_common import Target  # noqa: PLC0415

    target = Target.of(stack, env)
    return connect(target.namespace, target.context)


def environment_locks(stack: Stack, env: str) -> list[LockInfo]:
    """The locks held in Kubernetes environment `env` (stale ones included)."""
    with open_environment(stack, env) as cluster:
        return held_locks(cluster, stack.name, env, time.time())


def break_lock(stack: Stack, env: str, service: str, who: str, *, alive_ok: bool) -> LockInfo:
    """`sqlifier lock release S --force` on a cluster, audited in the cluster's log."""
    from sqlifier.platform.kubernetes.audit import ClusterAudit  # noqa: PLC0415

    if service not in stack.services_for(env):
        raise UserError(
            f"unknown service {service!r}; services: {', '.join(stack.services_for(env))}"
        )
    with open_environment(stack, env) as cluster:
        audit = ClusterAudit(cluster, stack.name, env)

        def record(result: str, broken: LockInfo | None) -> None:
            details = None if broken is None else _fields(broken)
            audit.record(
                who, "lock release --force", f"{env}/{service}", result,
                details=details, service=service,
            )  # fmt: skip

        return force_release(cluster, env, service, time.time(), record, alive_ok=alive_ok)


def _fields(info: LockInfo) -> dict[str, object]:
    """The record as a local force release audits it: all but `stale`."""
    fields = asdict(info)
    del fields["stale"]
    return fields

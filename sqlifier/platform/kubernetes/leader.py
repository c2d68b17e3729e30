"""Two agents, one leader: leader election with a coordination.k8s.io/v1 Lease.

Every agent of an environment runs an `Elector` on the Lease `sqlifier-leader` of the
environment's namespace. The one whose identity the Lease holds is the leader and acts;
the others watch and wait. The durations are client-go's leaderelection defaults, for
the same reasons:

    LEASE_SECONDS   15 s  a Lease not renewed for this long (after spec.renewTime) is
                          taken over by another agent
    RENEW_EVERY      5 s  how often the leader renews it while all is well
    RENEW_DEADLINE  10 s  a leader that has not renewed for this long steps down: it stops
                          acting 5 s before anyone may take its place
    RETRY            2 s  how often a follower looks, and a failed renewal is tried again

So a leader that dies is replaced within LEASE_SECONDS + RETRY (17 s) of its last renewal,
and two agents never act at once: the leader's own deadline (its last renewal + 10 s, on
its own clock) comes 5 s before the Lease expires for the others (+ 15 s). That margin is
also the clock skew the agents' machines may have between them (keep them on NTP).

Each change of holder increments spec.leaseTransitions: that number is the leader's
**term**, written on every state object it writes (state.py), so that a deposed leader's
late writes are refused (fencing). A Lease changed by hand (its holder replaced) is noticed
at the next renewal: the leader steps down at once.

`tick()` does one round (at most two API calls) and says when it wants the next; the
clock is injected, so tests drive two electors through a failover without waiting. `run()`
is the live loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.locks import (
    lease_resource,
    micro_time,
    parse_time,
    record_labels,
)

__all__ = [
    "LEADER_LEASE",
    "LEASE_SECONDS",
    "RENEW_DEADLINE",
    "RENEW_EVERY",
    "RETRY",
    "Elector",
    "NotLeader",
    "Term",
    "agent_identity",
]

LEADER_LEASE = "sqlifier-leader"
LEASE_SECONDS = 15
RENEW_EVERY = 5.0
RENEW_DEADLINE = 10.0
RETRY = 2.0


class NotLeader(UserError):
    """A write that only the leader may make, by an agent that is not (or no longer) it."""


@dataclass(frozen=True, slots=True)
class Term:
    """Who leads, and since which change of holder (spec.leaseTransitions)."""

    identity: str
    term: int


def agent_identity() -> str:
    """A name for this agent, unique among its peers: `host/pid-random` (a pod's host
    name is the pod's name)."""
    return f"{socket.gethostname()}/{os.getpid()}-{secrets.token_hex(3)}"


class Elector:
    """One agent's side of the election. `leading` says whether it may act now."""

    def __init__(
        self,
        cluster: Cluster,
        stack: str,
        env: str,
        identity: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[bool, str], None] | None = None,
        lease_seconds: int = LEASE_SECONDS,
        renew_every: float = RENEW_EVERY,
        renew_deadline: float = RENEW_DEADLINE,
        retry: float = RETRY,
        name: str = LEADER_LEASE,
    ) -> None:
        if not retry < renew_deadline < lease_seconds:
            raise ValueError("need retry < renew_deadline < lease_seconds")
        self.cluster = cluster
        self.stack = stack
        self.env = env
        self.identity = identity or agent_identity()
        self.clock = clock
        self.on_change = on_change  # (leading, why): when this agent starts or stops leading
        self.lease_seconds = lease_seconds
        self.renew_every = renew_every
        self.renew_deadline = renew_deadline
        self.retry = retry
        self.name = name
        self.holder: str | None = None  # the leader as last seen (this agent, or another)
        self._term: Term | None = None
        self._renewed = 0.0  # when this leader last renewed (its own clock, before the write)
        self._failing = False

    # --- what the rest of the agent asks ----------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this agent may act now: it holds the Lease and renewed it less than
        RENEW_DEADLINE ago (checked against the clock, not only at the last tick)."""
        return self._term is not None and self.clock() < self._renewed + self.renew_deadline

    @property
    def deadline(self) -> float | None:
        """When this leader stops acting unless it renews first; None when not leading."""
        return self._renewed + self.renew_deadline if self._term is not None else None

    def fence(self) -> Term:
        """This leader's term, for a write only the leader may make; NotLeader otherwise."""
        if self._term is None or not self.leading:
            holder = (
                f" ({self.holder} leads)" if self.holder and self.holder != self.identity else ""
            )
            raise NotLeader(f"agent {self.identity} is not the leader of {self.env}{holder}")
        return self._term

    # --- one round --------------------------------------------------------------------

    def tick(self) -> float:
        """One round of the election; the time (on the clock) it wants the next one."""
        now = self.clock()
        if self._term is not None:
            return self._as_leader(now)
        return self._as_follower(now)

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick until `stopping` is set, then resign (the other agent takes over at once)."""
        while not stopping.is_set():
            try:
                wake = await asyncio.to_thread(self.tick)
            except ClusterError:
                wake = self.clock() + self.retry  # said by the leader's step-down, if any
            wait = max(0.0, wake - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=wait)
        await asyncio.to_thread(self.resign)

    def resign(self) -> None:
        """Stop leading and hand the Lease back (holder emptied): the next agent to look
        takes it without waiting for it to expire. Nothing when not leading."""
        if self._term is None:
            return
        self._stop("resigned")
        try:
            lease = self._get()
        except ClusterError:
            return  # it expires on its own
        if lease is None or lease["spec"].get("holderIdentity") != self.identity:
            return
        lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
        try:
            self._put(lease)
        except ClusterError:
            return

    # --- leader -----------------------------------------------------------------------

    def _as_leader(self, now: float) -> float:
        assert self._term is not None
        deadline = self._renewed + self.renew_deadline
        if now >= deadline:
            self._stop(f"could not renew the Lease within {self.renew_deadline:g} s")
            return now + self.retry
        if not self._failing and now < self._renewed + self.renew_every:
            return min(self._renewed + self.renew_every, deadline)
        try:
            lease = self._get()
            if lease is None or lease["spec"].get("holderIdentity") != self.identity:
                taker = (lease or {}).get("spec", {}).get("holderIdentity") or "no one"
                self.holder = taker if lease else None
                self._stop(f"the Lease was taken by {taker}")
                return now + self.retry
            lease["spec"]["renewTime"] = micro_time(now)
            lease["spec"]["leaseDurationSeconds"] = self.lease_seconds
            self._put(lease)
        except ClusterError:
            # Unreachable, or a 409: someone wrote the Lease since; the next try reads it.
            self._failing = True
            return min(now + self.retry, deadline)
        self._failing = False
        self._renewed = now
        return now + self.renew_every

    def _stop(self, why: str) -> None:
        self._term = None
        self._failing = False
        if self.on_change is not None:
            self.on_change(False, why)

    # --- follower ---------------------------------------------------------------------

    def _as_follower(self, now: float) -> float:
        lease = self._get()
        if lease is None:
            self._create(now)
            return now + (self.renew_every if self._term else self.retry)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = parse_time(spec.get("renewTime")) or 0.0
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        self.holder = holder or None
        if holder and holder != self.identity and now < renewed + duration:
            return min(now + self.retry, renewed + duration)
        # Free, expired, or still ours from before a step-down: take it, as a new term.
        transitions = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = self._spec(now, transitions)
        try:
            self._put(lease)
        except ClusterError as e:
            if e.status != 409:
                raise
            return now + self.retry  # another agent took it first
        self._lead(now, transitions, f"took over from {holder}" if holder else "elected")
        return now + self.renew_every

    def _create(self, now: float) -> None:
        resource = lease_resource(self.cluster)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "labels": record_labels(self.stack, self.env, "leader"),
            },
            "spec": self._spec(now, 1),
        }
        try:
            self.cluster.request(
                "POST",
                resource.path(self.cluster.namespace),
                verb="create",
                what=self._what(),
                resource=resource,
                body=body,
            )
        except ClusterError as e:
            if e.status != 409:
                raise
            return  # another agent created it first
        self._lead(now, 1, "elected")

    def _lead(self, now: float, term: int, why: str) -> None:
        self._term = Term(self.identity, term)
        self._renewed = now
        self._failing = False
        self.holder = self.identity
        if self.on_change is not None:
            self.on_change(True, why)

    def _spec(self, now: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    # --- the API ----------------------------------------------------------------------

    def _get(self) -> dict[str, Any] | None:
        resource = lease_resource(self.cluster)
        try:
            lease: dict[str, Any] = self.cluster.request(
                "GET",
                resource.path(self.cluster.namespace, self.name),
                verb="get",
                what=self._what(),
                resource=resource,
            )
        except ClusterError as e:
            if e.status == 404:
                return None
            raise
        lease.setdefault("spec", {})
        return lease

    def _put(self, lease: dict[str, Any]) -> None:
        """Replace the Lease as read (its resourceVersion): 409 when written since."""
        resource = lease_resource(self.cluster)
        self.cluster.request(
            "PUT",
            resource.path(self.cluster.namespace, self.name),
            verb="update",
            what=self._what(),
            resource=resource,
            body=lease,
        )

    def _what(self) -> str:
        return f"Lease {self.cluster.namespace}/{self.name}"
